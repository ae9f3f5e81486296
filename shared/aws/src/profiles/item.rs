//! A profile's DynamoDB item: the [`Profile`] fields as attributes (via `serde_dynamo`; absent
//! and empty fields are left out), and the size DynamoDB bills an item at.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use ember_core::ports::{PortError, PortResult};
use ember_core::profile::Profile;

/// DynamoDB's limit on an item (400 KB); a larger write fails for good.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Converts a profile to its DynamoDB item. A profile over [`MAX_ITEM_BYTES`] is refused here
/// (permanent), before a request DynamoDB would refuse anyway.
pub fn to_item(profile: &Profile) -> PortResult<HashMap<String, AttributeValue>> {
    let item: HashMap<String, AttributeValue> = serde_dynamo::aws_sdk_dynamodb_1::to_item(profile)
        .map_err(|e| PortError::Permanent {
            stage: "profile.encode",
            reason: format!("profile cannot be encoded: {e}"),
        })?;
    let size = item_size(&item);
    if size > MAX_ITEM_BYTES {
        return Err(PortError::Permanent {
            stage: "profile.encode",
            reason: format!("profile item of {size} bytes is over DynamoDB's {MAX_ITEM_BYTES}"),
        });
    }
    Ok(item)
}

/// Reads a profile back from its DynamoDB item, in the current form or a legacy one.
pub fn from_item(item: HashMap<String, AttributeValue>) -> PortResult<Profile> {
    if super::legacy::is_legacy(&item) {
        return super::legacy::upgrade(item);
    }
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item).map_err(|e| PortError::Permanent {
        stage: "profile.decode",
        reason: format!("stored profile cannot be decoded: {e}"),
    })
}

/// The size DynamoDB bills an item at, estimated by its documented rules ("DynamoDB item
/// sizes and formats"): attribute names and string/binary values count their bytes, a number
/// one byte per two significant digits plus one, null and booleans one byte, a list or map
/// 3 bytes plus one per element plus its elements. A write costs one WCU per started KB of
/// it, a strongly consistent read one RCU per started 4 KB.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, v)| name.len() + value_size(v))
        .sum()
}

fn value_size(v: &AttributeValue) -> usize {
    const CONTAINER: usize = 3;
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(list) => {
            CONTAINER + list.iter().map(|e| 1 + value_size(e)).sum::<usize>()
        }
        AttributeValue::M(map) => {
            CONTAINER
                + map
                    .iter()
                    .map(|(k, e)| 1 + k.len() + value_size(e))
                    .sum::<usize>()
        }
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        // A type added to the SDK later: count it as a small scalar.
        _ => 1,
    }
}

/// One byte per two significant digits (leading and trailing zeros trimmed), plus one.
fn number_size(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or_default();
    let significant = mantissa
        .trim_start_matches(|c: char| c == '0' || !c.is_ascii_digit())
        .trim_end_matches(['0', '.'])
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    significant.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::ports::{BusEvent, SegmentChange};
    use ember_core::watermark::Position;

    #[test]
    fn item_sizes_follow_the_documented_rules() {
        let item = |pairs: Vec<(&str, AttributeValue)>| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<HashMap<_, _>>()
        };
        // Strings: name + UTF-8 bytes ("é" is two).
        assert_eq!(
            item_size(&item(vec![("id", AttributeValue::S("u-é".into()))])),
            2 + 4
        );
        // Numbers: one byte per two significant digits (zeros at either end trimmed) + 1.
        for (n, size) in [
            ("0", 1),
            ("7", 2),
            ("12", 2),
            ("123", 3),
            ("1200", 2),
            ("-0.0012", 2),
        ] {
            assert_eq!(number_size(n), size, "{n}");
        }
        // Booleans and null: one byte. Binary: raw bytes, not base64.
        assert_eq!(item_size(&item(vec![("b", AttributeValue::Bool(true))])), 2);
        let blob = aws_sdk_dynamodb::primitives::Blob::new(vec![0u8; 10]);
        assert_eq!(item_size(&item(vec![("x", AttributeValue::B(blob))])), 11);
        // Lists and maps: 3 bytes + 1 per element + the elements (map keys count too).
        let list = AttributeValue::L(vec![AttributeValue::S("ab".into()); 2]);
        assert_eq!(item_size(&item(vec![("ids", list)])), 3 + 3 + 2 * (1 + 2));
        let map = AttributeValue::M(item(vec![("k", AttributeValue::N("5".into()))]));
        assert_eq!(item_size(&item(vec![("m", map)])), 1 + 3 + (1 + 1 + 2));
        assert_eq!(
            item_size(&item(vec![("e", AttributeValue::L(vec![]))])),
            1 + 3
        );
    }

    #[test]
    fn a_profile_round_trips_through_its_item_without_empty_attributes() {
        let mut p = Profile::new("u-1");
        p.version = 3;
        p.counts.insert("page_view".into(), 2);
        p.segments.insert("spicy".into());
        p.outbox
            .events
            .push(BusEvent::SegmentEntered(SegmentChange {
                id: "u-1:spicy:entered:3".into(),
                profile_id: "u-1".into(),
                segment: "spicy".into(),
                at: chrono::Utc::now(),
                profile_version: 3,
                cause_event_id: None,
                config_version: 0,
                backfill: false,
                ingested_at: None,
                trace: None,
            }));
        p.outbox.by_stream = true;
        p.stream
            .advance(&Position::new("shardId-000000000001", "42"));
        let item = to_item(&p).unwrap();
        assert_eq!(item.get("id"), Some(&AttributeValue::S("u-1".into())));
        assert_eq!(item.get("version"), Some(&AttributeValue::N("3".into())));
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            ["counts", "id", "outbox", "segments", "stream", "version"]
        );
        assert_eq!(from_item(item).unwrap(), p);
    }

    #[test]
    fn an_item_over_the_limit_is_refused_for_good() {
        let mut p = Profile::new("u-1");
        for i in 0..5000 {
            p.counts.insert(format!("{i:0>100}"), 1);
        }
        match to_item(&p) {
            Err(PortError::Permanent { stage, reason }) => {
                assert_eq!(stage, "profile.encode");
                assert!(reason.contains("over DynamoDB"), "{reason}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }
}
