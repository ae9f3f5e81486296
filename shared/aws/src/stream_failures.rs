//! Redrive of the enrich mapping's on-failure destination: the batches Lambda gave up on
//! (retries or record age exhausted). Each message names a shard and a sequence range, not the
//! records; [`redrive`] reads them back from the stream while it retains them and puts back
//! the ones that were not applied, oldest batch first, in order per customer.
//!
//! Whether a record was applied is read from its event-id claim and its profile:
//! - no live claim: never claimed, or released by enrich when the record failed unwritten
//!   (`Enricher::release_unapplied`): put back;
//! - a claim held by another record: that record applies (or applied) the event: a duplicate,
//!   left alone;
//! - a claim held by this record, above its profile's watermark for the shard: not applied
//!   (enrich could not release it): the claim is released, then the record put back;
//! - a claim held by this record, at or below the watermark: applied (a record of another
//!   customer in the batch that did not fail, or one whose write landed and whose publish
//!   failed: its bus events wait in the outbox).
//!
//! The last rule has one blind spot: an invocation that stopped (a timeout) after claiming a
//! record and before writing it, on every attempt, and later records of the same customer
//! applied after Lambda moved on. The claim then looks like an applied record's. Enrich
//! releases the claims of records it fails, so only a cut-off invocation (or a release that
//! itself failed) leaves one.
//!
//! A record put back twice (a message that came back) is a duplicate by its claim. A message
//! is deleted once every record it names is settled.
//!
//! A range that has left the stream is read from the archive instead (when given one): the
//! objects of the batch's arrival hours, the records whose customer hashes into the failed
//! shard, decided by their claims alike (`from_archive`). The archive holds no
//! sequence numbers, so it also yields records of that shard and hour that were not in the
//! batch: each is applied (its claim says so), or was never applied (no claim) and belongs on
//! the stream anyway. Past the de-duplication window claims say nothing, and the message
//! stays with the hint to rebuild from the archive.

use chrono::{DateTime, Utc};
use ember_core::ports::{EventClaims, EventStream, PortResult, ProfileStore, StreamRecord};
use ember_core::watermark::{compare_sequence, Applied, Position};

use crate::archive::Archive;
use crate::kinesis::{hash_key, KinesisEventStream, ShardRecord};
use crate::redrive::{DeadLetterQueue, Queued};

/// How long a redrive holds the messages it received.
const HOLD: std::time::Duration = std::time::Duration::from_secs(120);

/// Lambda's on-failure record of a Kinesis batch (`KinesisBatchInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedBatch {
    pub shard_id: String,
    pub start: String,
    pub end: String,
    pub size: usize,
    /// `RetryAttemptsExhausted`, `RecordAgeExceeded`, …
    pub condition: String,
    pub first_arrival: Option<DateTime<Utc>>,
    pub last_arrival: Option<DateTime<Utc>>,
}

/// Reads an on-failure message's body.
pub fn failed_batch_of(body: &str) -> Result<FailedBatch, String> {
    let message: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let info = &message["KinesisBatchInfo"];
    let text = |k: &str| {
        info[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("no KinesisBatchInfo.{k} in the message"))
    };
    let time = |k: &str| {
        info[k]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Ok(FailedBatch {
        shard_id: text("shardId")?,
        start: text("startSequenceNumber")?,
        end: text("endSequenceNumber")?,
        size: info["batchSize"].as_u64().unwrap_or(100) as usize,
        condition: message["requestContext"]["condition"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        first_arrival: time("approximateArrivalOfFirstRecord"),
        last_arrival: time("approximateArrivalOfLastRecord"),
    })
}

/// What to do with one record of a failed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Put it back; first release the claim it holds itself.
    PutBack { release: bool },
    /// Applied (its claim is its own and the watermark covers it).
    Applied,
    /// Another record holds its event id.
    Duplicate,
    /// Not an event enrich could apply (enrich dead-letters such records itself).
    NotAnEvent(String),
}

/// The claim origin of a record (`<shard>:<sequence number>`, as enrich writes it).
fn origin(shard_id: &str, record: &ShardRecord) -> String {
    Position::new(shard_id, &record.sequence_number).to_string()
}

/// Decides what becomes of `record` (see the module doc).
pub async fn verdict(
    claims: &impl EventClaims,
    profiles: &impl ProfileStore,
    shard_id: &str,
    record: &ShardRecord,
) -> PortResult<Verdict> {
    let value: serde_json::Value = match serde_json::from_slice(&record.data) {
        Ok(v) => v,
        Err(e) => return Ok(Verdict::NotAnEvent(format!("not JSON: {e}"))),
    };
    let Some(event_id) = value["event_id"].as_str().filter(|s| !s.is_empty()) else {
        return Ok(Verdict::NotAnEvent("no event id".into()));
    };
    let own = origin(shard_id, record);
    match claims.holder(event_id).await? {
        None => Ok(Verdict::PutBack { release: false }),
        Some(holder) if holder != own => Ok(Verdict::Duplicate),
        Some(_) => {
            let position = Position::new(shard_id, &record.sequence_number);
            own_claim(profiles, &record.partition_key, &position).await
        }
    }
}

/// A record holding its own claim: applied if its profile's watermark covers it, else put
/// back after the claim is released.
async fn own_claim(
    profiles: &impl ProfileStore,
    key: &str,
    position: &Position<'_>,
) -> PortResult<Verdict> {
    Ok(if Applied::read(profiles, key).await?.covers(position) {
        Verdict::Applied
    } else {
        Verdict::PutBack { release: true }
    })
}

/// What a redrive did, by record origin (`kinesis:<shard>:<sequence number>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    pub put_back: Vec<String>,
    pub applied: usize,
    pub duplicates: usize,
    pub not_events: usize,
    /// Messages left in the queue, with the reason.
    pub kept: Vec<(String, String)>,
    /// Messages settled (deleted, or a dry run's would-be).
    pub batches: usize,
}

