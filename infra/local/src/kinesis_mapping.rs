//! Lambda's Kinesis event source mapping, run in-process: one poller per shard reads with
//! `GetShardIterator`/`GetRecords`, invokes the function with batches of at most the
//! template's `BatchSize`, and honours `ReportBatchItemFailures` (checkpoint before the first
//! failed sequence number and retry from there), `BisectBatchOnFunctionError` (split a
//! failing batch in two and retry each half), `MaximumRetryAttempts`,
//! `MaximumRecordAgeInSeconds`, and sends exhausted batches' metadata to the `OnFailure`
//! queue in Lambda's format.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::activity::{back_off, Activity, IDLE_POLL};
use crate::error::{sdk, LocalError};
use crate::functions::JsonFn;
use crate::template::KinesisSource;

/// One Kinesis event source mapping, resolved against the provisioned stack.
#[derive(Clone)]
pub struct KinesisMapping {
    pub function: String,
    pub function_arn: String,
    pub stream_name: String,
    pub stream_arn: String,
    pub source: KinesisSource,
    pub on_failure_url: Option<String>,
    pub region: String,
    pub kinesis: aws_sdk_kinesis::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Base delay between retries of a failed batch (doubled per attempt, capped at 1 s).
    pub retry_delay: Duration,
    /// Whether its records and batches count in the run's stream figures: a function's
    /// mapping does; Firehose's archive delivery (another reader of the same records) not.
    pub counted: bool,
}

/// Starts one poller per shard; returns their join handles.
pub async fn start_kinesis(
    mapping: Arc<KinesisMapping>,
    invoke: JsonFn,
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, LocalError> {
    let shards = mapping
        .kinesis
        .list_shards()
        .stream_name(&mapping.stream_name)
        .send()
        .await
        .map_err(|e| LocalError::pipeline("kinesis list shards", sdk(e)))?;
    let mut handles = Vec::new();
    for shard in shards.shards() {
        let shard_id = shard.shard_id().to_owned();
        let name = format!("kinesis:{}:{shard_id}", mapping.function);
        activity.register(&name);
        let m = mapping.clone();
        let inv = invoke.clone();
        let act = activity.clone();
        let st = stop.clone();
        handles.push(tokio::spawn(async move {
            if let Err(e) = run_shard(&m, &shard_id, &name, inv, &act, st).await {
                tracing::error!(poller = %name, error = %e, "shard poller stopped");
            }
        }));
    }
    Ok(handles)
}

async fn iterator(
    m: &KinesisMapping,
    shard_id: &str,
    after: Option<&str>,
) -> Result<Option<String>, LocalError> {
    let mut req = m
        .kinesis
        .get_shard_iterator()
        .stream_name(&m.stream_name)
        .shard_id(shard_id);
    req = match after {
        Some(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(seq),
        None if m.source.starting_position == "LATEST" => {
            req.shard_iterator_type(ShardIteratorType::Latest)
        }
        None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let out = req
        .send()
        .await
        .map_err(|e| LocalError::pipeline("kinesis get shard iterator", sdk(e)))?;
    Ok(out.shard_iterator().map(str::to_owned))
}

async fn run_shard(
    m: &KinesisMapping,
    shard_id: &str,
    name: &str,
    invoke: JsonFn,
    activity: &Activity,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LocalError> {
    let mut it = iterator(m, shard_id, None).await?;
    let mut pending: VecDeque<Record> = VecDeque::new();
    let mut last_read: Option<String> = None;
    let mut idle_pause = IDLE_POLL;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let epoch = activity.epoch();
        if pending.len() < m.source.batch_size {
            if let Some(cur) = it.clone() {
                match m
                    .kinesis
                    .get_records()
                    .shard_iterator(cur)
                    .limit(10_000)
                    .send()
                    .await
                {
                    Ok(out) => {
                        for r in out.records() {
                            last_read = Some(r.sequence_number().to_owned());
                            pending.push_back(r.clone());
                        }
                        it = out.next_shard_iterator().map(str::to_owned);
                    }
                    Err(e) => {
                        let text = sdk(e);
                        tracing::warn!(poller = %name, error = %text, "GetRecords failed; re-reading the iterator");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        it = iterator(m, shard_id, last_read.as_deref()).await?;
                        continue;
                    }
                }
            }
        }
        if pending.is_empty() {
            activity.idle(name, epoch);
            tokio::select! {
                _ = activity.pause(epoch, idle_pause) => {}
                _ = stop.changed() => {}
            }
            idle_pause = back_off(idle_pause);
            continue;
        }
        idle_pause = IDLE_POLL;
        let n = pending.len().min(m.source.batch_size.max(1));
        let batch: Vec<Record> = pending.drain(..n).collect();
        process_batch(m, shard_id, batch, &invoke, activity).await;
        activity.worked();
    }
}

/// Runs one batch to completion the way Lambda does; every record ends up either processed
/// or reported to the on-failure destination.
async fn process_batch(
    m: &KinesisMapping,
    shard_id: &str,
    batch: Vec<Record>,
    invoke: &JsonFn,
    activity: &Activity,
) {
    if m.counted {
        Activity::add(&activity.kinesis_records, batch.len() as u64);
        let assigned: Vec<serde_json::Value> = batch
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.data().as_ref()).ok())
            .filter(|e| e["type"] == "campaign_assigned")
            .collect();
        Activity::add(&activity.kinesis_assignments, assigned.len() as u64);
        if let Ok(mut seen) = activity.assignments.lock() {
            seen.extend(assigned);
        }
    }
    let mut work: VecDeque<(Vec<Record>, u32)> = VecDeque::from([(batch, 0)]);
    while let Some((mut window, mut attempts)) = work.pop_front() {
        loop {
            if window.is_empty() {
                break;
            }
            // Records older than MaximumRecordAgeInSeconds are skipped to the destination.
            if let Some(max_age) = m.source.max_record_age_secs {
                let now = Utc::now().timestamp() as f64;
                let expired = window
                    .iter()
                    .take_while(|r| {
                        r.approximate_arrival_timestamp()
                            .is_some_and(|t| now - t.as_secs_f64() > max_age as f64)
                    })
                    .count();
                if expired > 0 {
                    let rest = window.split_off(expired);
                    on_failure(
                        m,
                        shard_id,
                        &window,
                        "RecordAgeExceeded",
                        attempts,
                        activity,
                    )
                    .await;
                    window = rest;
                    continue;
                }
            }
            if m.counted {
                Activity::add(&activity.kinesis_batches, 1);
            }
            let event = kinesis_event(m, shard_id, &window);
            let result = invoke(event).await;
            let failed_at = match result {
                Ok(response) => first_failure(m, &window, &response),
                Err(e) => {
                    Activity::add(&activity.handler_errors, 1);
                    tracing::warn!(function = %m.function, shard = %shard_id, error = %e, "batch failed");
                    if m.source.bisect_on_error && window.len() > 1 {
                        Activity::add(&activity.kinesis_bisections, 1);
                        let second = window.split_off(window.len() / 2);
                        work.push_front((second, attempts));
                        work.push_front((window, attempts));
                        window = Vec::new();
                        continue;
                    }
                    Some(0)
                }
            };
            let Some(index) = failed_at else { break };
            window.drain(..index);
            attempts += 1;
            if m.source.max_retries.is_some_and(|max| attempts > max) {
                on_failure(
                    m,
                    shard_id,
                    &window,
                    "RetryAttemptsExhausted",
                    attempts,
                    activity,
                )
                .await;
                break;
            }
            Activity::add(&activity.kinesis_batch_retries, 1);
            let delay = m
                .retry_delay
                .saturating_mul(1 << attempts.min(6))
                .min(Duration::from_secs(1));
            tokio::time::sleep(delay).await;
        }
    }
}

/// Index of the first record to retry, `None` when the batch succeeded. An identifier that
/// is not in the batch fails the whole batch, as Lambda does.
fn first_failure(m: &KinesisMapping, window: &[Record], response: &Value) -> Option<usize> {
    if !m.source.report_batch_item_failures {
        return None;
    }
    let failures: Vec<&str> = response
        .get("batchItemFailures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| {
                    f.get("itemIdentifier")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                })
                .collect()
        })
        .unwrap_or_default();
    if failures.is_empty() {
        return None;
    }
    let mut first = None;
    for id in failures {
        match window.iter().position(|r| r.sequence_number() == id) {
            Some(i) => first = Some(first.map_or(i, |f: usize| f.min(i))),
            None => return Some(0),
        }
    }
    first
}

