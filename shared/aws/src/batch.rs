//! A Powertools-style batch utility for Kinesis-triggered functions with
//! `FunctionResponseTypes: [ReportBatchItemFailures]`.
//!
//! The handler walks [`KinesisBatch::records`] (or [`KinesisBatch::decode`]), marks each
//! record succeeded, handled (e.g. dead-lettered: never retried) or failed, and returns
//! [`KinesisBatch::response`]: a `KinesisEventResponse` whose `batch_item_failures` are the
//! failed records' sequence numbers, in stream order.
//!
//! Ordering: every record belongs to a *group* (its partition key unless the handler sets
//! another, e.g. the profile key). Once a record of a group has failed, every later record of
//! the same group is reported failed too, so a retry never applies a group's records out of
//! order. A record the handler never marked is reported failed: nothing is lost silently.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use chrono::{DateTime, Utc};

/// One Kinesis record of the batch, borrowed from the event.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    /// Position in the batch (stream order within a shard).
    pub index: usize,
    pub sequence_number: &'a str,
    pub partition_key: &'a str,
    /// Shard id from the record's `eventID` (`shardId-…:<sequence>`), or `unknown`.
    pub shard_id: &'a str,
    /// The record's data (already base64-decoded by `aws_lambda_events`).
    pub data: &'a [u8],
    /// When the stream received it (`approximateArrivalTimestamp`).
    pub arrived_at: DateTime<Utc>,
}

impl BatchRecord<'_> {
    /// `kinesis:<shard id>:<sequence number>`, the origin of dead letters.
    pub fn origin(&self) -> String {
        format!("kinesis:{}:{}", self.shard_id, self.sequence_number)
    }
}

/// What happened to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not marked yet; reported as a failure if still pending at the end.
    Pending,
    Succeeded,
    /// Will not be retried although it was not processed (e.g. sent to the dead-letter queue).
    Handled,
    /// Must be retried by Lambda.
    Failed(String),
}

/// Counts of outcomes, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    pub succeeded: usize,
    pub handled: usize,
    pub failed: usize,
}

/// The state of one Kinesis batch.
#[derive(Debug)]
pub struct KinesisBatch<'a> {
    records: Vec<BatchRecord<'a>>,
    /// Group names, shared between the records of a group.
    groups: Vec<Option<Arc<str>>>,
    outcomes: Vec<Outcome>,
}

