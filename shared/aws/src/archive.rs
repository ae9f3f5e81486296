//! The raw event archive on S3: every record of the event stream (accepted events and the
//! feedback function's), as Firehose delivers it (template `ArchiveDeliveryStream`), read back
//! for replay and rewritten for erasure.
//!
//! Layout: `events/date=YYYY-MM-DD/hour=HH/<name>.gz`: gzip-compressed JSON lines, one event
//! envelope per line exactly as the API put it on the stream, partitioned (Hive style, for
//! Athena and Glue) by the UTC hour the stream received the object's oldest record. JSON
//! lines rather than Parquet: the envelope's payload differs per event type, and a replay must
//! put back the very bytes the API accepted. Objects sort by name in delivery order.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};

use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};
use ember_core::ports::{Erasures, EventClaims, EventStream, PortError, PortResult, StreamRecord};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::stream::{self, StreamExt};

use crate::retry::classify;

/// Where the events are, in the bucket.
pub const PREFIX: &str = "events/";

/// The partition of records that reached the stream at `at`.
pub fn partition(at: DateTime<Utc>) -> String {
    format!(
        "{PREFIX}date={}/hour={:02}/",
        at.format("%Y-%m-%d"),
        at.hour()
    )
}

/// The start of the hour an object's partition names, if `key` is in the layout.
pub fn partition_hour(key: &str) -> Option<DateTime<Utc>> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix("date=")?;
    let (date, rest) = rest.split_once('/')?;
    let hour = rest.strip_prefix("hour=")?.split_once('/')?.0;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let at = date.and_hms_opt(hour.parse().ok()?, 0, 0)?;
    Some(Utc.from_utc_datetime(&at))
}

/// One object's body: the records as gzip-compressed JSON lines.
pub fn encode(records: &[Vec<u8>]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    for r in records {
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(r);
        let _ = gz.write_all(b"\n");
    }
    gz.finish().unwrap_or_default()
}

/// The records of an object's body. Records are whole JSON values, with or without a
/// newline between them (Firehose writes them back to back unless told to add one).
pub fn decode(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut text = Vec::new();
    GzDecoder::new(body)
        .read_to_end(&mut text)
        .map_err(|e| format!("not gzip: {e}"))?;
    let mut out = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(&text).into_iter::<serde_json::Value>();
    let mut start = 0;
    while let Some(value) = values.next() {
        value.map_err(|e| format!("not JSON at byte {start}: {e}"))?;
        let end = values.byte_offset();
        out.push(text[start..end].trim_ascii().to_vec());
        start = end;
    }
    Ok(out)
}

/// The partition key the API gave an event: the user id, else `anon:<anonymous id>`.
pub fn customer_of(event: &serde_json::Value) -> Option<String> {
    match event["user_id"].as_str().filter(|s| !s.is_empty()) {
        Some(user) => Some(user.to_owned()),
        None => anonymous_profile(&event["anonymous_id"]),
    }
}

/// The profile id of an anonymous id (`anon:<id>`), if `id` is a non-empty string.
fn anonymous_profile(id: &serde_json::Value) -> Option<String> {
    id.as_str()
        .filter(|s| !s.is_empty())
        .map(|a| format!("{}{a}", ember_core::event::ANON_PREFIX))
}

/// The S3 client the archive uses: path-style addressing, as emulators serve buckets under
/// their own host name.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// The archive bucket.
#[derive(Debug, Clone)]
pub struct Archive {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl Archive {
    pub fn from_conf(config: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        Self::new(s3_client(config), bucket)
    }

    /// With a client of the caller's (see [`s3_client`]).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Archive {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The objects whose partition hour overlaps `[from, to)` (either end open), in order.
    /// S3 lists keys in byte order, which is time order here: the listing starts at `from`'s
    /// partition and stops at the first key past `to`.
    pub async fn keys(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> PortResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        // A partition's own prefix sorts before every key in it.
        let start_after = from.map(|f| partition(f.with_minute(0).unwrap_or(f)));
        'pages: loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(PREFIX)
                .set_start_after(start_after.clone())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify(&e, "s3.list_objects_v2"))?;
            for o in out.contents() {
                let Some(key) = o.key() else { continue };
                let Some(hour) = partition_hour(key) else {
                    continue;
                };
                if to.is_some_and(|t| hour >= t) {
                    break 'pages;
                }
                if from.is_none_or(|f| hour + chrono::Duration::hours(1) > f) {
                    keys.push(key.to_owned());
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// The records of one object.
    pub async fn read(&self, key: &str) -> PortResult<Vec<Vec<u8>>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e, "s3.get_object"))?;
        let body = out.body.collect().await.map_err(|e| PortError::Transient {
            stage: "s3.get_object",
            reason: e.to_string(),
        })?;
        decode(&body.into_bytes()).map_err(|reason| PortError::Permanent {
            stage: "archive.decode",
            reason: format!("{key}: {reason}"),
        })
    }

