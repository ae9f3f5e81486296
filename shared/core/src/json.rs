//! [`Json`]: a read-only JSON document that borrows its strings from the input bytes, and
//! [`View`]: the one interface the schema checker and the enrichment read documents through.
//!
//! `serde_json::Value` copies every string into its own allocation and every object into a
//! `BTreeMap`; a Kinesis batch is read once and thrown away, so the enrichment path reads
//! records into [`Json`] instead: strings without escapes point into the record, an object is
//! one `Vec` of entries in input order, so parsing and dropping a record costs a handful of
//! allocations instead of dozens. `serde_json` still does the parsing (same grammar, same
//! nesting limit, same error messages), and every verdict matches `Value`'s:
//! - a key given twice keeps its last value, like `Value`;
//! - numbers are `serde_json::Number`s, read the same way;
//! - [`Json`]'s text form (`Display`, used to quote values in problems) lists object keys in
//!   sorted order, as `Value`'s does.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// A parsed JSON document borrowing from its input (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Entries in input order, each key once.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `bytes`; strings without escape sequences borrow from them.
    ///
    /// The record is checked to be UTF-8 in one pass first, so that serde_json reads it as
    /// text and does not check every string on its own (a JSON document that is not UTF-8 is
    /// refused by both; such input goes to `from_slice` for serde_json's own error message).
    pub fn parse(bytes: &'a [u8]) -> serde_json::Result<Json<'a>> {
        match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    /// A string's text, borrowed from the input when it had no escape sequences (so it can
    /// outlive the document), else copied; `None` for any other value.
    pub fn text(&self) -> Option<Cow<'a, str>> {
        match self {
            Json::String(Cow::Borrowed(s)) => Some(Cow::Borrowed(s)),
            Json::String(Cow::Owned(s)) => Some(Cow::Owned(s.clone())),
            _ => None,
        }
    }
}

/// What a JSON value is, with its content: how [`View`] exposes a document.
pub enum Shape<'v, J> {
    Null,
    Bool(bool),
    Number(&'v Number),
    String(&'v str),
    Array(&'v [J]),
    /// An object; its entries come from [`View::entries`] on the same value.
    Object,
}

/// Read access to a JSON document, implemented for `serde_json::Value` (what the HTTP API
/// builds) and [`Json`] (what the enrichment reads), so one checker and one set of accessors
/// serve both.
pub trait View: fmt::Display + Sized {
    fn shape(&self) -> Shape<'_, Self>;
    /// The entries of an object, in its order; nothing for any other value.
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)>;
    /// Number of entries of an object (0 for any other value).
    fn object_len(&self) -> usize;
    /// The member `key` of an object.
    fn get(&self, key: &str) -> Option<&Self>;
    /// Whether this value equals `other` (an `enum` option of a schema).
    fn same_as(&self, other: &Value) -> bool;

    fn as_str(&self) -> Option<&str> {
        match self.shape() {
            Shape::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self.shape() {
            Shape::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.shape(), Shape::Null)
    }

    fn is_object(&self) -> bool {
        matches!(self.shape(), Shape::Object)
    }
}

impl View for Value {
    fn shape(&self) -> Shape<'_, Value> {
        match self {
            Value::Null => Shape::Null,
            Value::Bool(b) => Shape::Bool(*b),
            Value::Number(n) => Shape::Number(n),
            Value::String(s) => Shape::String(s),
            Value::Array(items) => Shape::Array(items),
            Value::Object(_) => Shape::Object,
        }
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }

    fn object_len(&self) -> usize {
        self.as_object().map_or(0, serde_json::Map::len)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    fn same_as(&self, other: &Value) -> bool {
        self == other
    }
}

impl View for Json<'_> {
    fn shape(&self) -> Shape<'_, Self> {
        match self {
            Json::Null => Shape::Null,
            Json::Bool(b) => Shape::Bool(*b),
            Json::Number(n) => Shape::Number(n),
            Json::String(s) => Shape::String(s),
            Json::Array(items) => Shape::Array(items),
            Json::Object(_) => Shape::Object,
        }
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
        let entries = match self {
            Json::Object(entries) => entries.as_slice(),
            _ => &[],
        };
        entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    fn object_len(&self) -> usize {
        match self {
            Json::Object(entries) => entries.len(),
            _ => 0,
        }
    }

    fn get(&self, key: &str) -> Option<&Self> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Json::Null, Value::Null) => true,
            (Json::Bool(a), Value::Bool(b)) => a == b,
            (Json::Number(a), Value::Number(b)) => a == b,
            (Json::String(a), Value::String(b)) => a == b,
            (Json::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            (Json::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, x)| b.get(k.as_ref()).is_some_and(|y| x.same_as(y)))
            }
            _ => false,
        }
    }
}

/// Objects with up to this many entries look for a repeated key by comparing every pair;
/// larger ones sort their keys first, so no input makes this quadratic.
const PAIRWISE: usize = 16;