impl<'a> KinesisBatch<'a> {
    pub fn new(event: &'a KinesisEvent) -> Self {
        let records: Vec<BatchRecord<'a>> = event
            .records
            .iter()
            .enumerate()
            .map(|(index, r)| BatchRecord {
                index,
                sequence_number: r.kinesis.sequence_number.as_str(),
                partition_key: r.kinesis.partition_key.as_str(),
                shard_id: r
                    .event_id
                    .as_deref()
                    .and_then(|id| id.split_once(':').map(|(shard, _)| shard))
                    .filter(|s| !s.is_empty())
                    .unwrap_or("unknown"),
                data: r.kinesis.data.0.as_slice(),
                arrived_at: r.kinesis.approximate_arrival_timestamp.0,
            })
            .collect();
        let n = records.len();
        KinesisBatch {
            records,
            groups: vec![None; n],
            outcomes: vec![Outcome::Pending; n],
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> &[BatchRecord<'a>] {
        &self.records
    }

    /// Decodes every record's data with `f`, in batch order.
    pub fn decode<T, E>(
        &self,
        mut f: impl FnMut(&BatchRecord<'a>) -> Result<T, E>,
    ) -> Vec<(BatchRecord<'a>, Result<T, E>)> {
        self.records.iter().map(|r| (*r, f(r))).collect()
    }

    /// Puts a record in an ordering group (default: its partition key). Pass one `Arc<str>`
    /// (cloned) for all records of a group to store its name once.
    pub fn set_group(&mut self, index: usize, group: impl Into<Arc<str>>) {
        if let Some(g) = self.groups.get_mut(index) {
            *g = Some(group.into());
        }
    }

    pub fn succeed(&mut self, index: usize) {
        self.mark(index, Outcome::Succeeded);
    }

    /// Marks a record as dealt with without success (dead-lettered): not retried.
    pub fn handled(&mut self, index: usize) {
        self.mark(index, Outcome::Handled);
    }

    pub fn fail(&mut self, index: usize, reason: impl Into<String>) {
        self.mark(index, Outcome::Failed(reason.into()));
    }

    fn mark(&mut self, index: usize, outcome: Outcome) {
        if let Some(o) = self.outcomes.get_mut(index) {
            *o = outcome;
        }
    }

    pub fn outcome(&self, index: usize) -> Option<&Outcome> {
        self.outcomes.get(index)
    }

    /// Applies the ordering rule (failures of a group cascade to its later records) and marks
    /// pending records failed. Called by [`Self::response`]; idempotent.
    pub fn finish(&mut self) {
        let mut failed_groups: HashSet<&str> = HashSet::new();
        let names = self.groups.iter().zip(&self.records);
        for ((name, record), outcome) in names.zip(self.outcomes.iter_mut()) {
            let group = name.as_deref().unwrap_or(record.partition_key);
            match outcome {
                Outcome::Pending => {
                    *outcome = Outcome::Failed("not processed".into());
                    failed_groups.insert(group);
                }
                Outcome::Failed(_) => {
                    failed_groups.insert(group);
                }
                Outcome::Succeeded | Outcome::Handled => {
                    if failed_groups.contains(group) {
                        *outcome =
                            Outcome::Failed("an earlier record of the same key failed".into());
                    }
                }
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            records: self.records.len(),
            ..Summary::default()
        };
        for o in &self.outcomes {
            match o {
                Outcome::Succeeded => s.succeeded += 1,
                Outcome::Handled => s.handled += 1,
                Outcome::Failed(_) | Outcome::Pending => s.failed += 1,
            }
        }
        s
    }

    /// Failure reasons by sequence number (after [`Self::finish`]), for logs and tests.
    pub fn failures(&self) -> BTreeMap<&str, &str> {
        self.records
            .iter()
            .zip(&self.outcomes)
            .filter_map(|(r, o)| match o {
                Outcome::Failed(reason) => Some((r.sequence_number, reason.as_str())),
                Outcome::Pending => Some((r.sequence_number, "not processed")),
                _ => None,
            })
            .collect()
    }

    /// The Lambda response: failed records' sequence numbers, in stream order.
    pub fn response(&mut self) -> KinesisEventResponse {
        self.finish();
        let mut response = KinesisEventResponse::default();
        response.set_failures(
            self.records
                .iter()
                .zip(&self.outcomes)
                .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
                .map(|(r, _)| r.sequence_number),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(keys: &[&str]) -> KinesisEvent {
        let records: Vec<serde_json::Value> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                serde_json::json!({
                    "kinesis": {"partitionKey": k, "sequenceNumber": format!("{}", 100 + i),
                                "data": "e30=", "approximateArrivalTimestamp": 1.0},
                    "eventID": format!("shardId-000000000007:{}", 100 + i),
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    fn failed(resp: &KinesisEventResponse) -> Vec<String> {
        resp.batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.clone())
            .collect()
    }

    #[test]
    fn failures_cascade_within_a_group_only() {
        let ev = event(&["a", "b", "a", "b", "a"]);
        let mut batch = KinesisBatch::new(&ev);
        assert_eq!(
            batch.records()[0].origin(),
            "kinesis:shardId-000000000007:100"
        );
        assert_eq!(batch.records()[0].data, b"{}");
        for i in 0..5 {
            batch.succeed(i);
        }
        batch.fail(2, "boom");
        let resp = batch.response();
        assert_eq!(failed(&resp), vec!["102", "104"]);
        assert_eq!(
            batch.summary(),
            Summary {
                records: 5,
                succeeded: 3,
                handled: 0,
                failed: 2
            }
        );
    }

    #[test]
    fn groups_can_be_overridden_and_pending_records_fail() {
        let ev = event(&["x", "y", "z"]);
        let mut batch = KinesisBatch::new(&ev);
        batch.set_group(0, "u1");
        batch.set_group(2, "u1");
        batch.fail(0, "boom");
        batch.handled(1);
        batch.succeed(2);
        assert_eq!(failed(&batch.response()), vec!["100", "102"]);

        let ev = event(&["x", "y"]);
        let mut batch = KinesisBatch::new(&ev);
        batch.handled(0);
        assert_eq!(failed(&batch.response()), vec!["101"]);
    }

    #[test]
    fn decode_keeps_order() {
        let ev = event(&["a", "b"]);
        let batch = KinesisBatch::new(&ev);
        let decoded = batch.decode(|r| Ok::<_, ()>(r.index * 10));
        assert_eq!(
            decoded
                .iter()
                .map(|(r, d)| (r.index, *d))
                .collect::<Vec<_>>(),
            vec![(0, Ok(0)), (1, Ok(10))]
        );
    }
}