/// Where a redrive reads, puts and records.
pub struct Ports<'a, C, P, S> {
    pub queue: &'a DeadLetterQueue,
    pub source: &'a KinesisEventStream,
    pub claims: &'a C,
    pub profiles: &'a P,
    pub stream: &'a S,
    /// Where records that have left the stream are read from, if anywhere.
    pub archive: Option<ArchiveSource<'a>>,
}

/// The archive, for failed ranges the stream no longer holds.
#[derive(Clone, Copy)]
pub struct ArchiveSource<'a> {
    pub archive: &'a Archive,
    /// Enrich's de-duplication window: past it, claims no longer say what was applied.
    pub dedup_window: chrono::Duration,
}

/// One record of a failed batch, from the stream or the archive, and what becomes of it.
struct Candidate {
    /// `kinesis:<shard>:<sequence>` or `archive:<object>#<line>`.
    label: String,
    partition_key: String,
    data: Vec<u8>,
    verdict: Verdict,
    /// The claim origin released before a put-back (`Verdict::PutBack { release: true }`).
    holder: String,
}

/// The messages of the on-failure queue, oldest batch first; unreadable ones with the reason.
async fn batches(
    queue: &DeadLetterQueue,
) -> PortResult<Vec<(Queued, Result<FailedBatch, String>)>> {
    let mut all: Vec<_> = queue
        .receive_all(HOLD)
        .await?
        .into_iter()
        .map(|q| {
            let batch = failed_batch_of(&q.body);
            (q, batch)
        })
        .collect();
    all.sort_by_key(|(_, b)| b.as_ref().ok().map(|b| (b.first_arrival, b.start.clone())));
    Ok(all)
}

/// Lists the failed batches (leaving them in the queue).
pub async fn list(queue: &DeadLetterQueue) -> PortResult<Vec<Result<FailedBatch, String>>> {
    let all = batches(queue).await?;
    for (q, _) in &all {
        queue.release(&q.receipt).await?;
    }
    Ok(all.into_iter().map(|(_, b)| b).collect())
}

