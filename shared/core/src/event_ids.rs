//! [`EventIds`]: the ring of a profile's most recent event ids that de-duplication checks,
//! and its packed stored form.
//!
//! Most ids are UUIDs in their canonical text (lower-case, hyphenated): the HTTP API assigns
//! them, webhook events derive them, and the envelope schema recommends them. Such an id is
//! kept as its 16 bytes, in memory and in the stored form; any other id is kept as its text.
//! Both are exact: an id reads back as the same text, so an upper-case UUID stays text.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Format byte of [`EventIds::pack`]'s form.
pub const PACKED_FORMAT: u8 = 1;

/// The most recent processed event ids, oldest first, at most a bound; with hash indexes so
/// the duplicate check on the hot path is O(1). Stored (and compared) as the ordered list.
/// A UUID id costs no allocation; any other id one, shared by the list and its index. The
/// indexes hash with foldhash (seeded per process), several times cheaper than SipHash on
/// ids this short; their output never leaves the process.
#[derive(Debug, Clone, Default)]
pub struct EventIds {
    order: VecDeque<Id>,
    uuids: foldhash::HashSet<[u8; 16]>,
    texts: foldhash::HashSet<Arc<str>>,
}

/// One remembered id. `Text` never holds a canonical UUID (that is `Uuid`), so each id has
/// one form and one index to look in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    Uuid([u8; 16]),
    Text(Arc<str>),
}

impl Id {
    fn text(&self) -> Cow<'_, str> {
        match self {
            Id::Uuid(bytes) => Cow::Owned(uuid_text(bytes)),
            Id::Text(text) => Cow::Borrowed(text),
        }
    }
}

/// An id to look up or remember, in the form it is kept in.
enum Key<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl Key<'_> {
    fn of(id: &str) -> Key<'_> {
        canonical_uuid(id).map_or(Key::Text(id), Key::Uuid)
    }
}

impl EventIds {
    pub fn contains(&self, id: &str) -> bool {
        match Key::of(id) {
            Key::Uuid(bytes) => self.uuids.contains(&bytes),
            Key::Text(text) => self.texts.contains(text),
        }
    }

    /// Remembers `id` (if new), dropping the oldest ids beyond `bound`. Whether it was new:
    /// the duplicate check and the remembering in one lookup.
    pub fn push(&mut self, id: &str, bound: usize) -> bool {
        let added = match Key::of(id) {
            Key::Uuid(bytes) => self.insert(Id::Uuid(bytes)),
            Key::Text(text) => !self.texts.contains(text) && self.insert(Id::Text(text.into())),
        };
        if added {
            self.trim(bound);
        }
        added
    }

    /// Remembers `other`'s ids, oldest first, as [`EventIds::push`] would one by one.
    pub fn absorb(&mut self, other: &EventIds, bound: usize) {
        for id in &other.order {
            if self.insert(id.clone()) {
                self.trim(bound);
            }
        }
    }

    /// Appends `id` unless its index has it; hashes it once. Whether it was new.
    fn insert(&mut self, id: Id) -> bool {
        let new = match &id {
            Id::Uuid(bytes) => self.uuids.insert(*bytes),
            Id::Text(text) => self.texts.insert(Arc::clone(text)),
        };
        if new {
            self.order.push_back(id);
        }
        new
    }

    fn trim(&mut self, bound: usize) {
        while self.order.len() > bound {
            match self.order.pop_front() {
                Some(Id::Uuid(bytes)) => self.uuids.remove(&bytes),
                Some(Id::Text(text)) => self.texts.remove(&text),
                None => break,
            };
        }
    }

    /// An empty ring with room for `uuids` UUID ids and `texts` other ids.
    fn with_capacity(uuids: usize, texts: usize) -> Self {
        EventIds {
            order: VecDeque::with_capacity(uuids + texts),
            uuids: foldhash::HashSet::with_capacity_and_hasher(uuids, Default::default()),
            texts: foldhash::HashSet::with_capacity_and_hasher(texts, Default::default()),
        }
    }

    /// Remembers an id read from a stored form, in the form it is kept in.
    fn insert_text(&mut self, text: &str) {
        let id = match Key::of(text) {
            Key::Uuid(bytes) => Id::Uuid(bytes),
            Key::Text(text) => Id::Text(text.into()),
        };
        self.insert(id);
    }

    /// The ring in its packed binary form, under half the list's size for UUID ids:
    /// a format byte ([`PACKED_FORMAT`]), then per id, oldest first, a LEB128 number `n`:
    /// `n = 0` is followed by the 16 bytes of a UUID whose id was its canonical text
    /// (lower-case, hyphenated, as the API assigns), any other `n` by the `n - 1` bytes of
    /// the id as it was. Exact: [`EventIds::unpack`] gives back the same ids in order.
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.order.len() * 17);
        out.push(PACKED_FORMAT);
        for id in &self.order {
            match id {
                Id::Uuid(bytes) => {
                    out.push(0);
                    out.extend_from_slice(bytes);
                }
                Id::Text(text) => {
                    push_leb128(&mut out, text.len() as u64 + 1);
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out
    }

    /// Reads [`EventIds::pack`]'s form back; a repeated id keeps its first position, as
    /// when reading the list. Says what is wrong with bytes that are not that form.
    pub fn unpack(bytes: &[u8]) -> Result<EventIds, String> {
        let (&format, rest) = bytes.split_first().ok_or("packed event ids: empty")?;
        if format != PACKED_FORMAT {
            return Err(format!("packed event ids: unknown format {format}"));
        }
        // Checked and counted first, so that the list and both indexes are sized once.
        let (mut uuids, mut texts) = (0, 0);
        for entry in packed_entries(rest) {
            match entry? {
                Packed::Uuid(_) => uuids += 1,
                Packed::Text(_) => texts += 1,
            }
        }
        let mut out = EventIds::with_capacity(uuids, texts);
        for entry in packed_entries(rest).flatten() {
            match entry {
                Packed::Uuid(bytes) => {
                    out.insert(Id::Uuid(*bytes));
                }
                // Written as text by another writer, a canonical UUID is still kept as one.
                Packed::Text(text) => out.insert_text(text),
            }
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

    pub fn front(&self) -> Option<Cow<'_, str>> {
        self.order.front().map(Id::text)
    }

    pub fn back(&self) -> Option<Cow<'_, str>> {
        self.order.back().map(Id::text)
    }

    /// The ids' text, oldest first (a UUID's is written out on the way).
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.order.iter().map(Id::text)
    }
}

