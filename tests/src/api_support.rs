//! Support for the api function's integration tests: an [`Env`] per test (stream, tables,
//! bus and the handler on them), API Gateway v2 fixtures turned into `lambda_http` requests,
//! and reading a Kinesis stream back. Provisioning is in [`crate::emulator`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ember_api::{handle, ApiConfig, Deps, FixedClock};
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::kinesis::{KinesisEventStream, RetryPolicy};
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_core::ports::BusEvent;
use ember_core::schema::Registry;
use serde_json::{json, Value};

use crate::emulator::{workspace_root, Aws, Queue};
use crate::faults::{op, Fault, FaultProxy, Rule, Schedule};

// The secrets the fixtures were signed with (test-only values).
const API_KEY_HASH: &str = "ce65173c82efaf14535ac895bdd8f13bab8fb796ab961323399cd895883c3ba8";
pub const ADMIN_KEY_HASH: &str = "3d93918ea4e80c8f76f5943661078299bd6f499a7fac9070ebaf078b3cbe64c3";
const PAYMENTS_SECRETS: &str = "whsec_rotated_in_later_000001,whsec_ember_fixture_payments_1";
const POLLS_SECRETS: &str = "ember_fixture_polls_secret_1";
const UNSUBSCRIBE_SECRETS: &str = "ember-fixture-unsubscribe-secret-1";
/// The fixtures' payments signatures carry t = 1795168800 (2026-11-20T10:00:00Z).
pub const NOW: i64 = 1_795_168_805;

/// One test's API: its own stream, tables and bus (with a queue receiving the admin API's
/// announcements), and the handler wired to them.
pub struct Env {
    pub aws: Aws,
    pub stream: String,
    pub profiles_table: String,
    pub ledger_table: String,
    /// Receives what the admin API announces on the bus (`ConfigPublished`).
    pub announcements: Queue,
    pub deps: Deps,
    /// The EMF lines the API wrote.
    pub metrics: ember_core::memory::MemoryMetrics,
}

pub fn config() -> ApiConfig {
    ApiConfig::from_lookup(|name| {
        Some(
            match name {
                "EMBER_API_KEY_HASHES" => API_KEY_HASH,
                "EMBER_ADMIN_KEY_HASHES" => ADMIN_KEY_HASH,
                "EMBER_PAYMENTS_WEBHOOK_SECRETS" => PAYMENTS_SECRETS,
                "EMBER_POLLS_WEBHOOK_SECRETS" => POLLS_SECRETS,
                "EMBER_UNSUBSCRIBE_SECRETS" => UNSUBSCRIBE_SECRETS,
                _ => return None,
            }
            .to_owned(),
        )
    })
    .expect("config")
}

pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("time")
}

/// An API whose stream writes go through the fault proxy, with `attempts` SDK attempts a
/// call and the adapter's `retry`.
pub async fn behind_proxy(attempts: u32, retry: RetryPolicy) -> (FaultProxy, Env) {
    let proxy = FaultProxy::from_env().await.expect("proxy");
    let sdk = proxy.sdk_config(attempts, Duration::from_secs(10)).await;
    let env = setup_with(Some((sdk, retry))).await;
    (proxy, env)
}

/// The first PutRecords call loses every second record (throttled, not written).
pub fn every_second_record_fails_once() -> Rule {
    let entries = Schedule::Every(2);
    Rule::new(op::KINESIS_PUT_RECORDS, Fault::PartialFailure { entries }).first(1)
}

pub async fn setup_with(stream_sdk: Option<(aws_config::SdkConfig, RetryPolicy)>) -> Env {
    let aws = Aws::from_env().await.expect("emulator");
    let stream = aws.create_stream("api-events", 2).await.expect("stream");
    let profiles_table = aws.create_profiles_table().await.expect("profiles table");
    let ledger_table = aws
        .create_table("api-ledger", "pk", Some("sk"))
        .await
        .expect("ledger table");
    let bus = aws.create_bus("api-bus").await.expect("bus");
    let announcements = aws
        .route_to_queue(&bus, &json!({"source": [BusEvent::ADMIN_SOURCE]}))
        .await
        .expect("bus -> queue");
    let event_stream = match stream_sdk {
        Some((sdk, retry)) => KinesisEventStream::from_conf(&sdk, &stream).with_retry(retry),
        None => KinesisEventStream::from_conf(&aws.config, &stream),
    };
    let metrics = ember_core::memory::MemoryMetrics::default();
    let deps = Deps {
        stream: Box::new(event_stream),
        profiles: Box::new(DynamoProfileStore::new(
            aws.dynamodb.clone(),
            &profiles_table,
        )),
        ledger: Arc::new(DynamoLedger::from_conf(&aws.config, &ledger_table)),
        bus: Box::new(EventBridgeBus::new(aws.eventbridge.clone(), &bus)),
        registry: Registry::embedded().expect("schemas"),
        config: config(),
        clock: Box::new(FixedClock(now())),
        metrics: metrics.metrics(),
    };
    Env {
        metrics,
        aws,
        stream,
        profiles_table,
        ledger_table,
        announcements,
        deps,
    }
}

