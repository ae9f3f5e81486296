//! The customer profile: one DynamoDB item per profile key, versioned for optimistic locking.
//!
//! Field layout is the contract between enrichment (the only writer of traits), the email
//! function and the API's export/erasure endpoints. Folding events in lives in `fold.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::BusEvent;

/// How many processed event ids a profile remembers for de-duplication.
pub const RECENT_EVENT_IDS: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// User id, or `anon:<anonymous id>` for visitors not identified yet.
    pub id: String,
    /// Incremented on every write; 0 means "never stored".
    pub version: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    /// Number of events seen per event type name.
    pub counts: BTreeMap<String, u64>,
    pub purchase_count: u64,
    /// Sum of purchase amounts in minor units of `currency`.
    pub purchase_total_minor: i64,
    pub currency: Option<String>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub last_checkout_at: Option<DateTime<Utc>>,
    /// Per-day buckets (`YYYY-MM-DD`, UTC) kept for the rolling 7/30-day windows.
    pub daily: BTreeMap<String, DayCounters>,
    /// Time-decayed heat preference in Scoville heat units.
    pub heat: Option<DecayedValue>,
    pub cart: Cart,
    /// Consent per channel (`email`, `sms`, `push`, …).
    pub consent: BTreeMap<String, Consent>,
    /// Anonymous ids merged into this profile by `identify` events.
    pub anonymous_ids: BTreeSet<String>,
    /// Set on an anonymous profile once it has been merged into a user profile.
    pub merged_into: Option<String>,
    /// Latest answer per poll question id.
    pub poll_answers: BTreeMap<String, String>,
    /// Last-touch UTM parameters.
    pub utm: BTreeMap<String, String>,
    /// Last device class seen (`mobile`, `tablet`, `desktop`, `bot`, `unknown`).
    pub device: Option<String>,
    pub email_status: EmailStatus,
    /// Segments the profile is currently in.
    pub segments: BTreeSet<String>,
    /// Bus events written but not yet confirmed as published (outbox); re-published on retry.
    pub outbox: Vec<BusEvent>,
    /// The most recent processed event ids, oldest first, at most [`RECENT_EVENT_IDS`].
    pub recent_event_ids: EventIds,
    /// Purchase totals in minor units per currency; `purchase_total_minor` is the entry for
    /// `currency` (the currency of the latest purchase).
    pub purchase_totals_minor: BTreeMap<String, i64>,
    /// When each last-writer-wins trait was last set (event `occurred_at`): `email`, `name`,
    /// `timezone`, `utm`, `device`, `poll:<question id>`.
    pub trait_times: BTreeMap<String, DateTime<Utc>>,
    /// Ids of (anonymous) profiles already merged into this one; merging is idempotent.
    pub merged_profiles: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DayCounters {
    pub events: u64,
    pub page_views: u64,
    pub product_views: u64,
    pub purchases: u64,
    pub revenue_minor: i64,
}

