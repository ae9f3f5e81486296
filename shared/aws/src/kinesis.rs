//! Kinesis Data Streams implementation of [`EventStream`].
//!
//! `PutRecords` fails per record inside a successful response: the adapter reads
//! `FailedRecordCount`, keeps the sequence numbers of the records that made it and re-sends
//! only the failed ones, with bounded exponential backoff. Each call carries at most 500
//! records and 5 MiB (the service limits). The caller gets one result per input record, in
//! input order.
//!
//! Order per partition key (one customer's events) is kept under partial failures: records go
//! out in waves, each call carrying at most one record of a key, and a key's next record only
//! after its previous one is written. A record that fails for good fails every later record of
//! its key unsent, so nothing of a customer is ever written ahead of an earlier event.
//! (Within one call, a later record of a key could succeed while an earlier one fails, and
//! it could not be taken back: a `remove_from_cart` would land before its `add_to_cart`.)
//! A batch of `n` records of one customer therefore takes `n` calls.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use ember_core::ports::{EventStream, PortError, PortResult, StreamRecord};

/// Most records one `PutRecords` call may carry.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes (data plus partition keys) one `PutRecords` call may carry.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;

/// How often and how patiently failed records are re-sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per record, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt` (2 = first retry), with up to 50 % jitter subtracted so
    /// concurrent writers do not retry in lock step.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(2).min(16));
        let capped = exp.min(self.max_delay);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = capped.mul_f64(f64::from(nanos % 1000) / 2000.0);
        capped.saturating_sub(jitter)
    }
}

/// Writes Ember events to one Kinesis data stream.
#[derive(Debug, Clone)]
pub struct KinesisEventStream {
    client: Client,
    stream_name: String,
    retry: RetryPolicy,
}

impl KinesisEventStream {
    pub fn new(client: Client, stream_name: impl Into<String>) -> Self {
        KinesisEventStream {
            client,
            stream_name: stream_name.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// Builds the client from the process-wide SDK configuration.
    pub fn from_conf(config: &aws_config::SdkConfig, stream_name: impl Into<String>) -> Self {
        Self::new(Client::new(config), stream_name)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// Sends one chunk (≤500 records, ≤5 MiB), retrying failed records; writes each record's
    /// outcome into `results` at its input index.
    async fn put_chunk(
        &self,
        records: &[(usize, &StreamRecord)],
        results: &mut [Option<PortResult<String>>],
    ) {
        let mut pending: Vec<(usize, &StreamRecord)> = records.to_vec();
        let mut attempt = 1u32;
        loop {
            let mut entries = Vec::with_capacity(pending.len());
            let mut sendable = Vec::with_capacity(pending.len());
            for (index, record) in &pending {
                match PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.data.clone()))
                    .partition_key(record.partition_key.clone())
                    .build()
                {
                    Ok(entry) => {
                        entries.push(entry);
                        sendable.push((*index, *record));
                    }
                    Err(e) => {
                        results[*index] = Some(Err(PortError::Permanent {
                            stage: "kinesis.put_records",
                            reason: format!("cannot build record: {e}"),
                        }))
                    }
                }
            }
            if sendable.is_empty() {
                return;
            }
            let outcome = self
                .client
                .put_records()
                .stream_name(&self.stream_name)
                .set_records(Some(entries))
                .send()
                .await;
            let mut failed: Vec<((usize, &StreamRecord), PortError)> = Vec::new();
            match outcome {
                Ok(output) => {
                    let answers = output.records();
                    if answers.len() != sendable.len() {
                        // Should never happen; treat every record as unknown and retryable.
                        for item in &sendable {
                            failed.push((
                                *item,
                                transient(format!(
                                    "response carried {} results for {} records",
                                    answers.len(),
                                    sendable.len()
                                )),
                            ));
                        }
                    } else {
                        for (item, answer) in sendable.iter().zip(answers) {
                            match (answer.error_code(), answer.sequence_number()) {
                                (None, Some(seq)) => results[item.0] = Some(Ok(seq.to_owned())),
                                (code, _) => {
                                    let code = code.unwrap_or("MissingSequenceNumber");
                                    let message = answer.error_message().unwrap_or("");
                                    let reason = format!("{code}: {message}");
                                    let err = if is_retryable_code(code) {
                                        transient(reason)
                                    } else {
                                        permanent(reason)
                                    };
                                    failed.push((*item, err));
                                }
                            }
                        }
                    }
                    if output.failed_record_count().unwrap_or(0) > 0 {
                        tracing::warn!(
                            stream = %self.stream_name,
                            attempt,
                            failed = output.failed_record_count().unwrap_or(0),
                            sent = sendable.len(),
                            "kinesis put_records had failed records"
                        );
                    }
                }
                Err(err) => {
                    let err = classify(&err);
                    tracing::warn!(stream = %self.stream_name, attempt, error = %err, "kinesis put_records call failed");
                    for item in &sendable {
                        failed.push((*item, err.clone()));
                    }
                }
            }
            // Permanent failures are final now; retryable ones go round again.
            pending.clear();
            for (item, err) in failed {
                if err.is_retryable() && attempt < self.retry.max_attempts {
                    pending.push(item);
                } else {
                    results[item.0] = Some(Err(err));
                }
            }
            if pending.is_empty() {
                return;
            }
            attempt += 1;
            tokio::time::sleep(self.retry.delay(attempt)).await;
        }
    }
}

fn transient(reason: String) -> PortError {
    PortError::Transient {
        stage: "kinesis.put_records",
        reason,
    }
}

fn permanent(reason: String) -> PortError {
    PortError::Permanent {
        stage: "kinesis.put_records",
        reason,
    }
}

/// Per-record error codes Kinesis documents as worth retrying.
fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "InternalFailure"
            | "InternalFailureException"
            | "ServiceUnavailable"
            | "MissingSequenceNumber"
            | "KMSThrottlingException"
    )
}