pub async fn setup() -> Env {
    setup_with(None).await
}

impl Env {
    pub async fn call_payload(&self, payload: &Value) -> (u16, Value) {
        let response = handle(&self.deps, request(payload)).await;
        let status = response.status().as_u16();
        let body: &[u8] = response.body().as_ref();
        let value = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        (status, value)
    }

    pub async fn call(&self, fixture: &str) -> (u16, Value) {
        self.call_payload(&apigw_fixture(fixture)).await
    }

    /// Calls with a fixture and checks the whole answer.
    pub async fn answers(&self, fixture: &str, status: u16, body: Value) {
        assert_eq!(self.call(fixture).await, (status, body), "{fixture}");
    }

    /// Calls with a request and checks the whole answer.
    pub async fn answers_payload(&self, payload: &Value, status: u16, body: Value) {
        assert_eq!(self.call_payload(payload).await, (status, body));
    }

    pub async fn records(&self) -> Vec<(String, Value)> {
        read_stream(&self.aws.kinesis, &self.stream).await
    }

    pub fn ledger(&self) -> DynamoLedger {
        DynamoLedger::from_conf(&self.aws.config, &self.ledger_table)
    }

    pub fn profiles(&self) -> DynamoProfileStore {
        DynamoProfileStore::new(self.aws.dynamodb.clone(), &self.profiles_table)
    }
}

/// A fixture with its body replaced.
pub fn with_body(fixture: &str, body: &str) -> Value {
    let mut payload = apigw_fixture(fixture);
    payload["body"] = json!(body);
    payload["headers"]["content-length"] = json!(body.len().to_string());
    payload
}

/// The API Gateway v2 payload in `events/apigw/<name>` as JSON.
pub fn apigw_fixture(name: &str) -> Value {
    let path = workspace_root().join("events/apigw").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Turns an API Gateway v2 payload into the request `lambda_http` hands the handler (the same
/// conversion the runtime does).
pub fn request(payload: &Value) -> lambda_http::Request {
    lambda_http::request::from_str(&payload.to_string())
        .unwrap_or_else(|e| panic!("not an API Gateway payload: {e}"))
}

/// Every record on the stream, as `(partition key, JSON data)`, shard by shard.
pub async fn read_stream(client: &aws_sdk_kinesis::Client, name: &str) -> Vec<(String, Value)> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let shards = client
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .expect("list shards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator");
        let mut iterator = it.shard_iterator().map(str::to_owned);
        while let Some(i) = iterator {
            let page = client
                .get_records()
                .shard_iterator(i)
                .send()
                .await
                .expect("get records");
            if page.records().is_empty() {
                break;
            }
            for r in page.records() {
                let data: Value =
                    serde_json::from_slice(r.data().as_ref()).expect("record is JSON");
                out.push((r.partition_key().unwrap_or_default().to_owned(), data));
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    out
}

/// An admin-key request (`method` on `path_and_query`, optional JSON `body`) as API Gateway
/// delivers it.
pub fn admin_request(method: &str, path_and_query: &str, body: Option<&Value>) -> Value {
    let mut payload = apigw_fixture("profile-export.json");
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let params: serde_json::Map<String, Value> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    payload["routeKey"] = json!("$default");
    payload["rawPath"] = json!(path);
    payload["rawQueryString"] = json!(query);
    payload["queryStringParameters"] = if params.is_empty() {
        Value::Null
    } else {
        Value::Object(params)
    };
    payload["pathParameters"] = Value::Null;
    payload["requestContext"]["routeKey"] = json!("$default");
    payload["requestContext"]["http"]["method"] = json!(method);
    payload["requestContext"]["http"]["path"] = json!(path);
    if let Some(body) = body {
        let text = body.to_string();
        payload["headers"]["content-type"] = json!("application/json");
        payload["headers"]["content-length"] = json!(text.len().to_string());
        payload["body"] = json!(text);
    }
    payload
}

impl Env {
    /// An admin-key call; the status and the JSON answer.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_payload(&admin_request(method, path, body)).await
    }

    /// The admin API's announcements on the bus so far.
    pub async fn announcements(&self) -> Vec<BusEvent> {
        self.aws
            .drain_bus_events(&self.announcements.url, Duration::from_millis(400))
            .await
            .expect("read the announcements")
    }
}