impl PartialEq for EventIds {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

thread_local! {
    /// Set while [`EventIds::serialize_packed`] runs.
    static PACKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
        // A stored ring is usually full (1,000 ids, mostly UUIDs): size it once.
        let mut out = EventIds::with_capacity(seq.size_hint().unwrap_or(0), 0);
        while let Some(id) = seq.next_element::<Cow<'de, str>>()? {
            out.insert_text(&id);
        }
        Ok(out)
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<EventIds, E> {
        EventIds::unpack(bytes).map_err(E::custom)
    }
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
/// rather than `uuid`/`hex` calls because it runs for every event and every stored id, and
/// those crates are built for size (section 4 of BENCHMARKS.md), several times slower here.
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
fn uuid_text(bytes: &[u8; 16]) -> String {
    let mut text = [b'-'; UUID_TEXT_LEN];
    for (k, byte) in bytes.iter().enumerate() {
        text[UUID_DIGITS[2 * k]] = HEX_DIGITS[usize::from(byte >> 4)];
        text[UUID_DIGITS[2 * k + 1]] = HEX_DIGITS[usize::from(byte & 15)];
    }
    // Hex digits and hyphens only.
    text.iter().map(|&b| char::from(b)).collect()
}

/// One entry of [`EventIds::pack`]'s form, borrowed. Not a [`Key`] (same shape, but owning
/// a UUID's bytes): a reader yielding `Key`s, tried in review, read a full ring of UUIDs in
/// 66 µs instead of 45 µs.
enum Packed<'a> {
    Uuid(&'a [u8; 16]),
    Text(&'a str),
}

/// The entries of a packed ring after its format byte; an error says what is wrong, and
/// ends the entries.
fn packed_entries(mut rest: &[u8]) -> impl Iterator<Item = Result<Packed<'_>, String>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let n = read_leb128(&mut rest)?;
            if n == 0 {
                let (raw, tail) = rest
                    .split_first_chunk::<16>()
                    .ok_or("packed event ids: a UUID is cut short")?;
                rest = tail;
                return Ok(Packed::Uuid(raw));
            }
            let len = usize::try_from(n - 1)
                .ok()
                .filter(|&len| len <= rest.len())
                .ok_or("packed event ids: an id is cut short")?;
            let (raw, tail) = rest.split_at(len);
            rest = tail;
            let text =
                std::str::from_utf8(raw).map_err(|_| "packed event ids: an id is not UTF-8")?;
            Ok(Packed::Text(text))
        })();
        if entry.is_err() {
            rest = &[];
        }
        Some(entry)
    })
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RECENT_EVENT_IDS;

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
        assert!(!more.push("a", 10), "not new");
        assert_eq!(more, back, "a known id is not remembered twice");
        assert!(more.push("d", 3), "new");
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

    #[test]
    fn a_uuid_written_as_text_is_kept_as_its_bytes_and_found_either_way() {
        let id = "0b6f3c2e-8d1a-4f5b-9c7e-2a4d6e8f0a1b";
        let mut text = vec![PACKED_FORMAT, 37];
        text.extend_from_slice(id.as_bytes());
        let ring = EventIds::unpack(&text).unwrap();
        assert!(ring.contains(id));
        assert_eq!(ring.pack().len(), 1 + 17, "re-packed as 16 bytes");
        assert_eq!(ring.front().as_deref(), Some(id));
        let listed: EventIds = serde_json::from_str(&format!(r#"["{id}","{id}"]"#)).unwrap();
        assert_eq!(listed, ring, "the list form too, and the repeat is dropped");
    }

    #[test]
    fn absorbing_a_ring_appends_its_new_ids_and_keeps_the_bound() {
        let uuid = "0b6f3c2e-8d1a-4f5b-9c7e-2a4d6e8f0a1b";
        let mut ours = EventIds::default();
        ours.push("a", 10);
        ours.push(uuid, 10);
        let mut theirs = EventIds::default();
        for id in [uuid, "c", "d"] {
            theirs.push(id, 10);
        }
        ours.absorb(&theirs, 3);
        assert_eq!(ours.iter().collect::<Vec<_>>(), [uuid, "c", "d"]);
        assert!(!ours.contains("a") && ours.contains(uuid) && ours.contains("d"));
        assert_eq!(ours.len(), 3);

        // Exactly what pushing their ids one by one does, also for an id both rings hold
        // that the bound pushes out of ours before theirs comes to it.
        let ring = |ids: &[&str]| {
            let mut r = EventIds::default();
            for id in ids {
                r.push(id, 3);
            }
            r
        };
        let (mut absorbed, mut pushed) = (ring(&["x", "a", "b"]), ring(&["x", "a", "b"]));
        let theirs = ring(&["c", "x"]);
        absorbed.absorb(&theirs, 3);
        for id in theirs.iter() {
            pushed.push(&id, 3);
        }
        assert_eq!(absorbed, pushed);
        assert_eq!(absorbed.iter().collect::<Vec<_>>(), ["b", "c", "x"]);
    }
}