/// Maps an SDK error to retryable or not: throttling, 5xx, timeouts and dispatch failures may
/// pass later; a missing stream, bad arguments or denied access will not.
fn classify<E, R>(err: &SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let reason = format!("{code}: {}", e.message().unwrap_or(""));
            let retryable = is_retryable_code(code)
                || matches!(
                    code,
                    "ThrottlingException"
                        | "LimitExceededException"
                        | "RequestTimeout"
                        | "SlowDown"
                );
            if retryable {
                transient(reason)
            } else {
                permanent(reason)
            }
        }
        SdkError::ConstructionFailure(_) => permanent(format!("{err:?}")),
        // Timeouts, dispatch (connection) failures and unparseable responses.
        _ => transient(format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(err)
        )),
    }
}

/// The input indices of each partition key's records, keys in order of first appearance.
fn queues_by_key(records: &[StreamRecord]) -> Vec<VecDeque<usize>> {
    let mut slot: HashMap<&str, usize> = HashMap::new();
    let mut queues: Vec<VecDeque<usize>> = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let q = *slot
            .entry(record.partition_key.as_str())
            .or_insert_with(|| {
                queues.push(VecDeque::new());
                queues.len() - 1
            });
        queues[q].push_back(index);
    }
    queues
}

/// A record read back from a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRecord {
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Where Kinesis puts `partition_key`: the MD5 of its bytes as a 128-bit big-endian number,
/// within one shard's hash key range.
pub fn hash_key(partition_key: &str) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// What [`KinesisEventStream::read_range`] found.
#[derive(Debug, Clone, Default)]
pub struct ShardRange {
    /// The records from `start` to `end`, in order.
    pub records: Vec<ShardRecord>,
    /// Whether the record at `start` was still on the stream (else the range has expired,
    /// wholly or in part, past the stream's retention).
    pub complete: bool,
}