/// An exponentially time-decayed average: `sum / weight`, both decayed to `as_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecayedValue {
    pub weighted_sum: f64,
    pub weight: f64,
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cart {
    /// Items by SKU.
    pub items: BTreeMap<String, CartItem>,
    pub currency: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CartItem {
    pub name: String,
    pub quantity: u32,
    pub unit_price_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consent {
    pub granted: bool,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailStatus {
    /// `hard_bounce`, `complaint`, `erasure`, … once the address must not be mailed again.
    pub suppressed: Option<String>,
    pub suppressed_at: Option<DateTime<Utc>>,
    pub last_clicked_campaign: Option<String>,
    pub last_clicked_at: Option<DateTime<Utc>>,
    /// Purchases attributed to a campaign clicked within the attribution window, by campaign.
    pub attributed_purchases: BTreeMap<String, u64>,
    pub attributed_revenue_minor: BTreeMap<String, i64>,
}

impl Profile {
    pub fn new(id: impl Into<String>) -> Self {
        Profile {
            id: id.into(),
            ..Default::default()
        }
    }

    pub fn cart_value_minor(&self) -> i64 {
        self.cart
            .items
            .values()
            .map(|i| i.unit_price_minor * i64::from(i.quantity))
            .sum()
    }

    pub fn has_consent(&self, channel: &str) -> bool {
        self.consent.get(channel).is_some_and(|c| c.granted)
    }

    /// The decayed heat preference in SHU at its `as_of` time, if any was ever stated.
    pub fn heat_shu(&self) -> Option<f64> {
        self.heat
            .as_ref()
            .filter(|h| h.weight > 0.0)
            .map(|h| h.weighted_sum / h.weight)
    }
}

/// The most recent processed event ids, oldest first, at most a bound; with a hash index so
/// the duplicate check on the hot path is O(1). Stored (and compared) as the ordered list.
/// The list and the index share each id (one allocation per remembered event). The index
/// hashes with foldhash (seeded per process), several times cheaper than SipHash on ids this
/// short; its output never leaves the process.
#[derive(Debug, Clone, Default)]
pub struct EventIds {
    order: VecDeque<Arc<str>>,
    index: foldhash::HashSet<Arc<str>>,
}

impl EventIds {
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains(id)
    }

    /// Remembers `id` (if new), dropping the oldest ids beyond `bound`.
    pub fn push(&mut self, id: &str, bound: usize) {
        if self.index.contains(id) {
            return;
        }
        self.insert(Arc::from(id));
        while self.order.len() > bound {
            if let Some(old) = self.order.pop_front() {
                self.index.remove(&old);
            }
        }
    }

    /// Appends `id` unless the index has it; hashes it once.
    fn insert(&mut self, id: Arc<str>) {
        if self.index.insert(Arc::clone(&id)) {
            self.order.push_back(id);
        }
    }

    fn with_capacity(n: usize) -> Self {
        EventIds {
            order: VecDeque::with_capacity(n),
            index: foldhash::HashSet::with_capacity_and_hasher(n, Default::default()),
        }
    }

    /// The ring in its packed binary form, under half the list's size for UUID ids:
    /// a format byte ([`PACKED_FORMAT`]), then per id, oldest first, a LEB128 number `n`:
    /// `n = 0` is followed by the 16 bytes of a UUID whose id was its canonical text
    /// (lower-case, hyphenated, as the API assigns), any other `n` by the `n - 1` bytes of
    /// the id as it was. Exact: [`EventIds::unpack`] gives back the same ids in order.
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.order.len() * 17);
        out.push(PACKED_FORMAT);
        for id in self.iter() {
            match canonical_uuid(id) {
                Some(uuid) => {
                    out.push(0);
                    out.extend_from_slice(&uuid);
                }
                None => {
                    push_leb128(&mut out, id.len() as u64 + 1);
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
        out
    }

    /// Reads [`EventIds::pack`]'s form back; a repeated id keeps its first position, as
    /// when reading the list. Says what is wrong with bytes that are not that form.
    pub fn unpack(bytes: &[u8]) -> Result<EventIds, String> {
        let (&format, mut rest) = bytes.split_first().ok_or("packed event ids: empty")?;
        if format != PACKED_FORMAT {
            return Err(format!("packed event ids: unknown format {format}"));
        }
        // Every entry takes at least one byte; UUIDs, the usual case, 17.
        let mut out = EventIds::with_capacity(rest.len().div_ceil(17));
        while !rest.is_empty() {
            let n = read_leb128(&mut rest)?;
            let id: Arc<str> = if n == 0 {
                let (raw, tail) = rest
                    .split_first_chunk::<16>()
                    .ok_or("packed event ids: a UUID is cut short")?;
                rest = tail;
                let text = uuid_text(raw);
                // Hex digits and hyphens: always UTF-8.
                Arc::from(std::str::from_utf8(&text).unwrap_or_default())
            } else {
                let len = usize::try_from(n - 1)
                    .ok()
                    .filter(|&len| len <= rest.len())
                    .ok_or("packed event ids: an id is cut short")?;
                let (raw, tail) = rest.split_at(len);
                rest = tail;
                let text =
                    std::str::from_utf8(raw).map_err(|_| "packed event ids: an id is not UTF-8")?;
                Arc::from(text)
            };
            out.insert(id);
        }
        Ok(out)
    }

    /// Runs `f` with every [`EventIds`] it serializes written as [`EventIds::pack`]'s bytes
    /// instead of a list of strings: what a store with binary attributes (DynamoDB) wraps
    /// its encoder in. Other serialization (the JSON export) keeps the readable list;
    /// reading accepts both forms always.
    pub fn serialize_packed<R>(f: impl FnOnce() -> R) -> R {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                PACKED.set(self.0);
            }
        }
        let _restore = Restore(PACKED.replace(true));
        f()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn front(&self) -> Option<&str> {
        self.order.front().map(as_str)
    }

    pub fn back(&self) -> Option<&str> {
        self.order.back().map(as_str)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.into_iter()
    }
}

/// Format byte of [`EventIds::pack`]'s form.
pub const PACKED_FORMAT: u8 = 1;

thread_local! {
    /// Set while [`EventIds::serialize_packed`] runs.
    static PACKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The text of a UUID as the API writes it (lower-case, hyphenated): 36 bytes, hyphens at
/// these positions, lower-case hex digits at [`UUID_DIGITS`].
const UUID_TEXT_LEN: usize = 36;
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];
/// Where the 32 hex digits of a UUID's text are, most significant first.
const UUID_DIGITS: [usize; 32] = {
    let mut at = [0; 32];
    let (mut digit, mut i) = (0, 0);
    while digit < 32 {
        if i != 8 && i != 13 && i != 18 && i != 23 {
            at[digit] = i;
            digit += 1;
        }
        i += 1;
    }
    at
};
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The 16 bytes of the UUID whose canonical text `id` is, if it is one (an upper-case or
/// otherwise spelled UUID is not: it would not read back as the same text). Hand-written
/// rather than `uuid`/`hex` calls because it runs for every id of a stored ring, and those
/// crates are built for size (section 4 of BENCHMARKS.md), several times slower here.
fn canonical_uuid(id: &str) -> Option<[u8; 16]> {
    /// The value of each lower-case hex digit; 0xff for every other byte. A table, not a
    /// `match`: random hex digits make the digit-or-letter branch unpredictable.
    const NIBBLE: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut i = 0;
        while i < 16 {
            table[HEX_DIGITS[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    let text: &[u8; UUID_TEXT_LEN] = id.as_bytes().try_into().ok()?;
    if UUID_HYPHENS.iter().any(|&i| text[i] != b'-') {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut invalid = 0;
    for (k, byte) in bytes.iter_mut().enumerate() {
        let high = NIBBLE[usize::from(text[UUID_DIGITS[2 * k]])];
        let low = NIBBLE[usize::from(text[UUID_DIGITS[2 * k + 1]])];
        invalid |= high | low;
        *byte = (high << 4) | (low & 15);
    }
    (invalid & 0xf0 == 0).then_some(bytes)
}

/// The canonical text of the UUID `bytes`.
fn uuid_text(bytes: &[u8; 16]) -> [u8; UUID_TEXT_LEN] {
    let mut text = [b'-'; UUID_TEXT_LEN];
    for (k, byte) in bytes.iter().enumerate() {
        text[UUID_DIGITS[2 * k]] = HEX_DIGITS[usize::from(byte >> 4)];
        text[UUID_DIGITS[2 * k + 1]] = HEX_DIGITS[usize::from(byte & 15)];
    }
    text
}

fn push_leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_leb128(rest: &mut &[u8]) -> Result<u64, String> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest
            .split_first()
            .ok_or("packed event ids: a length is cut short")?;
        *rest = tail;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err("packed event ids: a length is too long".into())
}

fn as_str(id: &Arc<str>) -> &str {
    id
}

impl PartialEq for EventIds {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Serialize for EventIds {
    /// The list of ids, oldest first; inside [`EventIds::serialize_packed`], the packed bytes.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if PACKED.get() {
            serializer.serialize_bytes(&self.pack())
        } else {
            serializer.collect_seq(self.iter())
        }
    }
}

impl<'de> Deserialize<'de> for EventIds {
    /// Either stored form: the list of ids, or the packed bytes ([`EventIds::pack`]).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventIdsVisitor)
    }
}

struct EventIdsVisitor;

impl<'de> serde::de::Visitor<'de> for EventIdsVisitor {
    type Value = EventIds;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of event ids or their packed bytes")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EventIds, A::Error> {
        // A stored ring is usually full (1,000 ids): size both halves once.
        let mut out = EventIds::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(id) = seq.next_element::<String>()? {
            out.insert(Arc::from(id));
        }
        Ok(out)
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<EventIds, E> {
        EventIds::unpack(bytes).map_err(E::custom)
    }
}

impl<'a> IntoIterator for &'a EventIds {
    type Item = &'a str;
    type IntoIter =
        std::iter::Map<std::collections::vec_deque::Iter<'a, Arc<str>>, fn(&Arc<str>) -> &str>;
    fn into_iter(self) -> Self::IntoIter {
        self.order.iter().map(as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stored_as_their_ordered_list_and_read_back_with_their_index() {
        let mut ids = EventIds::default();
        for id in ["e1", "e2", "e3", "e2"] {
            ids.push(id, 3);
        }
        ids.push("e4", 3);
        let stored = serde_json::to_string(&ids).unwrap();
        assert_eq!(
            stored, r#"["e2","e3","e4"]"#,
            "oldest first, bounded, no repeats"
        );
        let back: EventIds = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, ids);
        assert!(back.contains("e3") && !back.contains("e1"));

        // A stored list with a repeated id (written by hand, or by an older version) keeps
        // the id once, at its first position, and the index agrees with the list.
        let back: EventIds = serde_json::from_str(r#"["a","b","a","c"]"#).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(back.len(), 3);
        let mut more = back.clone();
        more.push("a", 10);
        assert_eq!(more, back, "a known id is not remembered twice");
        more.push("d", 3);
        assert_eq!(more.iter().collect::<Vec<_>>(), ["b", "c", "d"]);
        assert!(!more.contains("a"), "the dropped id left the index too");
    }

    #[test]
    fn packed_event_ids_give_back_the_same_ids_in_order() {
        let uuid = "0b6f3c2e-8d1a-4f5b-9c7e-2a4d6e8f0a1b";
        let upper = "0B6F3C2E-8D1A-4F5B-9C7E-2A4D6E8F0A1C";
        let long = "x".repeat(200);
        let mut ids = EventIds::default();
        for id in [
            uuid,
            upper,
            "evt-7-004032",
            "",
            "stripe:evt.1",
            long.as_str(),
            "é",
        ] {
            ids.push(id, 10);
        }
        let packed = ids.pack();
        assert_eq!(packed[0], PACKED_FORMAT);
        // The canonical UUID takes 1 + 16 bytes, the upper-case one is kept as text
        // (1 + 36), the 200-byte id needs a two-byte length.
        let expected = 1 + 17 + 37 + 13 + 1 + 13 + 202 + 3;
        assert_eq!(packed.len(), expected);
        assert_eq!(&packed[1..3], &[0, 0x0b]);
        let back = EventIds::unpack(&packed).unwrap();
        assert_eq!(back, ids);
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
        assert!(back.contains(uuid) && back.contains(upper) && back.contains(""));
        assert!(!back.contains(&uuid.to_uppercase()), "case is kept exactly");

        // A full ring of UUIDs: 17 bytes an id against 37 in a list of strings.
        let mut full = EventIds::default();
        for i in 0..RECENT_EVENT_IDS as u128 {
            full.push(
                &uuid::Uuid::from_u128(i * 0x9e37_79b9_7f4a_7c15).to_string(),
                RECENT_EVENT_IDS,
            );
        }
        assert_eq!(full.pack().len(), 1 + 17 * RECENT_EVENT_IDS);
        assert_eq!(EventIds::unpack(&full.pack()).unwrap(), full);
    }

    #[test]
    fn packed_event_ids_that_are_damaged_are_refused_with_a_reason() {
        let mut ids = EventIds::default();
        ids.push("0b6f3c2e-8d1a-4f5b-9c7e-2a4d6e8f0a1b", 10);
        ids.push("evt-1", 10);
        let packed = ids.pack();
        let cases: [(&[u8], &str); 6] = [
            (&[], "empty"),
            (&[9, 0], "unknown format 9"),
            (&packed[..10], "a UUID is cut short"),
            (&packed[..packed.len() - 1], "an id is cut short"),
            (&[PACKED_FORMAT, 2, 0xff], "not UTF-8"),
            (
                &[
                    PACKED_FORMAT,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                    0x80,
                ],
                "too long",
            ),
        ];
        for (bytes, reason) in cases {
            let err = EventIds::unpack(bytes).unwrap_err();
            assert!(err.contains(reason), "{bytes:?}: {err}");
        }
        assert!(EventIds::unpack(&[PACKED_FORMAT]).unwrap().is_empty());
    }

    #[test]
    fn event_ids_serialize_packed_only_inside_serialize_packed() {
        let mut ids = EventIds::default();
        ids.push("e1", 10);
        let list = serde_json::to_string(&ids).unwrap();
        assert_eq!(list, r#"["e1"]"#);
        let packed = EventIds::serialize_packed(|| {
            // Nested calls keep the mode until the outermost one ends.
            EventIds::serialize_packed(|| ());
            serde_json::to_string(&ids).unwrap()
        });
        assert_eq!(packed, format!("{:?}", ids.pack()).replace(' ', ""));
        assert_eq!(
            serde_json::to_string(&ids).unwrap(),
            list,
            "the mode ends with the call"
        );
    }
}
