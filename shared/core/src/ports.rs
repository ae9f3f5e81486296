//! Narrow ports between the domain and the outside world. Implementations for DynamoDB,
//! EventBridge, SQS, Kinesis and SESv2 live in `ember-aws`; tests may use the real ones
//! against an emulator.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::profile::{Profile, Tally};

/// Why a port call failed, reduced to what the caller must decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Optimistic version check failed: someone else wrote first. Re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Throttling, 5xx, timeouts: the same call may succeed later.
    #[error("transient failure in {stage}: {reason}")]
    Transient { stage: &'static str, reason: String },
    /// The request itself is wrong (validation, missing resource, invalid address).
    #[error("permanent failure in {stage}: {reason}")]
    Permanent { stage: &'static str, reason: String },
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PortError::Permanent { .. })
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// Events Ember publishes on its custom EventBridge bus (`source` = `ember.enrich`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detail_type", content = "detail")]
pub enum BusEvent {
    SegmentEntered(SegmentChange),
    SegmentExited(SegmentChange),
    /// The cart's content changed; the email function schedules the abandonment re-check.
    CartUpdated(CartChange),
    /// A configuration version was published (by the admin API): the re-evaluation backfills
    /// existing profiles with it.
    ConfigPublished(ConfigChange),
}

impl BusEvent {
    /// The `source` of the profile events (enrich and the re-evaluation).
    pub const SOURCE: &'static str = "ember.enrich";
    /// The `source` of the admin API's events.
    pub const ADMIN_SOURCE: &'static str = "ember.api";

    /// The EventBridge `source`.
    pub fn source(&self) -> &'static str {
        match self {
            BusEvent::ConfigPublished(_) => BusEvent::ADMIN_SOURCE,
            _ => BusEvent::SOURCE,
        }
    }

    /// The EventBridge `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            BusEvent::SegmentEntered(_) => "SegmentEntered",
            BusEvent::SegmentExited(_) => "SegmentExited",
            BusEvent::CartUpdated(_) => "CartUpdated",
            BusEvent::ConfigPublished(_) => "ConfigPublished",
        }
    }

    /// The event's deterministic id (consumers de-duplicate on it).
    pub fn id(&self) -> &str {
        match self {
            BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => &c.id,
            BusEvent::CartUpdated(c) => &c.id,
            BusEvent::ConfigPublished(c) => &c.id,
        }
    }

    /// The trace of the request that caused a segment change (W3C `traceparent`), if any.
    pub fn trace(&self) -> Option<&str> {
        match self {
            BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => c.trace.as_deref(),
            _ => None,
        }
    }

    /// The EventBridge `detail` as JSON.
    pub fn detail_json(&self) -> String {
        let v = match self {
            BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => serde_json::to_string(c),
            BusEvent::CartUpdated(c) => serde_json::to_string(c),
            BusEvent::ConfigPublished(c) => serde_json::to_string(c),
        };
        v.unwrap_or_else(|_| "{}".to_owned())
    }

    /// Rebuilds a bus event from an EventBridge `detail-type` and `detail`.
    pub fn from_parts(detail_type: &str, detail: serde_json::Value) -> Option<BusEvent> {
        match detail_type {
            "SegmentEntered" => serde_json::from_value(detail)
                .ok()
                .map(BusEvent::SegmentEntered),
            "SegmentExited" => serde_json::from_value(detail)
                .ok()
                .map(BusEvent::SegmentExited),
            "CartUpdated" => serde_json::from_value(detail)
                .ok()
                .map(BusEvent::CartUpdated),
            "ConfigPublished" => serde_json::from_value(detail)
                .ok()
                .map(BusEvent::ConfigPublished),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentChange {
    /// Deterministic id: `<profile id>:<segment>:<entered|exited>:<profile version>`.
    pub id: String,
    pub profile_id: String,
    pub segment: String,
    /// When the change happened (occurred-at of the event that caused it, or evaluation time).
    pub at: DateTime<Utc>,
    pub profile_version: u64,
    /// The event id that caused the change, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_event_id: Option<String>,
    /// The configuration version whose rules decided it (0: the built-in rules).
    #[serde(default)]
    pub config_version: u64,
    /// Found by the re-evaluation a configuration publish started, not caused by the
    /// customer: campaigns send on it only if they say so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
    /// When the cause event arrived on the stream: where the ingest→email latency starts.
    /// Kept by the outbox, so a republish carries it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at: Option<DateTime<Utc>>,
    /// The cause event's W3C `traceparent` ([`crate::trace`]), likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// What decided a segment change besides the profile: the configuration version, and
/// whether the change is a backfill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decided {
    pub config_version: u64,
    pub backfill: bool,
}

/// A published configuration version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// `config:<version>`.
    pub id: String,
    pub version: u64,
    /// The version it replaced.
    pub based_on: u64,
    pub at: DateTime<Utc>,
    /// What changed (`segments/<name>`, `campaigns/<name>`, `templates/<name>`, `rollback`).
    #[serde(default)]
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartChange {
    pub id: String,
    pub profile_id: String,
    pub updated_at: DateTime<Utc>,
    pub item_count: u32,
    pub value_minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub profile_version: u64,
}

/// A record that will not be retried, with its raw bytes and the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from: `kinesis:<shard>:<sequence number>`, `http:<request id>`, …
    pub origin: String,
    /// Which stage rejected it: `decode`, `validate`, `enrich`, `fold`, `publish`, …
    pub stage: String,
    pub reason: String,
    /// The raw record, base64-encoded so any bytes survive.
    pub raw_base64: String,
    pub at: DateTime<Utc>,
}

/// One record for the event stream (Kinesis PutRecords).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// An outgoing email, fully rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailMessage {
    pub to: String,
    pub from: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Extra headers, e.g. `List-Unsubscribe` and `List-Unsubscribe-Post`.
    pub headers: Vec<(String, String)>,
    /// Message tags (SES `EmailTags`), e.g. `campaign`, `profile_id`; come back in feedback.
    pub tags: Vec<(String, String)>,
}

