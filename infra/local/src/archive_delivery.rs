//! Firehose's delivery from the event stream to the archive bucket
//! (`AWS::KinesisFirehose::DeliveryStream` with a Kinesis source), run by the local runner:
//! moto's Firehose does not read Kinesis streams (a delivery stream created with a Kinesis
//! source delivers nothing there), so the runner reads the stream as Firehose would and
//! writes the objects Firehose writes: the template's `Prefix` evaluated at the arrival time
//! of each object's oldest record, gzip-compressed, one record per line.
//!
//! Each batch the runner reads becomes an object (Firehose buffers up to
//! `BufferingHints.IntervalInSeconds`; locally the run would end first). Object names carry
//! the delivery time to the millisecond and a counter, so their order is delivery order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use ember_aws::archive::Archive;
use futures::FutureExt;
use serde_json::Value;

use crate::error::LocalError;
use crate::functions::JsonFn;

/// A delivery stream of the template, as the runner needs it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub logical_id: String,
    /// `KinesisStreamSourceConfiguration.KinesisStreamARN`, unresolved.
    pub stream: Value,
    /// `ExtendedS3DestinationConfiguration.BucketARN`, unresolved.
    pub bucket: Value,
    pub prefix: String,
}

/// The template's Kinesis-sourced delivery streams to S3.
pub fn deliveries(template: &crate::template::Template) -> Vec<Delivery> {
    template
        .resources
        .values()
        .filter(|r| r.kind == "AWS::KinesisFirehose::DeliveryStream")
        .filter(|r| r.properties["DeliveryStreamType"] == "KinesisStreamAsSource")
        .map(|r| {
            let s3 = &r.properties["ExtendedS3DestinationConfiguration"];
            Delivery {
                logical_id: r.logical_id.clone(),
                stream: r.properties["KinesisStreamSourceConfiguration"]["KinesisStreamARN"]
                    .clone(),
                bucket: s3["BucketARN"].clone(),
                prefix: s3["Prefix"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Evaluates Firehose's `!{timestamp:<pattern>}` expressions of `prefix` at `at` (the Java
/// `DateTimeFormatter` letters Ember's prefix uses: `yyyy`, `MM`, `dd`, `HH`, `mm`, `ss`).
pub fn evaluate_prefix(prefix: &str, at: DateTime<Utc>) -> Result<String, LocalError> {
    let mut out = String::new();
    let mut rest = prefix;
    while let Some(start) = rest.find("!{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| LocalError::Template(format!("unclosed expression in {prefix}")))?;
        let expr = &rest[start + 2..start + end];
        let pattern = expr.strip_prefix("timestamp:").ok_or_else(|| {
            LocalError::Template(format!(
                "the local runner evaluates only timestamps, not {expr}"
            ))
        })?;
        let strftime = pattern
            .replace("yyyy", "%Y")
            .replace("MM", "%m")
            .replace("dd", "%d")
            .replace("HH", "%H")
            .replace("mm", "%M")
            .replace("ss", "%S");
        out.push_str(&at.format(&strftime).to_string());
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The handler the runner's Kinesis poller invokes with each batch: one object per batch.
pub fn handler(archive: Archive, name: String, prefix: String) -> JsonFn {
    let counter = Arc::new(AtomicU64::new(0));
    Arc::new(move |event: Value| {
        let (archive, name, prefix) = (archive.clone(), name.clone(), prefix.clone());
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut records = Vec::new();
            let mut oldest: Option<f64> = None;
            for r in event["Records"].as_array().into_iter().flatten() {
                let data = b64
                    .decode(r["kinesis"]["data"].as_str().unwrap_or_default())
                    .map_err(|e| format!("record data is not base64: {e}"))?;
                records.push(data);
                let at = r["kinesis"]["approximateArrivalTimestamp"].as_f64();
                oldest = match (oldest, at) {
                    (Some(o), Some(a)) => Some(o.min(a)),
                    (o, a) => o.or(a),
                };
            }
            if records.is_empty() {
                return Ok(Value::Null);
            }
            let arrival = oldest
                .and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64))
                .unwrap_or_else(Utc::now);
            let now = Utc::now();
            let key = format!(
                "{}{name}-1-{}-{n:08}-{}.gz",
                evaluate_prefix(&prefix, arrival).map_err(|e| e.to_string())?,
                now.format("%Y-%m-%d-%H-%M-%S-%3f"),
                uuid::Uuid::new_v4()
            );
            archive
                .write(&key, &records)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }
        .boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_in_a_prefix_are_evaluated_as_firehose_does() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 7, 3, 9).unwrap();
        let p = evaluate_prefix(
            "events/date=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/",
            at,
        );
        assert_eq!(p.unwrap(), "events/date=2026-12-05/hour=07/");
        assert!(evaluate_prefix("x/!{firehose:error-output-type}/", at).is_err());
        assert!(evaluate_prefix("x/!{timestamp:yyyy", at).is_err());
    }
}