impl KinesisEventStream {
    /// Reads the records of `shard_id` from sequence number `start` to `end` (inclusive), at
    /// most `limit`: what Lambda's on-failure record of a batch names.
    /// The hash key range (inclusive) of `shard_id`, if the stream still lists the shard.
    pub async fn hash_range(&self, shard_id: &str) -> PortResult<Option<(u128, u128)>> {
        let mut token: Option<String> = None;
        loop {
            // A continuation names the stream itself: the name goes only on the first page.
            let request = match token.take() {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.stream_name),
            };
            let out = request
                .send()
                .await
                .map_err(|e| crate::retry::classify(&e, "kinesis.list_shards"))?;
            for shard in out.shards() {
                if shard.shard_id() != shard_id {
                    continue;
                }
                let range = shard.hash_key_range();
                return Ok(range.and_then(|r| {
                    Some((
                        r.starting_hash_key().parse().ok()?,
                        r.ending_hash_key().parse().ok()?,
                    ))
                }));
            }
            match out.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(None),
            }
        }
    }

    pub async fn read_range(
        &self,
        shard_id: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> PortResult<ShardRange> {
        use aws_sdk_kinesis::types::ShardIteratorType;
        use ember_core::watermark::compare_sequence;
        let iterator = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream_name)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(start)
            .send()
            .await;
        let mut iterator = match iterator {
            Ok(out) => out.shard_iterator,
            // A sequence number past retention (or of a shard gone since) is refused.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_invalid_argument_exception() || s.is_resource_not_found_exception()
                }) =>
            {
                return Ok(ShardRange::default())
            }
            Err(e) => return Err(crate::retry::classify(&e, "kinesis.get_shard_iterator")),
        };
        let mut range = ShardRange::default();
        let mut empty_reads = 0;
        while let Some(it) = iterator.take() {
            let out = self
                .client
                .get_records()
                .shard_iterator(it)
                .limit(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000))
                .send()
                .await
                .map_err(|e| crate::retry::classify(&e, "kinesis.get_records"))?;
            if out.records().is_empty() {
                empty_reads += 1;
            }
            for r in out.records() {
                let seq = r.sequence_number();
                if compare_sequence(seq, end).is_gt() || range.records.len() >= limit {
                    return Ok(range);
                }
                if range.records.is_empty() {
                    range.complete = seq == start;
                }
                range.records.push(ShardRecord {
                    sequence_number: seq.to_owned(),
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    data: r.data().as_ref().to_vec(),
                });
            }
            // At the tip of the shard (or a closed shard's end): nothing more will come.
            let caught_up = out.millis_behind_latest().is_none_or(|m| m == 0);
            if (out.records().is_empty() && caught_up) || empty_reads > 5 {
                break;
            }
            iterator = out.next_shard_iterator;
        }
        Ok(range)
    }
}

#[async_trait]
impl EventStream for KinesisEventStream {
    async fn put(&self, records: &[StreamRecord]) -> Vec<PortResult<String>> {
        let mut results: Vec<Option<PortResult<String>>> = vec![None; records.len()];
        let mut queues = queues_by_key(records);
        loop {
            // One record per key: the head of each key's queue.
            let wave: Vec<(usize, usize)> = queues
                .iter()
                .enumerate()
                .filter_map(|(q, queue)| queue.front().map(|index| (q, *index)))
                .collect();
            if wave.is_empty() {
                break;
            }
            let mut chunk: Vec<(usize, &StreamRecord)> = Vec::new();
            let mut chunk_bytes = 0usize;
            for &(_, index) in &wave {
                let record = &records[index];
                let size = record.data.len() + record.partition_key.len();
                if !chunk.is_empty()
                    && (chunk.len() == MAX_RECORDS_PER_CALL
                        || chunk_bytes + size > MAX_BYTES_PER_CALL)
                {
                    self.put_chunk(&chunk, &mut results).await;
                    chunk.clear();
                    chunk_bytes = 0;
                }
                chunk.push((index, record));
                chunk_bytes += size;
            }
            if !chunk.is_empty() {
                self.put_chunk(&chunk, &mut results).await;
            }
            for (q, index) in wave {
                queues[q].pop_front();
                if let Some(Err(e)) = &results[index] {
                    // Never write a customer's later events ahead of this one.
                    let reason = format!("an earlier record of the same partition key failed: {e}");
                    for later in queues[q].drain(..) {
                        results[later] = Some(Err(PortError::Transient {
                            stage: "kinesis.put_records",
                            reason: reason.clone(),
                        }));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(permanent("record was not sent".to_owned()))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
        };
        assert!(p.delay(2) <= Duration::from_millis(100));
        assert!(p.delay(2) >= Duration::from_millis(50));
        assert!(p.delay(4) <= Duration::from_millis(400));
        assert!(p.delay(4) >= Duration::from_millis(200));
        assert!(p.delay(30) <= Duration::from_millis(700));
    }

    #[test]
    fn records_are_queued_per_key_in_input_order() {
        let r = |k: &str| StreamRecord {
            partition_key: k.into(),
            data: vec![],
        };
        let records = [r("a"), r("b"), r("a"), r("c"), r("a")];
        let queues: Vec<Vec<usize>> = queues_by_key(&records).into_iter().map(Vec::from).collect();
        assert_eq!(queues, vec![vec![0, 2, 4], vec![1], vec![3]]);
    }

    #[test]
    fn throughput_errors_are_retryable_and_argument_errors_are_not() {
        assert!(is_retryable_code("ProvisionedThroughputExceededException"));
        assert!(is_retryable_code("InternalFailure"));
        assert!(!is_retryable_code("InvalidArgumentException"));
    }
}
