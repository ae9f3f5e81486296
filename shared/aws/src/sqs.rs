//! SQS implementation of [`DeadLetterSink`]: `SendMessageBatch` to the queue URL from
//! configuration (`DEAD_LETTER_QUEUE_URL`), at most 10 messages and 256 KiB per call, body =
//! the [`DeadLetter`] as JSON. Failed entries (reported inside a successful response) are
//! retried with backoff when SQS says the fault was not the sender's.

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use ember_core::ports::{DeadLetter, DeadLetterSink, PortError, PortResult};

use crate::retry::{classify, Backoff};

/// `SendMessageBatch` accepts at most this many entries per call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;
/// Payload limit of one `SendMessageBatch` call (all bodies together).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// A dead letter's body is kept below this size; larger raw records are truncated, and the
/// reason says so (a Kinesis record may be 1 MiB, an SQS message at most 256 KiB).
pub const MAX_BODY_BYTES: usize = 200 * 1024;

const STAGE: &str = "sqs.send_message_batch";

/// Said in the reason of a dead letter whose raw record was cut to fit: it cannot be redriven.
pub const TRUNCATED: &str = "raw record truncated";

/// Dead letters go to one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsDeadLetterSink {
    client: Client,
    queue_url: String,
    backoff: Backoff,
}

impl SqsDeadLetterSink {
    /// Builds the client from the process's one `SdkConfig`.
    pub fn from_conf(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(Client::new(config), queue_url)
    }

    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsDeadLetterSink {
            client,
            queue_url: queue_url.into(),
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends one chunk of bodies, retrying failed entries. Ok when every body was accepted.
    async fn send_chunk(&self, bodies: &[String]) -> PortResult<()> {
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut attempt = 0;
        loop {
            let mut entries = Vec::with_capacity(pending.len());
            for &i in &pending {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&bodies[i])
                    .build()
                    .map_err(|e| PortError::Permanent {
                        stage: STAGE,
                        reason: e.to_string(),
                    })?;
                entries.push(entry);
            }
            let (retry, last_error): (Vec<usize>, PortError) = match self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Err(e) => {
                    let err = classify(&e, STAGE);
                    if !err.is_retryable() {
                        return Err(err);
                    }
                    (pending.clone(), err)
                }
                Ok(out) => {
                    if out.failed().is_empty() {
                        return Ok(());
                    }
                    let mut retry = Vec::new();
                    let mut reasons = Vec::new();
                    for f in out.failed() {
                        let reason = format!("{}: {}", f.code(), f.message().unwrap_or(""));
                        if f.sender_fault() {
                            return Err(PortError::Permanent {
                                stage: STAGE,
                                reason,
                            });
                        }
                        reasons.push(reason);
                        if let Ok(i) = f.id().parse::<usize>() {
                            retry.push(i);
                        }
                    }
                    tracing::warn!(
                        stage = STAGE,
                        failed = retry.len(),
                        attempt,
                        "failed entries"
                    );
                    (
                        retry,
                        PortError::Transient {
                            stage: STAGE,
                            reason: reasons.join("; "),
                        },
                    )
                }
            };
            if retry.is_empty() {
                return Ok(());
            }
            if !self.backoff.can_retry(attempt) {
                return Err(last_error);
            }
            self.backoff.wait(attempt).await;
            attempt += 1;
            pending = retry;
        }
    }
}

/// The JSON body of a dead letter, truncating the raw record if the body would not fit.
pub fn body(letter: &DeadLetter) -> String {
    let json = serde_json::to_string(letter).unwrap_or_default();
    if json.len() <= MAX_BODY_BYTES {
        return json;
    }
    let mut cut = letter.clone();
    let keep = MAX_BODY_BYTES.saturating_sub(json.len() - letter.raw_base64.len() + 200);
    // base64 is ASCII, so any index is a char boundary.
    cut.raw_base64.truncate(keep.min(cut.raw_base64.len()));
    cut.reason = format!(
        "{} ({TRUNCATED} to {} of {} base64 characters)",
        letter.reason,
        cut.raw_base64.len(),
        letter.raw_base64.len()
    );
    serde_json::to_string(&cut).unwrap_or_default()
}

#[async_trait]
impl DeadLetterSink for SqsDeadLetterSink {
    async fn send(&self, letters: &[DeadLetter]) -> PortResult<()> {
        let bodies: Vec<String> = letters.iter().map(body).collect();
        // Chunks of ≤10 entries and ≤256 KiB.
        let mut start = 0;
        while start < bodies.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < bodies.len()
                && end - start < MAX_ENTRIES_PER_CALL
                && (end == start || bytes + bodies[end].len() <= MAX_BATCH_BYTES)
            {
                bytes += bodies[end].len();
                end += 1;
            }
            self.send_chunk(&bodies[start..end]).await?;
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_raw_records_are_truncated_and_say_so() {
        let letter = DeadLetter {
            origin: "kinesis:shardId-0:1".into(),
            stage: "decode".into(),
            reason: "/: not valid JSON".into(),
            raw_base64: "A".repeat(600 * 1024),
            at: chrono::Utc::now(),
        };
        let b = body(&letter);
        assert!(b.len() <= MAX_BODY_BYTES, "{}", b.len());
        let back: DeadLetter = serde_json::from_str(&b).unwrap();
        assert!(back.reason.contains("truncated"), "{}", back.reason);
        assert_eq!(back.origin, letter.origin);

        let small = DeadLetter {
            raw_base64: "e30=".into(),
            ..letter
        };
        assert_eq!(
            serde_json::from_str::<DeadLetter>(&body(&small)).unwrap(),
            small
        );
    }
}