    /// Writes (or replaces) one object with `records`.
    pub async fn write(&self, key: &str, records: &[Vec<u8>]) -> PortResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            .body(ByteStream::from(encode(records)))
            .send()
            .await
            .map_err(|e| classify(&e, "s3.put_object"))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> PortResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&e, "s3.delete_object"))?;
        Ok(())
    }
}

/// The objects and records of partition hours `[from, to)`.
pub async fn count(
    archive: &Archive,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> PortResult<(usize, usize)> {
    let keys = archive.keys(from, to).await?;
    let mut records = 0;
    for key in &keys {
        records += archive.read(key).await?.len();
    }
    Ok((keys.len(), records))
}

/// Which archived events a replay puts back, and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Partition hours overlapping `[from, to)`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only this customer's events (user id, or `anon:<anonymous id>`).
    pub customer: Option<String>,
    /// Only these event types (none: all).
    pub types: Vec<String>,
    /// Rebuild profiles deleted beforehand: each event id once (its first copy), its claim
    /// given up so enrich applies it again, marked `"replay": "rebuild"` so it publishes
    /// nothing. Without it a replay is a redelivery: what was applied is dropped.
    pub rebuild: bool,
    /// Say what would be put back, put nothing.
    pub dry_run: bool,
    /// The de-duplication window (`DedupWindowDays`): a plain replay leaves out objects older
    /// than it (less a day), whose claims may have expired; a rebuild takes them.
    pub dedup_window: Option<chrono::Duration>,
}