/// Keeps the last value of every key given more than once, in the position of its first
/// occurrence (where `Value` would have it too, were its map ordered).
fn keep_last<'a>(entries: &mut Vec<(Cow<'a, str>, Json<'a>)>) {
    let repeated = if entries.len() <= PAIRWISE {
        (1..entries.len()).any(|i| entries[..i].iter().any(|(k, _)| *k == entries[i].0))
    } else {
        let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w[0] == w[1])
    };
    if !repeated {
        return;
    }
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut kept: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(entries.len());
    for (key, value) in entries.drain(..) {
        match first.get(key.as_ref()) {
            Some(&at) => kept[at].1 = value,
            None => {
                first.insert(key.to_string(), kept.len());
                kept.push((key, value));
            }
        }
    }
    *entries = kept;
}

/// An object key, borrowed from the input when the deserializer allows it (serde's
/// `borrow` on a `Cow<str>`: borrowed without escapes, owned with them).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json<'de>, E> {
        // As `Value` does: a float JSON text cannot produce NaN or infinity, but be total.
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Text(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        keep_last(&mut entries);
        Ok(Json::Object(entries))
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(text) => s.serialize_str(text),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut sorted: Vec<&(Cow<'_, str>, Json<'_>)> = entries.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut map = s.serialize_map(Some(sorted.len()))?;
                for (k, v) in sorted {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Json<'_> {
    /// Compact JSON text, object keys sorted (as `Value` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn strings_without_escapes_borrow_from_the_input() {
        let bytes = br#"{"a":"plain","b":"esc\"aped","c":[1,-2,2.5,true,null]}"#;
        let json = Json::parse(bytes).unwrap();
        let Json::Object(entries) = &json else {
            panic!("{json:?}")
        };
        assert!(matches!(entries[0].0, Cow::Borrowed("a")));
        assert!(matches!(
            &entries[0].1,
            Json::String(Cow::Borrowed("plain"))
        ));
        assert!(matches!(&entries[1].1, Json::String(Cow::Owned(s)) if s == "esc\"aped"));
        assert_eq!(
            json.get("c").map(|c| c.to_string()).as_deref(),
            Some("[1,-2,2.5,true,null]")
        );
        assert_eq!(json.get("zz"), None);
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_like_value() {
        let bytes = br#"{"k":1,"x":true,"k":"two","k":3}"#;
        let json = Json::parse(bytes).unwrap();
        let value: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(json.object_len(), 2);
        assert_eq!(json.get("k").map(ToString::to_string).as_deref(), Some("3"));
        assert!(json.same_as(&value));
        // Past the pairwise limit the sorted check finds the repeat too.
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k7\":\"last\"}");
        let json = Json::parse(text.as_bytes()).unwrap();
        assert_eq!(json.object_len(), 40);
        assert_eq!(json.get("k7").and_then(View::as_str), Some("last"));
        assert_eq!(json.entries().nth(7).map(|(k, _)| k), Some("k7"));
    }

    #[test]
    fn errors_are_serde_jsons() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"{\"a\" 1}",
            b"nul",
            b"\"\\x\"",
            b"1e999",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"ok\"}\xc3",
            b"\xef\xbb\xbf{}",
            b"{\"\xc3\x28\":1}",
        ] {
            let ours = Json::parse(bad).unwrap_err().to_string();
            let theirs = serde_json::from_slice::<Value>(bad)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, theirs);
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(Json::parse(deep.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("recursion limit"));
    }

    /// JSON values of every kind, nested, with keys drawn from a small set so that repeats
    /// happen, and strings with and without escapes.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-c\"\\\\/\u{e9}\u{1F336}\n]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-d]{1,2}", inner), 0..24)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// Object text with repeated keys, which `Value` (a map) cannot produce by printing.
    fn object_text() -> impl Strategy<Value = String> {
        prop::collection::vec(("[a-e]{1,2}", any::<i32>()), 0..40).prop_map(|entries| {
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn reads_and_prints_like_value(value in any_json()) {
            let text = serde_json::to_string(&value).unwrap();
            // What `Value` reads back (floats need not round-trip exactly, in either).
            let value: Value = serde_json::from_str(&text).unwrap();
            let json = Json::parse(text.as_bytes()).unwrap();
            prop_assert!(json.same_as(&value));
            prop_assert_eq!(json.to_string(), value.to_string());
            prop_assert_eq!(json.object_len(), value.object_len());
        }

        #[test]
        fn repeated_keys_end_like_value(text in object_text()) {
            let json = Json::parse(text.as_bytes()).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(json.same_as(&value), "{} vs {}", json, value);
            prop_assert_eq!(json.to_string(), value.to_string());
            for (k, v) in value.as_object().unwrap() {
                prop_assert!(json.get(k).is_some_and(|j| j.same_as(v)));
            }
        }
    }
}