/// The argument check every [`ProfileStore::scan`] makes: segment `segment` of `total` must
/// exist (`segment < total`).
pub fn check_scan_segment(segment: u32, total: u32, stage: &'static str) -> PortResult<()> {
    if total == 0 || segment >= total {
        return Err(PortError::Permanent {
            stage,
            reason: format!("scan segment {segment} of {total} does not exist"),
        });
    }
    Ok(())
}

#[async_trait]
pub trait ProfileStore: Send + Sync {
    async fn get(&self, id: &str) -> PortResult<Option<Profile>>;
    /// Writes `profile` if the stored version is still `expected_version` (0 = must not exist).
    /// The stored version becomes `profile.version`; callers bump it before calling.
    async fn put(&self, profile: &Profile, expected_version: u64) -> PortResult<()>;
    /// [`ProfileStore::put`], adding `tallies` to the campaign report counters in the same
    /// transaction: the counters move exactly when the profile write happens, so a fold that
    /// is applied once is counted once.
    async fn put_tallied(
        &self,
        profile: &Profile,
        expected_version: u64,
        tallies: &[Tally],
    ) -> PortResult<()>;
    async fn delete(&self, id: &str) -> PortResult<bool>;
    /// One page of a parallel scan: segment `segment` of `total` (DynamoDB `Segment` /
    /// `TotalSegments`), starting after the cursor `start` (`None` = from the beginning).
    /// Returns the page's profiles and the cursor of the next page (`None` = segment done).
    async fn scan(
        &self,
        segment: u32,
        total: u32,
        start: Option<String>,
    ) -> PortResult<(Vec<Profile>, Option<String>)>;
}

/// The answer to an event-id claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The id was free, or is already held by the same origin (a retry of that very record,
    /// or a claim whose answer was lost and was retried): fold the event.
    Granted,
    /// Another record holds the id within the window: the event is a duplicate.
    Held,
}

/// Event ids remembered for a bounded time, each with the origin (the stream position of the
/// record) that first carried it. This is how a re-sent event id, a redelivered webhook or a
/// `PutRecords` retried after a lost answer is recognised days later without the profile
/// growing with the customer's history.
#[async_trait]
pub trait EventClaims: Send + Sync {
    /// Claims `event_id` for `origin` until `expires_at`. Granted again to the same origin, so
    /// a retried record, or a retried request whose first answer was lost, is never taken for
    /// a duplicate of itself.
    async fn claim(
        &self,
        event_id: &str,
        origin: &str,
        expires_at: DateTime<Utc>,
    ) -> PortResult<Claim>;
    /// Gives up `origin`'s claim (its record was dead-lettered, so a redrive may apply it).
    /// No effect on a claim another origin holds.
    async fn release(&self, event_id: &str, origin: &str) -> PortResult<()>;
    /// The origin holding an unexpired claim on `event_id`, if any (what a redrive of failed
    /// records asks before putting one back).
    async fn holder(&self, event_id: &str) -> PortResult<Option<String>>;
}

/// Erased customers. Erasure leaves a tombstone per profile id (kept as a hash: the id may be
/// an email address), and every writer that would create a profile, or a record about one,
/// checks it first, so an old unsubscribe link, a late SES open or a replayed event never
/// brings an erased customer back.
#[async_trait]
pub trait Erasures: Send + Sync {
    async fn is_erased(&self, profile_id: &str) -> PortResult<bool>;
    async fn mark_erased(&self, profile_id: &str, at: DateTime<Utc>) -> PortResult<()>;
}