/// Puts back the records of every failed batch that were not applied (see the module doc);
/// `dry_run` only says what it would do.
pub async fn redrive<C, P, S>(ports: Ports<'_, C, P, S>, dry_run: bool) -> PortResult<StreamReport>
where
    C: EventClaims,
    P: ProfileStore,
    S: EventStream,
{
    let mut report = StreamReport::default();
    let mut untouched: Vec<String> = Vec::new();
    // Customers with a record that could not be put back: none of their later ones go.
    let mut blocked: Vec<String> = Vec::new();
    // Events put back by this run: archived ranges overlap, and each goes back once.
    let mut sent: std::collections::HashSet<String> = Default::default();
    for (queued, batch) in batches(ports.queue).await? {
        let batch = match batch {
            Ok(b) => b,
            Err(why) => {
                report.kept.push((crate::redrive::UNREADABLE.into(), why));
                untouched.push(queued.receipt);
                continue;
            }
        };
        let name = format!("{}:{}..{}", batch.shard_id, batch.start, batch.end);
        let range = ports
            .source
            .read_range(&batch.shard_id, &batch.start, &batch.end, batch.size)
            .await?;
        let candidates = if range.complete {
            let mut from_stream = Vec::with_capacity(range.records.len());
            for record in range.records {
                let verdict =
                    verdict(ports.claims, ports.profiles, &batch.shard_id, &record).await?;
                let holder = origin(&batch.shard_id, &record);
                from_stream.push(Candidate {
                    label: format!("kinesis:{holder}"),
                    partition_key: record.partition_key,
                    data: record.data,
                    verdict,
                    holder,
                });
            }
            from_stream
        } else {
            match from_archive(&ports, &batch).await? {
                Ok(found) => found,
                Err(why) => {
                    report.kept.push((name, why));
                    untouched.push(queued.receipt);
                    continue;
                }
            }
        };
        let mut settled = true;
        // What goes back, put in one call (the adapter keeps each customer's order, and a
        // record that fails fails that customer's later ones unsent).
        let mut back: Vec<(String, StreamRecord)> = Vec::new();
        for c in candidates {
            if blocked.contains(&c.partition_key) {
                settled = false;
                continue;
            }
            match c.verdict {
                Verdict::Applied => report.applied += 1,
                Verdict::Duplicate => report.duplicates += 1,
                Verdict::NotAnEvent(_) => report.not_events += 1,
                Verdict::PutBack { .. } if !sent.insert(event_id_of(&c.data)) => {
                    report.duplicates += 1;
                }
                Verdict::PutBack { release } => {
                    if release && !dry_run {
                        ports
                            .claims
                            .release(&event_id_of(&c.data), &c.holder)
                            .await?;
                    }
                    let put = StreamRecord {
                        partition_key: c.partition_key,
                        data: c.data,
                    };
                    back.push((c.label, put));
                }
            }
        }
        if dry_run {
            report
                .put_back
                .extend(back.into_iter().map(|(what, _)| what));
        } else if !back.is_empty() {
            let (whats, records): (Vec<String>, Vec<StreamRecord>) = back.into_iter().unzip();
            let answers = ports.stream.put(&records).await;
            for ((what, record), answer) in whats.into_iter().zip(records).zip(answers) {
                match answer {
                    Ok(_) => report.put_back.push(what),
                    Err(error) => {
                        tracing::warn!(%error, "record not put back; the batch stays");
                        settled = false;
                        blocked.push(record.partition_key);
                    }
                }
            }
        }
        if settled {
            report.batches += 1;
        } else {
            let why = "some records could not be put back";
            report.kept.push((name, why.into()));
        }
        if settled && !dry_run {
            if let Err(error) = ports.queue.delete(&queued.receipt).await {
                tracing::warn!(%error, "batch redriven, message not deleted: it comes back");
            }
        } else {
            untouched.push(queued.receipt);
        }
    }
    for receipt in &untouched {
        ports.queue.release(receipt).await?;
    }
    Ok(report)
}

/// The records of a failed batch that has left the stream, from the archive: the objects
/// of its arrival hours (an hour either side), the records whose customer the failed shard
/// holds, each decided by its event-id claim. A claim held by a record of the failed range
/// is that record's (applied if the watermark covers it); no claim means never applied. Only
/// while claims last: a batch older than the de-duplication window is left to a rebuild.
async fn from_archive<C, P, S>(
    ports: &Ports<'_, C, P, S>,
    batch: &FailedBatch,
) -> PortResult<Result<Vec<Candidate>, String>>
where
    C: EventClaims,
    P: ProfileStore,
    S: EventStream,
{
    let (Some(first), Some(last)) = (batch.first_arrival, batch.last_arrival) else {
        return Ok(Err("the records are no longer on the stream, and the message gives no arrival time to find them in the archive".into()));
    };
    let window = format!("{} to {}", first.to_rfc3339(), last.to_rfc3339());
    let Some(source) = ports.archive else {
        return Ok(Err(format!(
            "the records are no longer on the stream: replay the archive for their arrival time ({window})"
        )));
    };
    if Utc::now() - last >= source.dedup_window - chrono::Duration::days(1) {
        return Ok(Err(format!(
            "the records have left the stream and are older than the de-duplication window: \
             review, then replay the archive for {window} with --rebuild into deleted profiles"
        )));
    }
    let Some((low, high)) = ports.source.hash_range(&batch.shard_id).await? else {
        return Ok(Err(format!(
            "the records and their shard have left the stream: replay the archive for {window}"
        )));
    };
    let registry = ember_core::schema::Registry::embedded().map_err(|e| {
        ember_core::ports::PortError::Permanent {
            stage: "schema.registry",
            reason: e.to_string(),
        }
    })?;
    let hour = chrono::Duration::hours(1);
    let mut found = Vec::new();
    for key in source
        .archive
        .keys(Some(first - hour), Some(last + hour))
        .await?
    {
        for (line, data) in source.archive.read(&key).await?.into_iter().enumerate() {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&data) else {
                continue;
            };
            let Some(customer) = crate::archive::customer_of(&event) else {
                continue;
            };
            if !(low..=high).contains(&hash_key(&customer)) {
                continue;
            }
            // Refused records were dead-lettered when they came; they are not put back.
            if ember_core::enrich::decode(&data, &registry).is_err() {
                continue;
            }
            let event_id = event["event_id"].as_str().unwrap_or_default();
            let holder = ports.claims.holder(event_id).await?;
            let in_range = holder.as_deref().and_then(|h| {
                let seq = h.strip_prefix(&batch.shard_id)?.strip_prefix(':')?;
                let inside = compare_sequence(seq, &batch.start).is_ge()
                    && compare_sequence(seq, &batch.end).is_le();
                inside.then_some(seq)
            });
            let verdict = match (&holder, in_range) {
                (None, _) => Verdict::PutBack { release: false },
                (Some(_), None) => Verdict::Duplicate,
                (Some(_), Some(seq)) => {
                    let position = Position::new(&batch.shard_id, seq);
                    own_claim(ports.profiles, &customer, &position).await?
                }
            };
            found.push(Candidate {
                label: format!("archive:{key}#{line}"),
                partition_key: customer,
                data,
                verdict,
                holder: holder.unwrap_or_default(),
            });
        }
    }
    Ok(Ok(found))
}