impl ReplayFilter {
    fn takes(&self, event: &serde_json::Value, customer: &str) -> bool {
        self.customer.as_ref().is_none_or(|c| c == customer)
            && (self.types.is_empty()
                || event["type"]
                    .as_str()
                    .is_some_and(|t| self.types.iter().any(|x| x == t)))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub objects: usize,
    pub records: usize,
    pub selected: usize,
    pub put: usize,
    /// Records not put back: unreadable, naming no customer, or the put failed (and, for
    /// that customer, every later record), with the reason.
    pub failed: Vec<String>,
}

/// Puts the archived events `filter` selects back on `stream`, object by object in delivery
/// order, each customer's in order (a customer whose record could not be put has none of its
/// later ones put). A plain replay is harmless for what was applied: each event id's claim
/// drops the copy. An erased customer's events are dropped by the tombstone either way.
pub async fn replay(
    archive: &Archive,
    stream: &impl EventStream,
    claims: &impl EventClaims,
    filter: &ReplayFilter,
) -> PortResult<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut blocked: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let oldest = filter
        .dedup_window
        .filter(|_| !filter.rebuild)
        .map(|w| Utc::now() - w + chrono::Duration::days(1));
    let keys = archive.keys(filter.from, filter.to).await?;
    // A rebuild holds what it selected, then puts each customer's events in event-time order,
    // an anonymous visitor's behind the key of the user who identified as them: the stream
    // orders records per key, not across shards, and the identify must come after them.
    let mut held: Vec<Held> = Vec::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for key in keys {
        if oldest.is_some_and(|o| partition_hour(&key).is_some_and(|h| h < o)) {
            let why = "older than the de-duplication window: its events could apply twice";
            report
                .failed
                .push(format!("{key}: {why} (replay it with a rebuild)"));
            continue;
        }
        report.objects += 1;
        let mut batch: Vec<StreamRecord> = Vec::new();
        for data in archive.read(&key).await? {
            report.records += 1;
            let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&data) else {
                report.failed.push(format!("{key}: a record is not JSON"));
                continue;
            };
            let Some(customer) = customer_of(&event) else {
                report
                    .failed
                    .push(format!("{key}: a record names no customer"));
                continue;
            };
            if filter.rebuild {
                // An identify names the anonymous id in its payload; other events may carry
                // both ids in the envelope.
                let anon = anonymous_profile(&event["payload"]["anonymous_id"])
                    .or_else(|| anonymous_profile(&event["anonymous_id"]));
                if let (Some(user), Some(anon)) = (event["user_id"].as_str(), anon) {
                    links.entry(anon).or_insert_with(|| user.to_owned());
                }
            }
            if !filter.takes(&event, &customer) || blocked.contains(&customer) {
                continue;
            }
            if !filter.rebuild {
                report.selected += 1;
                batch.push(StreamRecord {
                    partition_key: customer,
                    data,
                });
                continue;
            }
            let event_id = event["event_id"].as_str().unwrap_or_default().to_owned();
            if !seen.insert(event_id.clone()) {
                continue;
            }
            report.selected += 1;
            event["replay"] = serde_json::Value::from("rebuild");
            let at = event["occurred_at"]
                .as_str()
                .and_then(ember_core::event::read_timestamp);
            held.push(Held {
                route: customer,
                at,
                order: held.len(),
                event_id,
                data: serde_json::to_vec(&event).unwrap_or(data),
            });
        }
        if !filter.dry_run && !batch.is_empty() {
            // One call per object: the stream adapter keeps each key's order within it.
            put_in_order(stream, &batch, &key, &mut report, &mut blocked).await;
        }
    }
    if !filter.rebuild || filter.dry_run {
        return Ok(report);
    }
    for h in &mut held {
        if let Some(user) = links.get(&h.route) {
            h.route = user.clone();
        }
    }
    held.sort_by(|a, b| (&a.route, a.at, a.order).cmp(&(&b.route, b.at, b.order)));
    for chunk in held.chunks(crate::kinesis::MAX_RECORDS_PER_CALL) {
        // Their claims go first, so enrich applies them again (the profiles were deleted);
        // a few at a time, not one after another.
        let forgotten: Vec<PortResult<()>> = stream::iter(chunk)
            .map(|h| async move {
                if let Some(holder) = claims.holder(&h.event_id).await? {
                    claims.release(&h.event_id, &holder).await?;
                }
                Ok(())
            })
            .buffer_unordered(CLAIM_CONCURRENCY)
            .collect()
            .await;
        forgotten.into_iter().collect::<PortResult<()>>()?;
        let batch: Vec<StreamRecord> = chunk
            .iter()
            .filter(|h| !blocked.contains(&h.route))
            .map(|h| StreamRecord {
                partition_key: h.route.clone(),
                data: h.data.clone(),
            })
            .collect();
        put_in_order(stream, &batch, "rebuild", &mut report, &mut blocked).await;
    }
    Ok(report)
}

/// A record a rebuild holds until it has read its whole selection.
struct Held {
    route: String,
    at: Option<DateTime<Utc>>,
    order: usize,
    event_id: String,
    data: Vec<u8>,
}

/// Claims a rebuild gives up at once.
const CLAIM_CONCURRENCY: usize = 16;

/// Puts `batch` (each key's records in order); a key whose put failed has its later records
/// left out, here and in later batches.
async fn put_in_order(
    stream: &impl EventStream,
    batch: &[StreamRecord],
    what: &str,
    report: &mut ReplayReport,
    blocked: &mut HashSet<String>,
) {
    for (record, answer) in batch.iter().zip(stream.put(batch).await) {
        match answer {
            Ok(_) if !blocked.contains(&record.partition_key) => report.put += 1,
            Ok(_) => {}
            Err(e) => {
                report.failed.push(format!("{what}: {e}"));
                blocked.insert(record.partition_key.clone());
            }
        }
    }
}

/// What an erasure pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureReport {
    pub objects: usize,
    pub rewritten: usize,
    pub removed: usize,
}

impl ErasureReport {
    pub fn add(&mut self, other: &ErasureReport) {
        self.objects += other.objects;
        self.rewritten += other.rewritten;
        self.removed += other.removed;
    }
}

/// Objects an erasure pass reads and rewrites at the same time. Each is held decoded with
/// its rewrite, up to ~130 MB for Firehose's 64 MB buffer: eight fit the eraser's 2 GB.
pub const ERASE_CONCURRENCY: usize = 8;

/// Tombstone answers for one pass: each customer's is read once.
pub struct Tombstones<'a, E> {
    erasures: &'a E,
    known: std::sync::Mutex<HashMap<String, bool>>,
}

