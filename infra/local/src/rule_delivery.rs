//! EventBridge rules and schedules, run in-process: each rule targets an SQS queue (see
//! `provision`); a poller delivers each event to the function with asynchronous-invocation
//! semantics (the template's `EventInvokeConfig` retries, then the on-failure destination).
//! [`scheduled_event`] builds the `Scheduled Event` payload scheduled functions get.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::activity::{back_off, Activity, IDLE_POLL};
use crate::error::sdk;
use crate::functions::JsonFn;

/// One EventBridge rule delivering to a function through its SQS target queue.
#[derive(Clone)]
pub struct RuleDelivery {
    pub name: String,
    pub function_arn: String,
    pub queue_url: String,
    pub max_retries: u32,
    pub on_failure_url: Option<String>,
    pub sqs: aws_sdk_sqs::Client,
    pub concurrency: usize,
    /// Whether deliveries count in [`Activity::rule_events`] (false for instrumentation).
    pub counted: bool,
}

pub fn start_rule(
    d: Arc<RuleDelivery>,
    invoke: JsonFn,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    activity.register(&d.name);
    tokio::spawn(async move {
        let mut idle_pause = IDLE_POLL;
        loop {
            if *stop.borrow() {
                return;
            }
            let epoch = activity.epoch();
            let out = d
                .sqs
                .receive_message()
                .queue_url(&d.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await;
            let messages = match out {
                Ok(o) => o.messages.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(poller = %d.name, error = %sdk(e), "ReceiveMessage failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                activity.idle(&d.name, epoch);
                tokio::select! {
                    _ = activity.pause(epoch, idle_pause) => {}
                    _ = stop.changed() => {}
                }
                idle_pause = back_off(idle_pause);
                continue;
            }
            idle_pause = IDLE_POLL;
            stream::iter(messages)
                .for_each_concurrent(d.concurrency.max(1), |msg| {
                    let d = d.clone();
                    let invoke = invoke.clone();
                    let activity = activity.clone();
                    async move {
                        let body = msg.body().unwrap_or("{}");
                        match serde_json::from_str::<Value>(body) {
                            Ok(event) => deliver(&d, &invoke, &activity, event).await,
                            Err(e) => tracing::error!(poller = %d.name, error = %e, "rule target message is not JSON"),
                        }
                        if let Some(h) = msg.receipt_handle() {
                            if let Err(e) = d.sqs.delete_message().queue_url(&d.queue_url).receipt_handle(h).send().await {
                                tracing::warn!(poller = %d.name, error = %sdk(e), "DeleteMessage failed");
                            }
                        }
                    }
                })
                .await;
            activity.worked();
        }
    })
}

/// Asynchronous invocation: the first try plus `max_retries` retries, then the on-failure
/// destination with Lambda's record format.
async fn deliver(d: &RuleDelivery, invoke: &JsonFn, activity: &Activity, event: Value) {
    let detail_type = event
        .get("detail-type")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    if d.counted {
        Activity::add(&activity.rule_events, 1);
        if let Ok(mut by) = activity.rule_events_by_type.lock() {
            *by.entry(detail_type.clone()).or_insert(0) += 1;
        }
    }
    let started = Instant::now();
    let mut last_error = String::new();
    for attempt in 0..=d.max_retries {
        match invoke(event.clone()).await {
            Ok(_) => {
                if d.counted {
                    // A cart change carries no cause: its profile's latest post is the
                    // cause. A segment change without a cause came from the scheduled
                    // re-evaluation (time passing, not an ingest) and is not a sample.
                    let cause = event
                        .pointer("/detail/cause_event_id")
                        .and_then(Value::as_str);
                    let profile = (detail_type == "CartUpdated")
                        .then(|| event.pointer("/detail/profile_id").and_then(Value::as_str))
                        .flatten();
                    activity.record_latency(cause, profile);
                }
                tracing::debug!(poller = %d.name, detail_type, ms = started.elapsed().as_millis() as u64, "delivered");
                return;
            }
            Err(e) => {
                Activity::add(&activity.handler_errors, 1);
                tracing::warn!(poller = %d.name, attempt, error = %e, "invocation failed");
                last_error = e;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
        }
    }
    Activity::add(&activity.async_failures, 1);
    let record = json!({
        "version": "1.0",
        "timestamp": Utc::now().to_rfc3339(),
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": d.function_arn,
            "condition": "RetriesExhausted",
            "approximateInvokeCount": d.max_retries + 1,
        },
        "requestPayload": event,
        "responseContext": { "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" },
        "responsePayload": { "errorMessage": last_error },
    });
    if let Some(url) = &d.on_failure_url {
        if let Err(e) = d
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(record.to_string())
            .send()
            .await
        {
            tracing::error!(poller = %d.name, error = %sdk(e), "could not send to the on-failure destination");
        }
    }
}

/// The EventBridge `Scheduled Event` a schedule rule delivers at `time`.
pub fn scheduled_event(rule_arn: &str, account: &str, region: &str, time: DateTime<Utc>) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": region,
        "resources": [rule_arn],
        "detail": {}
    })
}