fn event_id_of(data: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v["event_id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::memory::{MemoryClaims, MemoryProfileStore};
    use ember_core::profile::Profile;

    const SHARD: &str = "shardId-000000000000";

    fn record(seq: &str, id: &str) -> ShardRecord {
        ShardRecord {
            sequence_number: seq.into(),
            partition_key: "u-1".into(),
            data: serde_json::to_vec(&serde_json::json!({"event_id": id, "user_id": "u-1"}))
                .unwrap(),
        }
    }

    #[test]
    fn partition_keys_hash_as_kinesis_places_them() {
        // MD5 as a big-endian 128-bit number (RFC 1321's test vectors).
        assert_eq!(
            hash_key(""),
            u128::from_str_radix("d41d8cd98f00b204e9800998ecf8427e", 16).unwrap()
        );
        assert_eq!(
            hash_key("abc"),
            u128::from_str_radix("900150983cd24fb0d6963f7d28e17f72", 16).unwrap()
        );
    }

    #[test]
    fn lambdas_on_failure_record_is_read() {
        let body = serde_json::json!({
            "requestContext": {"condition": "RetryAttemptsExhausted"},
            "KinesisBatchInfo": {
                "shardId": SHARD, "startSequenceNumber": "100", "endSequenceNumber": "180",
                "approximateArrivalOfFirstRecord": "2026-11-20T10:00:00.000Z",
                "approximateArrivalOfLastRecord": "2026-11-20T10:00:01.000Z",
                "batchSize": 3, "streamArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s"
            }
        });
        let b = failed_batch_of(&body.to_string()).unwrap();
        assert_eq!(
            (b.start.as_str(), b.end.as_str(), b.size),
            ("100", "180", 3)
        );
        assert_eq!(b.condition, "RetryAttemptsExhausted");
        assert!(b.first_arrival.is_some());
        assert!(failed_batch_of("{}").unwrap_err().contains("shardId"));
        assert!(failed_batch_of("nope").unwrap_err().contains("JSON"));
    }

    #[tokio::test]
    async fn a_record_is_put_back_only_when_it_was_not_applied() {
        let claims = MemoryClaims::default();
        let store = MemoryProfileStore::default();
        let later = chrono::Utc::now() + chrono::Duration::days(1);
        let r = |seq, id| record(seq, id);
        // Never claimed, or released by enrich.
        let v = verdict(&claims, &store, SHARD, &r("100", "e1"))
            .await
            .unwrap();
        assert_eq!(v, Verdict::PutBack { release: false });
        // Held by another record.
        claims
            .claim("e2", &format!("{SHARD}:5"), later)
            .await
            .unwrap();
        let v = verdict(&claims, &store, SHARD, &r("110", "e2"))
            .await
            .unwrap();
        assert_eq!(v, Verdict::Duplicate);
        // Its own claim, the profile never got past it.
        claims
            .claim("e3", &format!("{SHARD}:120"), later)
            .await
            .unwrap();
        let v = verdict(&claims, &store, SHARD, &r("120", "e3"))
            .await
            .unwrap();
        assert_eq!(v, Verdict::PutBack { release: true });
        // Its own claim, the watermark past it: applied.
        let mut p = Profile::new("u-1");
        p.stream.advance(&Position::new(SHARD, "130"));
        store.put(&p, 0).await.unwrap();
        let v = verdict(&claims, &store, SHARD, &r("120", "e3"))
            .await
            .unwrap();
        assert_eq!(v, Verdict::Applied);
        let mut bad = r("140", "x");
        bad.data = b"{}".to_vec();
        let v = verdict(&claims, &store, SHARD, &bad).await.unwrap();
        assert!(matches!(v, Verdict::NotAnEvent(_)));
    }
}