impl<'a, E: Erasures> Tombstones<'a, E> {
    pub fn new(erasures: &'a E) -> Self {
        Tombstones {
            erasures,
            known: Default::default(),
        }
    }

    async fn is_erased(&self, id: &str) -> PortResult<bool> {
        let cached = self.known.lock().ok().and_then(|k| k.get(id).copied());
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let hit = self.erasures.is_erased(id).await?;
        if let Ok(mut known) = self.known.lock() {
            known.insert(id.to_owned(), hit);
        }
        Ok(hit)
    }
}

/// Removes from the archive (objects from `from` on) every record of an erased customer:
/// its profile id (user id, or `anon:<anonymous id>`) or its anonymous id has a tombstone.
/// Objects holding none are left as they are; the others are rewritten without those
/// records (deleted if nothing is left).
pub async fn erase(
    archive: &Archive,
    erasures: &impl Erasures,
    from: Option<DateTime<Utc>>,
) -> PortResult<ErasureReport> {
    let keys = archive.keys(from, None).await?;
    erase_objects(archive, &keys, &Tombstones::new(erasures)).await
}

/// [`erase_object`] for each of `keys`, [`ERASE_CONCURRENCY`] at a time; every object is
/// done when it answers `Ok`.
pub async fn erase_objects<E: Erasures>(
    archive: &Archive,
    keys: &[String],
    tombstones: &Tombstones<'_, E>,
) -> PortResult<ErasureReport> {
    let mut report = ErasureReport::default();
    // Built up front: a closure here makes the future not `Send` for every lifetime.
    let objects: Vec<_> = keys
        .iter()
        .map(|key| erase_object(archive, key, tombstones))
        .collect();
    let mut done = stream::iter(objects).buffer_unordered(ERASE_CONCURRENCY);
    while let Some(object) = done.next().await {
        report.add(&object?);
    }
    Ok(report)
}

/// Rewrites one object without the records of erased customers.
pub async fn erase_object<E: Erasures>(
    archive: &Archive,
    key: &str,
    tombstones: &Tombstones<'_, E>,
) -> PortResult<ErasureReport> {
    let records = archive.read(key).await?;
    let before = records.len();
    let mut kept = Vec::with_capacity(before);
    for data in records {
        let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&data)
            .map(|event| {
                let anon = anonymous_profile(&event["anonymous_id"]);
                customer_of(&event).into_iter().chain(anon).collect()
            })
            .unwrap_or_default();
        let mut erased = false;
        for id in ids {
            erased |= tombstones.is_erased(&id).await?;
        }
        if !erased {
            kept.push(data);
        }
    }
    let mut report = ErasureReport {
        objects: 1,
        ..Default::default()
    };
    if kept.len() == before {
        return Ok(report);
    }
    report.rewritten = 1;
    report.removed = before - kept.len();
    if kept.is_empty() {
        archive.delete(key).await?;
    } else {
        archive.write(key, &kept).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_name_the_arrival_hour() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 7, 42, 0).unwrap();
        let p = partition(at);
        assert_eq!(p, "events/date=2026-12-05/hour=07/");
        assert_eq!(
            partition_hour(&format!("{p}x.gz")),
            Some(Utc.with_ymd_and_hms(2026, 12, 5, 7, 0, 0).unwrap())
        );
        assert_eq!(partition_hour("errors/x.gz"), None);
        assert_eq!(partition_hour("events/date=2026-13-01/hour=00/x"), None);
    }

    #[test]
    fn objects_round_trip_with_or_without_newlines() {
        let records = vec![br#"{"a":1}"#.to_vec(), br#"{"b":"x\ny"}"#.to_vec()];
        assert_eq!(decode(&encode(&records)).unwrap(), records);
        // Firehose without a delimiter: values back to back.
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"a":1}{"b":"x\ny"}"#).unwrap();
        assert_eq!(decode(&gz.finish().unwrap()).unwrap(), records);
        assert!(decode(b"plain").unwrap_err().contains("gzip"));
    }

    #[test]
    fn a_record_belongs_to_its_user_else_its_anonymous_id() {
        let e = serde_json::json!({"user_id": "u-1", "anonymous_id": "a-1"});
        assert_eq!(customer_of(&e).as_deref(), Some("u-1"));
        let e = serde_json::json!({"user_id": "", "anonymous_id": "a-1"});
        assert_eq!(customer_of(&e).as_deref(), Some("anon:a-1"));
        assert_eq!(customer_of(&serde_json::json!({})), None);
    }
}
