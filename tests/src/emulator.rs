//! Shared provisioning for tests against the emulator (moto by default, or whatever
//! `AWS_ENDPOINT_URL` points at): environment, unique names, and helpers that create a
//! DynamoDB table, Kinesis stream, SQS queue, EventBridge bus with a rule routing to a queue,
//! read queue messages back and read DynamoDB items.
//!
//! Every resource gets a unique name (uuid suffix): the emulator is shared by parallel tests
//! and must never be reset.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::retry::Backoff;
use ember_aws::sqs::SqsDeadLetterSink;
use ember_core::fold::FoldConfig;
use ember_core::ports::BusEvent;
use ember_enrich::Enricher;
use serde_json::{json, Value};

/// Test-support failure, with the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct SetupError {
    pub step: String,
    pub reason: String,
}

pub type SetupResult<T> = Result<T, SetupError>;

pub(crate) fn err(step: impl Into<String>, e: impl std::fmt::Display) -> SetupError {
    SetupError {
        step: step.into(),
        reason: e.to_string(),
    }
}

fn sdk_err<E>(step: &str, e: aws_sdk_dynamodb::error::SdkError<E>) -> SetupError
where
    E: std::error::Error + 'static,
{
    err(step, aws_sdk_dynamodb::error::DisplayErrorContext(e))
}

static LOAD_ENV: Once = Once::new();

/// The workspace root (parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Makes sure the emulator's variables are set: if `AWS_ENDPOINT_URL` is not in the
/// environment, reads `.emulator/env` (written by `infra/emulator.sh start`) from the
/// workspace root. Returns whether an endpoint is configured.
pub fn load_env() -> bool {
    LOAD_ENV.call_once(|| {
        if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
            return;
        }
        let Ok(text) = std::fs::read_to_string(workspace_root().join(".emulator/env")) else {
            return;
        };
        for line in text.lines() {
            let line = line.trim().trim_start_matches("export ").trim();
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('"').trim_matches('\'');
                if std::env::var_os(k.trim()).is_none() {
                    // Tests run on one thread here before any client reads the variables.
                    std::env::set_var(k.trim(), v);
                }
            }
        }
    });
    std::env::var_os("AWS_ENDPOINT_URL").is_some()
}

/// A second moto server on loopback (from the venv `infra/emulator.sh start` installs), for
/// configurations that split services across emulators. Stopped when dropped.
pub struct SecondMoto {
    pub url: String,
    child: std::process::Child,
}

