//! Starts the whole pipeline as the template wires it: provisions the resources, builds every
//! function's handler from its template environment, serves the HTTP API routes, polls the
//! Kinesis stream and the EventBridge rule targets, and fires the schedules on the run's
//! clock. Also puts an observer rule on the custom bus (all of `ember.enrich`'s events to an
//! SQS queue) so a run can report every segment transition.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::activity::Activity;
use crate::archive_delivery;
use crate::clock::SimClock;
use crate::error::LocalError;
use crate::functions::{self, Handler, HttpFn, JsonFn};
use crate::http::{self, Route};
use crate::kinesis_mapping::{self, KinesisMapping};
use crate::provision::{address_of, Stack};
use crate::rule_delivery::{self, RuleDelivery};
use crate::template::{self, Context, EventSource, KinesisSource, Template};
use ember_core::memory::MemoryMetrics;

/// How to start a local pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub template: PathBuf,
    /// `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// The `Stage` parameter; a fresh unique one when `None` (names are unique per run).
    pub stage: Option<String>,
    /// The API key clients present (its SHA-256 goes into `ApiKeyHashes`).
    pub api_key: String,
    pub admin_key: String,
    /// Base delay between retries of a failed Kinesis batch.
    pub retry_delay: Duration,
    /// Concurrent invocations per EventBridge rule.
    pub rule_concurrency: usize,
    /// Template parameter values that replace the run's defaults (like SAM's
    /// `--parameter-overrides`), e.g. fixture secrets for `cargo lambda invoke`.
    pub parameters: BTreeMap<String, String>,
    /// Where the functions' metric lines go: kept here for a run's report, or (`None`) to
    /// stdout as in Lambda.
    pub metrics: Option<MemoryMetrics>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            template: PathBuf::from("template.yaml"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            stage: None,
            api_key: "local-demo-key".into(),
            admin_key: "local-admin-key".into(),
            retry_delay: Duration::from_millis(50),
            rule_concurrency: 8,
            parameters: BTreeMap::new(),
            metrics: None,
        }
    }
}

struct Schedule {
    function: String,
    rule_arn: String,
    every: Option<u64>,
    invoke: JsonFn,
    /// When it last fired (simulated time): a schedule fires again once its rate has passed.
    last: std::sync::Mutex<Option<DateTime<Utc>>>,
}