/// The ledger record of a profile's tombstone: `erased#<sha-256 of the id>`, `tombstone`.
pub fn tombstone_key(profile_id: &str) -> (String, &'static str) {
    (format!("erased#{}", id_digest(profile_id)), "tombstone")
}

/// The ledger partition of the archive's erasure passes (`ember_aws::archive_erasure`).
pub const ARCHIVE_ERASURE_PK: &str = "archive-erasure";
/// Sort-key prefix of the erasures the archive has not been cleared of yet.
pub const ARCHIVE_ERASURE_PENDING: &str = "pending#";

/// The ledger record saying the archive still holds `profile_id`'s events, in time order:
/// `archive-erasure`, `pending#<at>#<sha-256 of the id>`.
pub fn archive_erasure_pending_key(profile_id: &str, at: DateTime<Utc>) -> (&'static str, String) {
    (
        ARCHIVE_ERASURE_PK,
        format!(
            "{ARCHIVE_ERASURE_PENDING}{}#{}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            id_digest(profile_id)
        ),
    )
}

/// Ids are kept hashed wherever they outlive the profile.
fn id_digest(profile_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(profile_id.as_bytes()))
}

/// Tombstones live in the ledger.
#[async_trait]
impl<L: Ledger + ?Sized> Erasures for L {
    async fn is_erased(&self, profile_id: &str) -> PortResult<bool> {
        let (pk, sk) = tombstone_key(profile_id);
        Ok(self.get(&pk, sk).await?.is_some())
    }

    async fn mark_erased(&self, profile_id: &str, at: DateTime<Utc>) -> PortResult<()> {
        let (pk, sk) = tombstone_key(profile_id);
        let attrs = serde_json::json!({"at": at.to_rfc3339()});
        // No expiry: it must outlive every copy that could replay the id.
        self.claim(&pk, sk, &attrs, None).await?;
        // The archive's copies go on the next erasure pass.
        let (pk, sk) = archive_erasure_pending_key(profile_id, at);
        self.claim(pk, &sk, &attrs, None).await.map(|_| ())
    }
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes all events (batched ≤10 per call, failed entries retried). Returns, per input
    /// event, `Ok` or the error that remained after retries.
    async fn publish(&self, events: &[BusEvent]) -> Vec<PortResult<()>>;
}

#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    async fn send(&self, letters: &[DeadLetter]) -> PortResult<()>;
}

#[async_trait]
pub trait EventStream: Send + Sync {
    /// Puts records (≤500 per call, failed records retried with backoff). Returns, per input
    /// record, its sequence number or the error that remained.
    async fn put(&self, records: &[StreamRecord]) -> Vec<PortResult<String>>;
}

/// Why a send failed, as far as the sender can know. A send has no idempotency key, so a
/// request whose answer is missing must never be repeated automatically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider refused the request: nothing was sent. Retryable or not as the error says.
    #[error("not sent: {0}")]
    NotSent(PortError),
    /// The request may have been accepted (a timeout, a lost answer, a provider failure):
    /// whether an email went out is unknown.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends one email; returns the provider's message id.
    async fn send(&self, message: &EmailMessage) -> Result<String, SendError>;
}

/// Small keyed records with optional expiry: idempotency keys, send ledger, frequency caps,
/// suppressions, timers. Backed by the DynamoDB ledger table (`pk`, `sk`, TTL `expires_at`).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Creates the record if absent. `Ok(true)` if created now, `Ok(false)` if it existed.
    async fn claim(
        &self,
        pk: &str,
        sk: &str,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool>;
    async fn get(&self, pk: &str, sk: &str) -> PortResult<Option<serde_json::Value>>;
    /// Records under `pk` whose sort key starts with `sk_prefix`, in sort-key order.
    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
    ) -> PortResult<Vec<(String, serde_json::Value)>>;
    /// Atomically increments counter `count` if it is below `limit`; `Ok(false)` if at limit.
    async fn increment_below(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool>;
    async fn delete(&self, pk: &str, sk: &str) -> PortResult<()>;
    /// Compare-and-set: replaces the record's attributes with `attrs` if it holds every
    /// attribute of `expected` with those values, or already holds every attribute of
    /// `attrs` (a retry of a call whose answer was lost). `Ok(false)` otherwise, or if the
    /// record does not exist.
    async fn replace_if(
        &self,
        pk: &str,
        sk: &str,
        expected: &serde_json::Value,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool>;
}