/// The Lambda `KinesisEvent` JSON for `records`.
pub fn kinesis_event(m: &KinesisMapping, shard_id: &str, records: &[Record]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let recs: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key(),
                    "sequenceNumber": r.sequence_number(),
                    "data": b64.encode(r.data().as_ref()),
                    "approximateArrivalTimestamp": r.approximate_arrival_timestamp().map_or(0.0, |t| t.as_secs_f64()),
                    "encryptionType": if r.encryption_type().is_some_and(|e| e.as_str() == "KMS") { "KMS" } else { "NONE" },
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard_id}:{}", r.sequence_number()),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": format!("{}-role", m.function_arn),
                "awsRegion": m.region,
                "eventSourceARN": m.stream_arn,
            })
        })
        .collect();
    json!({ "Records": recs })
}

async fn on_failure(
    m: &KinesisMapping,
    shard_id: &str,
    records: &[Record],
    condition: &str,
    attempts: u32,
    activity: &Activity,
) {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return;
    };
    Activity::add(&activity.kinesis_on_failure, 1);
    let arrival = |r: &Record| {
        r.approximate_arrival_timestamp()
            .and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.to_millis().unwrap_or(0)))
            .map(|t| t.to_rfc3339())
    };
    let body = json!({
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": m.function_arn,
            "condition": condition,
            "approximateInvokeCount": attempts + 1,
        },
        "responseContext": { "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" },
        "version": "1.0",
        "timestamp": Utc::now().to_rfc3339(),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first.sequence_number(),
            "endSequenceNumber": last.sequence_number(),
            "approximateArrivalOfFirstRecord": arrival(first),
            "approximateArrivalOfLastRecord": arrival(last),
            "batchSize": records.len(),
            "streamArn": m.stream_arn,
        }
    });
    tracing::warn!(function = %m.function, shard = %shard_id, condition, records = records.len(), "batch sent to the on-failure destination");
    if let Some(url) = &m.on_failure_url {
        if let Err(e) = m
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body.to_string())
            .send()
            .await
        {
            tracing::error!(function = %m.function, error = %sdk(e), "could not send to the on-failure destination");
        }
    }
}