/// A running local pipeline.
pub struct Pipeline {
    pub stack: Stack,
    pub addr: SocketAddr,
    pub activity: Arc<Activity>,
    pub clock: Arc<SimClock>,
    /// The sender address emails go out from (unique per run).
    pub sender: String,
    pub api_key: String,
    pub admin_key: String,
    /// Every event seen on the custom bus, in arrival order.
    pub bus_events: Arc<Mutex<Vec<Value>>>,
    /// The functions' metric lines, when the options collect them.
    pub metrics: Option<MemoryMetrics>,
    schedules: Vec<Schedule>,
    observer: Option<(String, String, String)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Pipeline {
    pub async fn start(
        opts: &PipelineOptions,
        sdk_config: &SdkConfig,
        clock: Arc<SimClock>,
    ) -> Result<Pipeline, LocalError> {
        let template = Template::load(&opts.template)?;
        let stage = opts
            .stage
            .clone()
            .unwrap_or_else(|| format!("l{}", &run_id()[..8]));
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| LocalError::pipeline("http bind", format!("{}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LocalError::pipeline("http bind", e))?;
        let sender = format!("ember-{stage}@ember.example");
        let secret = |_: &str| format!("{}{}", run_id(), run_id());
        let mut overrides = BTreeMap::new();
        overrides.insert("Stage".to_owned(), stage.clone());
        overrides.insert(
            "SenderAddress".to_owned(),
            format!("Ember Hot Sauce <{sender}>"),
        );
        overrides.insert("SenderIdentity".to_owned(), "ember.example".to_owned());
        overrides.insert("PublicBaseUrl".to_owned(), format!("http://{addr}"));
        overrides.insert(
            "ApiKeyHashes".to_owned(),
            ember_api::auth::KeyHashes::hash_key(&opts.api_key),
        );
        overrides.insert(
            "AdminKeyHashes".to_owned(),
            ember_api::auth::KeyHashes::hash_key(&opts.admin_key),
        );
        overrides.insert("PaymentsWebhookSecrets".to_owned(), secret("payments"));
        overrides.insert("PollsWebhookSecrets".to_owned(), secret("polls"));
        overrides.insert("UnsubscribeSecrets".to_owned(), secret("unsubscribe"));
        overrides.extend(opts.parameters.clone());
        let parameters = template.parameter_values(&overrides)?;
        let region = sdk_config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let ctx = Context {
            parameters,
            conditions: template.conditions.clone(),
            region: region.clone(),
            account_id: "000000000000".into(),
            stack_name: format!("ember-{stage}"),
        };
        let mut stack = Stack::provision(template, ctx, sdk_config).await?;
        // The emulator's account id, from any ARN it returned.
        if let Some(account) = stack
            .physical
            .values()
            .filter_map(|p| p.arn.as_deref())
            .find_map(|arn| {
                arn.split(':')
                    .nth(4)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
            })
        {
            stack.ctx.account_id = account;
        }

        let activity = Arc::new(Activity::default());
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut routes: Vec<(Route, HttpFn)> = Vec::new();
        let mut schedules = Vec::new();
        let functions = stack.functions.clone();
        for f in &functions {
            let env = stack.environment(f)?;
            let handler = functions::build(
                &f.binary,
                &env,
                sdk_config,
                clock.clone(),
                opts.metrics.as_ref(),
            )
            .await?;
            let function_name = stack
                .template
                .resource(&f.logical_id)
                .ok()
                .and_then(|r| r.properties.get("FunctionName").cloned())
                .map(|n| template::resolve_string(&n, &stack.ctx, &stack))
                .transpose()?
                .unwrap_or_else(|| f.logical_id.clone());
            let function_arn = format!(
                "arn:aws:lambda:{region}:{}:function:{function_name}",
                stack.ctx.account_id
            );
            let async_on_failure = f
                .async_on_failure
                .as_ref()
                .map(|d| stack.queue_url_for(d))
                .transpose()?;
            for ev in &f.events {
                match (ev, &handler) {
                    (EventSource::HttpApi { method, path, .. }, Handler::Http(h)) => {
                        routes.push((
                            Route {
                                method: method.clone(),
                                path: path.clone(),
                            },
                            h.clone(),
                        ));
                    }
                    (EventSource::Kinesis(k), Handler::Json(h)) => {
                        let stream_name = stack.stream_name_for(&k.stream)?;
                        let stream_arn = template::resolve_string(&k.stream, &stack.ctx, &stack)?;
                        let on_failure_url = k
                            .on_failure
                            .as_ref()
                            .map(|d| stack.queue_url_for(d))
                            .transpose()?;
                        let mapping = Arc::new(KinesisMapping {
                            function: f.logical_id.clone(),
                            function_arn: function_arn.clone(),
                            stream_name,
                            stream_arn,
                            source: {
                                let mut source = k.clone();
                                source.resolve_limits(&stack.ctx, &stack)?;
                                source
                            },
                            on_failure_url,
                            region: region.clone(),
                            kinesis: stack.clients.kinesis.clone(),
                            sqs: stack.clients.sqs.clone(),
                            retry_delay: opts.retry_delay,
                            counted: true,
                        });
                        tasks.extend(
                            kinesis_mapping::start_kinesis(
                                mapping,
                                h.clone(),
                                activity.clone(),
                                stop_rx.clone(),
                            )
                            .await?,
                        );
                    }
                    (EventSource::EventBridgeRule { name, .. }, Handler::Json(h)) => {
                        let binding = stack
                            .rules
                            .iter()
                            .find(|r| r.function == f.logical_id && &r.event == name)
                            .cloned()
                            .ok_or_else(|| {
                                LocalError::pipeline(
                                    "rules",
                                    format!("no rule bound for {}.{name}", f.logical_id),
                                )
                            })?;
                        let delivery = Arc::new(RuleDelivery {
                            name: format!("rule:{}:{name}", f.logical_id),
                            function_arn: function_arn.clone(),
                            queue_url: binding.queue_url,
                            max_retries: f.async_max_retries,
                            on_failure_url: async_on_failure.clone(),
                            sqs: stack.clients.sqs.clone(),
                            concurrency: opts.rule_concurrency,
                            counted: true,
                        });
                        tasks.push(rule_delivery::start_rule(
                            delivery,
                            h.clone(),
                            activity.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    (EventSource::Schedule { name, expression }, Handler::Json(h)) => {
                        schedules.push(Schedule {
                            function: f.logical_id.clone(),
                            rule_arn: format!(
                                "arn:aws:events:{region}:{}:rule/{}-{name}",
                                stack.ctx.account_id, f.logical_id
                            ),
                            every: template::rate_seconds(expression),
                            invoke: h.clone(),
                            last: std::sync::Mutex::new(None),
                        });
                    }
                    (ev, _) => {
                        return Err(LocalError::Template(format!(
                            "function {} ({}): event {ev:?} does not fit its handler kind",
                            f.logical_id, f.binary
                        )))
                    }
                }
            }
        }
        // Firehose's deliveries from the stream to the archive, as Firehose runs them.
        for d in archive_delivery::deliveries(&stack.template) {
            let name = stack.name_of(&d.logical_id)?;
            let bucket_arn = template::resolve_string(&d.bucket, &stack.ctx, &stack)?;
            let bucket = bucket_arn.trim_start_matches("arn:aws:s3:::").to_owned();
            let archive = ember_aws::archive::Archive::from_conf(sdk_config, bucket);
            let mapping = Arc::new(KinesisMapping {
                function: d.logical_id.clone(),
                function_arn: format!(
                    "arn:aws:firehose:{region}:{}:deliverystream/{name}",
                    stack.ctx.account_id
                ),
                stream_name: stack.stream_name_for(&d.stream)?,
                stream_arn: template::resolve_string(&d.stream, &stack.ctx, &stack)?,
                source: KinesisSource::firehose(&d.logical_id),
                on_failure_url: None,
                region: region.clone(),
                kinesis: stack.clients.kinesis.clone(),
                sqs: stack.clients.sqs.clone(),
                retry_delay: opts.retry_delay,
                counted: false,
            });
            let handler = archive_delivery::handler(archive, name, d.prefix.clone());
            tasks.extend(
                kinesis_mapping::start_kinesis(mapping, handler, activity.clone(), stop_rx.clone())
                    .await?,
            );
        }
        let routes = Arc::new(routes);
        let srv_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = http::serve(listener, routes, srv_stop).await {
                tracing::error!(error = %e, "http server stopped");
            }
        }));

        let bus_events = Arc::new(Mutex::new(Vec::new()));
        let mut pipeline = Pipeline {
            stack,
            addr,
            activity,
            clock,
            sender,
            api_key: opts.api_key.clone(),
            admin_key: opts.admin_key.clone(),
            bus_events,
            metrics: opts.metrics.clone(),
            schedules,
            observer: None,
            stop,
            tasks,
        };
        pipeline.observe_bus(stop_rx).await?;
        Ok(pipeline)
    }

    /// A rule matching everything `ember.enrich` publishes on each custom bus, delivering to
    /// an SQS queue whose events are kept in [`Pipeline::bus_events`].
    async fn observe_bus(&mut self, stop: watch::Receiver<bool>) -> Result<(), LocalError> {
        let Some(bus) = self
            .stack
            .physical_of_kind("AWS::Events::EventBus")
            .map(|(_, p)| p.name.clone())
            .next()
        else {
            return Ok(());
        };
        let c = &self.stack.clients;
        let rule = format!("{bus}-observer");
        let queue = self
            .stack
            .rule_to_new_queue(
                &bus,
                &rule,
                r#"{"source":["ember.enrich"]}"#,
                &rule,
                "observer",
            )
            .await?;
        let url = queue.url.unwrap_or_default();
        let sink = self.bus_events.clone();
        let record: JsonFn = Arc::new(move |event| {
            let sink = sink.clone();
            Box::pin(async move {
                if let Ok(mut v) = sink.lock() {
                    v.push(event);
                }
                Ok(Value::Null)
            })
        });
        let delivery = Arc::new(RuleDelivery {
            name: "observer".into(),
            function_arn: String::new(),
            queue_url: url.clone(),
            max_retries: 0,
            on_failure_url: None,
            sqs: c.sqs.clone(),
            concurrency: 1,
            // Instrumentation: kept out of the rule counters.
            counted: false,
        });
        let handle = rule_delivery::start_rule(delivery, record, self.activity.clone(), stop);
        self.tasks.push(handle);
        self.observer = Some((rule, bus, url));
        Ok(())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shortest schedule period the template declares (seconds), if any.
    pub fn schedule_period(&self) -> Option<u64> {
        self.schedules.iter().filter_map(|s| s.every).min()
    }

    /// Invokes every scheduled function that is due at `at`, as its rule would: a `rate(...)`
    /// schedule fires on the first tick and then once its rate has passed since it last fired
    /// (an hourly re-evaluation does not run on every one-minute sweeper tick); other
    /// expressions fire on every tick.
    pub async fn fire_schedules(&self, at: DateTime<Utc>) -> Result<(), LocalError> {
        for s in &self.schedules {
            let due = {
                let mut last = s.last.lock().unwrap_or_else(|e| e.into_inner());
                let due = match (*last, s.every) {
                    (Some(prev), Some(every)) => {
                        at - prev >= chrono::Duration::seconds(every.min(i64::MAX as u64) as i64)
                    }
                    _ => true,
                };
                if due {
                    *last = Some(at);
                }
                due
            };
            if !due {
                continue;
            }
            if let Err(e) = self.invoke_schedule(s, at).await {
                Activity::add(&self.activity.handler_errors, 1);
                tracing::warn!(function = %s.function, error = %e, "scheduled invocation failed");
            }
        }
        Ok(())
    }

    /// Invokes the scheduled function `logical_id` at `at` now, whatever its rate says, and
    /// returns its response.
    pub async fn run_schedule(
        &self,
        logical_id: &str,
        at: DateTime<Utc>,
    ) -> Result<serde_json::Value, LocalError> {
        let s = self
            .schedules
            .iter()
            .find(|s| s.function == logical_id)
            .ok_or_else(|| {
                LocalError::Template(format!("{logical_id} is not a scheduled function"))
            })?;
        self.invoke_schedule(s, at)
            .await
            .map_err(|reason| LocalError::Pipeline {
                stage: "schedule",
                reason: format!("{logical_id}: {reason}"),
            })
    }

    async fn invoke_schedule(
        &self,
        s: &Schedule,
        at: DateTime<Utc>,
    ) -> Result<serde_json::Value, String> {
        let event = rule_delivery::scheduled_event(
            &s.rule_arn,
            &self.stack.ctx.account_id,
            &self.stack.ctx.region,
            at,
        );
        if let Ok(mut runs) = self.activity.scheduled_runs.lock() {
            *runs.entry(s.function.clone()).or_insert(0) += 1;
        }
        (s.invoke)(event).await
    }

    /// Waits until every poller has gone a full round without work.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.activity.drain(timeout).await
    }

    /// Physical name of a resource by logical id (e.g. `ProfilesTable`).
    pub fn name_of(&self, logical_id: &str) -> Option<String> {
        self.stack.physical.get(logical_id).map(|p| p.name.clone())
    }

    /// The archive bucket the template's delivery stream writes to, if it has one.
    pub fn archive(&self) -> Option<ember_aws::archive::Archive> {
        let (_, bucket) = self.stack.physical_of_kind("AWS::S3::Bucket").next()?;
        Some(ember_aws::archive::Archive::new(
            self.stack.clients.s3.clone(),
            bucket.name.clone(),
        ))
    }

    pub fn queue_url_of(&self, logical_id: &str) -> Option<String> {
        self.stack
            .physical
            .get(logical_id)
            .and_then(|p| p.url.clone())
    }

    /// Writes `KEY=VALUE` lines: every function's resolved environment (the names agree across
    /// functions) plus the emulator's `AWS_*` variables, for `cargo lambda watch --env-file`.
    pub fn write_env_file(&self, path: &std::path::Path) -> Result<(), LocalError> {
        let mut vars = BTreeMap::new();
        for f in &self.stack.functions {
            vars.extend(self.stack.environment(f)?);
        }
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            if let Ok(v) = std::env::var(k) {
                vars.insert(k.to_owned(), v);
            }
        }
        let quote = |v: &str| {
            if v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:@,+=".contains(c))
            {
                v.to_owned()
            } else {
                format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
            }
        };
        let text: String = vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", quote(v)))
            .collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| LocalError::io(format!("creating {}", dir.display()), e))?;
        }
        std::fs::write(path, text)
            .map_err(|e| LocalError::io(format!("writing {}", path.display()), e))
    }

    /// Sender address (without display name).
    pub fn sender_address(&self) -> &str {
        address_of(&self.sender)
    }

    /// Stops the pollers and the server; deletes the run's resources when `teardown`.
    pub async fn stop(self, teardown: bool) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if teardown {
            if let Some((rule, bus, url)) = &self.observer {
                let c = &self.stack.clients;
                let _ = c
                    .events
                    .remove_targets()
                    .rule(rule)
                    .event_bus_name(bus)
                    .ids("observer")
                    .send()
                    .await;
                let _ = c
                    .events
                    .delete_rule()
                    .name(rule)
                    .event_bus_name(bus)
                    .send()
                    .await;
                let _ = c.sqs.delete_queue().queue_url(url).send().await;
            }
            self.stack.teardown().await;
        }
    }
}