impl SecondMoto {
    pub async fn start() -> SetupResult<SecondMoto> {
        // Started as `infra/emulator.sh` starts the first one (see `infra/moto_server.py`).
        let python = workspace_root().join(".venv-emulator/bin/python");
        let launcher = workspace_root().join("infra/moto_server.py");
        if !python.exists() {
            return Err(err(
                "second emulator",
                "moto is not installed: run `bash infra/emulator.sh start` once",
            ));
        }
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| err("second emulator port", e))?
            .port();
        let child = std::process::Command::new(python)
            .arg(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| err("second emulator", e))?;
        let moto = SecondMoto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ember_local::mail::http_get(&format!("{}/moto-api/", moto.url))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(err(
                    "second emulator",
                    format!("nothing answers at {}", moto.url),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(moto)
    }
}

impl Drop for SecondMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique resource name: `<prefix>-<32 hex>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Clients for every service the tests provision, built from one `SdkConfig`.
#[derive(Clone, Debug)]
pub struct Aws {
    pub config: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub kinesis: aws_sdk_kinesis::Client,
}

impl Aws {
    /// Loads the emulator environment and builds the clients the way the functions do.
    pub async fn from_env() -> SetupResult<Aws> {
        if !load_env() {
            return Err(err(
                "environment",
                "AWS_ENDPOINT_URL is not set and .emulator/env is missing: run `bash infra/emulator.sh start`",
            ));
        }
        Ok(Aws::from_config(ember_aws::sdk_config().await))
    }

    pub fn from_config(config: SdkConfig) -> Aws {
        Aws {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            eventbridge: aws_sdk_eventbridge::Client::new(&config),
            kinesis: aws_sdk_kinesis::Client::new(&config),
            config,
        }
    }

    /// Creates an on-demand table with a string partition key `pk` (and string sort key `sk`).
    pub async fn create_table(
        &self,
        prefix: &str,
        pk: &str,
        sk: Option<&str>,
    ) -> SetupResult<String> {
        let name = unique(prefix);
        let mut req = self
            .dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for (attr, kind) in
            std::iter::once((pk, KeyType::Hash)).chain(sk.map(|s| (s, KeyType::Range)))
        {
            req = req
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(attr)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| err("create_table", e))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(kind)
                        .build()
                        .map_err(|e| err("create_table", e))?,
                );
        }
        req.send().await.map_err(|e| sdk_err("create_table", e))?;
        Ok(name)
    }

    /// The profiles table: partition key `id`.
    pub async fn create_profiles_table(&self) -> SetupResult<String> {
        self.create_table("profiles", "id", None).await
    }

    /// The ledger table (send claims, caps, timers, event-id claims): keys `pk` and `sk`.
    pub async fn create_ledger_table(&self) -> SetupResult<String> {
        self.create_table("ledger", "pk", Some("sk")).await
    }

    /// Reads one item by its string partition key (consistent read).
    pub async fn get_item(
        &self,
        table: &str,
        pk: &str,
        id: &str,
    ) -> SetupResult<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(table)
            .key(pk, AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("get_item", e))?;
        Ok(out.item)
    }

    /// Reads a profile item back as the domain type.
    pub async fn get_profile(
        &self,
        table: &str,
        id: &str,
    ) -> SetupResult<Option<ember_core::profile::Profile>> {
        match self.get_item(table, "id", id).await? {
            None => Ok(None),
            Some(item) => ember_aws::profiles::from_item(item)
                .map(Some)
                .map_err(|e| err("decode profile", e)),
        }
    }

    /// Every profile of `table`, by id (a consistent scan).
    pub async fn all_profiles(
        &self,
        table: &str,
    ) -> std::collections::BTreeMap<String, ember_core::profile::Profile> {
        let mut out = std::collections::BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan profiles");
            for item in page.items.unwrap_or_default() {
                let p = ember_aws::profiles::from_item(item).expect("stored profile decodes");
                out.insert(p.id.clone(), p);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return out;
            }
        }
    }

    /// Reads a profile that must exist (panics with its id otherwise: a test's assertion).
    pub async fn profile(&self, table: &str, id: &str) -> ember_core::profile::Profile {
        self.get_profile(table, id)
            .await
            .expect("get profile")
            .unwrap_or_else(|| panic!("no profile {id}"))
    }

    /// Stores an item under profile `id` that no longer decodes as a profile (its version
    /// is not a number): a poison item no reader may be blocked by.
    pub async fn put_undecodable_profile(&self, table: &str, id: &str) {
        self.dynamodb
            .put_item()
            .table_name(table)
            .item("id", AttributeValue::S(id.into()))
            .item("version", AttributeValue::S("not a number".into()))
            .send()
            .await
            .expect("poison item");
    }

    /// Creates a Kinesis stream and waits until it is active.
    pub async fn create_stream(&self, prefix: &str, shards: i32) -> SetupResult<String> {
        let name = unique(prefix);
        self.kinesis
            .create_stream()
            .stream_name(&name)
            .shard_count(shards)
            .send()
            .await
            .map_err(|e| sdk_err("create_stream", e))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .kinesis
                .describe_stream_summary()
                .stream_name(&name)
                .send()
                .await
                .map_err(|e| sdk_err("describe_stream_summary", e))?;
            let active = out.stream_description_summary().is_some_and(|s| {
                s.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active
            });
            if active {
                return Ok(name);
            }
            if Instant::now() > deadline {
                return Err(err(
                    "create_stream",
                    format!("{name} not active after 30 s"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a queue; returns its URL and ARN.
    pub async fn create_queue(&self, prefix: &str) -> SetupResult<Queue> {
        let name = unique(prefix);
        let out = self
            .sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| sdk_err("create_queue", e))?;
        let url = out
            .queue_url()
            .ok_or_else(|| err("create_queue", "no queue URL"))?
            .to_owned();
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_err("get_queue_attributes", e))?;
        let arn = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .ok_or_else(|| err("get_queue_attributes", "no QueueArn"))?
            .to_owned();
        Ok(Queue { name, url, arn })
    }

    /// Creates a custom event bus.
    pub async fn create_bus(&self, prefix: &str) -> SetupResult<String> {
        let name = unique(prefix);
        self.create_bus_named(&name).await?;
        Ok(name)
    }

    pub async fn create_bus_named(&self, name: &str) -> SetupResult<()> {
        self.eventbridge
            .create_event_bus()
            .name(name)
            .send()
            .await
            .map_err(|e| sdk_err("create_event_bus", e))?;
        Ok(())
    }

    /// Creates a rule on `bus` with `pattern` and a new SQS queue as its target; returns the
    /// queue (read it with [`Aws::drain`]). The queue policy allows EventBridge to send.
    pub async fn route_to_queue(&self, bus: &str, pattern: &Value) -> SetupResult<Queue> {
        let queue = self.create_queue("bus-target").await?;
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                           "Action": "sqs:SendMessage", "Resource": queue.arn}]
        });
        self.sqs
            .set_queue_attributes()
            .queue_url(&queue.url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .map_err(|e| sdk_err("set_queue_attributes", e))?;
        let rule = unique("rule");
        self.eventbridge
            .put_rule()
            .name(&rule)
            .event_bus_name(bus)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .map_err(|e| sdk_err("put_rule", e))?;
        self.eventbridge
            .put_targets()
            .rule(&rule)
            .event_bus_name(bus)
            .targets(
                Target::builder()
                    .id("queue")
                    .arn(&queue.arn)
                    .build()
                    .map_err(|e| err("put_targets", e))?,
            )
            .send()
            .await
            .map_err(|e| sdk_err("put_targets", e))?;
        Ok(queue)
    }

    /// Receives and deletes every message currently in the queue: polls until a poll returns
    /// nothing after `quiet` has passed since the last message. Returns the bodies in arrival
    /// order.
    pub async fn drain(&self, queue_url: &str, quiet: Duration) -> SetupResult<Vec<String>> {
        let mut bodies = Vec::new();
        let mut last = Instant::now();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| sdk_err("receive_message", e))?;
            let messages = out.messages();
            if messages.is_empty() {
                if last.elapsed() >= quiet {
                    return Ok(bodies);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            last = Instant::now();
            for m in messages {
                bodies.push(m.body().unwrap_or_default().to_owned());
                if let Some(handle) = m.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .map_err(|e| sdk_err("delete_message", e))?;
                }
            }
        }
    }

    /// Drains a queue that a bus rule targets and decodes the Ember bus events in it.
    pub async fn drain_bus_events(
        &self,
        queue_url: &str,
        quiet: Duration,
    ) -> SetupResult<Vec<BusEvent>> {
        self.drain(queue_url, quiet)
            .await?
            .iter()
            .map(|b| bus_event_from_sqs_body(b))
            .collect()
    }
}

/// The ports an enrich handler (or the naive baseline) runs on, on these resources.
pub fn adapters(
    aws: &Aws,
    profiles: &str,
    ledger: &str,
    bus: &str,
    dlq_url: &str,
) -> (
    DynamoProfileStore,
    DynamoLedger,
    EventBridgeBus,
    SqsDeadLetterSink,
) {
    (
        DynamoProfileStore::new(aws.dynamodb.clone(), profiles).with_report_table(ledger),
        DynamoLedger::new(aws.dynamodb.clone(), ledger),
        EventBridgeBus::new(aws.eventbridge.clone(), bus),
        SqsDeadLetterSink::new(aws.sqs.clone(), dlq_url),
    )
}

/// The enrich handler on the DynamoDB, EventBridge and SQS adapters.
pub type DynamoEnricher =
    Enricher<DynamoProfileStore, DynamoLedger, EventBridgeBus, SqsDeadLetterSink>;

/// What the enrich and re-evaluation tests share: a profiles table, a ledger table (event-id
/// claims), a custom bus, and a rule routing Ember's events on that bus to an SQS queue.
pub struct ProfilesAndBus {
    pub aws: Aws,
    pub table: String,
    pub ledger: String,
    pub bus: String,
    pub events: Queue,
}

impl ProfilesAndBus {
    pub async fn new() -> SetupResult<ProfilesAndBus> {
        ProfilesAndBus::on(Aws::from_env().await?).await
    }

    /// The same resources through `aws` (for example clients behind the fault proxy).
    pub async fn on(aws: Aws) -> SetupResult<ProfilesAndBus> {
        let table = aws.create_profiles_table().await?;
        let ledger = aws.create_ledger_table().await?;
        let bus = aws.create_bus("ember-bus").await?;
        let events = aws.route_to_queue(&bus, &ember_pattern()).await?;
        Ok(ProfilesAndBus {
            aws,
            table,
            ledger,
            bus,
            events,
        })
    }

    /// An enrich handler on these resources that dead-letters to `dlq_url`, with `backoff`
    /// for the bus and the queue (tests under faults want quick retries).
    pub fn enricher(&self, dlq_url: &str, backoff: Backoff) -> DynamoEnricher {
        let (store, ledger, bus, dlq) =
            adapters(&self.aws, &self.table, &self.ledger, &self.bus, dlq_url);
        Enricher::new(
            store,
            ledger,
            bus.with_backoff(backoff),
            dlq.with_backoff(backoff),
            FoldConfig::default(),
        )
        .expect("the default fold configuration is valid")
    }

    /// The stored profile `id` (panics when absent: a test expects it).
    pub async fn profile(&self, id: &str) -> ember_core::profile::Profile {
        self.aws.profile(&self.table, id).await
    }

    /// Every Ember event the bus delivered, once the queue stays empty for `quiet`.
    pub async fn bus_events(&self, quiet: Duration) -> Vec<BusEvent> {
        self.aws
            .drain_bus_events(&self.events.url, quiet)
            .await
            .expect("read bus queue")
    }
}

/// An SQS queue created for a test.
#[derive(Clone, Debug)]
pub struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// Decodes an EventBridge event delivered to SQS (`detail-type` + `detail`) to a [`BusEvent`].
pub fn bus_event_from_sqs_body(body: &str) -> SetupResult<BusEvent> {
    let v: Value = serde_json::from_str(body).map_err(|e| err("bus event JSON", e))?;
    let detail_type = v
        .get("detail-type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let detail = v.get("detail").cloned().unwrap_or(Value::Null);
    BusEvent::from_parts(detail_type, detail)
        .ok_or_else(|| err("bus event", format!("not an Ember bus event: {body}")))
}

/// An event pattern matching everything Ember's enrich function publishes.
pub fn ember_pattern() -> Value {
    json!({ "source": [BusEvent::SOURCE] })
}

/// Customer `u-<i>` entering `segment` (cause event `e-<i>`), as enrich publishes it.
pub fn segment_entered(i: usize, segment: &str) -> BusEvent {
    BusEvent::SegmentEntered(ember_core::ports::SegmentChange {
        id: format!("u-{i}:{segment}:entered:1"),
        profile_id: format!("u-{i}"),
        segment: segment.into(),
        at: chrono::Utc::now(),
        profile_version: 1,
        cause_event_id: Some(format!("e-{i}")),
        config_version: 0,
        backfill: false,
        ingested_at: None,
        trace: None,
    })
}

/// Reads a Kinesis event fixture from `events/kinesis/<name>`.
pub fn kinesis_fixture(name: &str) -> SetupResult<KinesisEvent> {
    let path = workspace_root().join("events/kinesis").join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| err(format!("read fixture {name}"), e))?;
    serde_json::from_str(&text).map_err(|e| err(format!("parse fixture {name}"), e))
}

/// Builds a Kinesis event as Lambda delivers it (the benches' builder, shared).
pub use ember_benches::workload::kinesis_event;

/// Sequence numbers of the failed records in a Kinesis batch response.
pub fn failed_sequence_numbers(
    response: &aws_lambda_events::event::streams::KinesisEventResponse,
) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect()
}
