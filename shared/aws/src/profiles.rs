//! DynamoDB implementation of [`ProfileStore`]: one item per profile, partition key `id`
//! (string), attributes = the [`Profile`] fields via `serde_dynamo` (the ring of recent event
//! ids packed into one binary attribute), and optimistic locking on the `version` attribute.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use ember_core::ports::{check_scan_segment, PortError, PortResult, ProfileStore};
use ember_core::profile::{EventIds, Profile};

use crate::retry::classify;

/// Name of the table's partition key attribute (a string: the profile id).
pub const KEY_ATTRIBUTE: &str = "id";

/// Profiles in one DynamoDB table (name from configuration, e.g. `PROFILES_TABLE`).
#[derive(Debug, Clone)]
pub struct DynamoProfileStore {
    client: Client,
    table: String,
}

impl DynamoProfileStore {
    /// Builds the client from the process's one `SdkConfig`.
    pub fn from_conf(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoProfileStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(id: &str) -> (String, AttributeValue) {
        (KEY_ATTRIBUTE.to_owned(), AttributeValue::S(id.to_owned()))
    }
}

/// Converts a profile to its DynamoDB item. Its ring of recent event ids is one binary
/// attribute ([`EventIds::pack`]): a full ring of UUIDs is 17 KB that way instead of 37 KB
/// as a list of strings, most of a returning customer's item. [`from_item`] reads both.
pub fn to_item(profile: &Profile) -> PortResult<std::collections::HashMap<String, AttributeValue>> {
    EventIds::serialize_packed(|| serde_dynamo::aws_sdk_dynamodb_1::to_item(profile)).map_err(|e| {
        PortError::Permanent {
            stage: "profile.encode",
            reason: format!("profile {} cannot be encoded: {e}", profile.id),
        }
    })
}

/// Reads a profile back from its DynamoDB item.
pub fn from_item(item: std::collections::HashMap<String, AttributeValue>) -> PortResult<Profile> {
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
pub fn item_size(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
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

#[async_trait]
impl ProfileStore for DynamoProfileStore {
    async fn get(&self, id: &str) -> PortResult<Option<Profile>> {
        let (k, v) = Self::key(id);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(k, v)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&e, "profile.get"))?;
        out.item.map(from_item).transpose()
    }

    async fn put(&self, profile: &Profile, expected_version: u64) -> PortResult<()> {
        let item = to_item(profile)?;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = if expected_version == 0 {
            request
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", KEY_ATTRIBUTE)
        } else {
            request
                .condition_expression("#v = :expected")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(
                    ":expected",
                    AttributeValue::N(expected_version.to_string()),
                )
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(PortError::Conflict(format!(
                        "profile {} is no longer at version {expected_version}",
                        profile.id
                    )))
                }
                _ => Err(classify(&e, "profile.put")),
            },
        }
    }

    async fn delete(&self, id: &str) -> PortResult<bool> {
        let (k, v) = Self::key(id);
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(k, v)
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| classify(&e, "profile.delete"))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn scan(
        &self,
        segment: u32,
        total: u32,
        start: Option<String>,
    ) -> PortResult<(Vec<Profile>, Option<String>)> {
        check_scan_segment(segment, total, "profile.scan")?;
        let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let mut request = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .segment(to_i32(segment))
            .total_segments(to_i32(total))
            .limit(SCAN_PAGE_SIZE);
        if let Some(id) = start {
            let (k, v) = Self::key(&id);
            request = request.exclusive_start_key(k, v);
        }
        let out = request
            .send()
            .await
            .map_err(|e| classify(&e, "profile.scan"))?;
        // An item that no longer decodes must not block the rest of the table: it is
        // logged (by key only) and left as is.
        let mut profiles = Vec::new();
        for item in out.items.unwrap_or_default() {
            let id = item
                .get(KEY_ATTRIBUTE)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            match from_item(item) {
                Ok(p) => profiles.push(p),
                Err(e) => tracing::warn!(profile_id = %id, error = %e, "scanned profile skipped"),
            }
        }
        let next = out
            .last_evaluated_key
            .and_then(|mut key| key.remove(KEY_ATTRIBUTE))
            .and_then(|v| v.as_s().ok().cloned());
        Ok((profiles, next))
    }
}

/// Items per scan page (DynamoDB also stops a page at 1 MB).
pub const SCAN_PAGE_SIZE: i32 = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::ports::{BusEvent, SegmentChange};

    #[test]
    fn item_sizes_follow_the_documented_rules() {
        let item = |pairs: Vec<(&str, AttributeValue)>| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<std::collections::HashMap<_, _>>()
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
    fn a_profile_round_trips_through_its_item() {
        let mut p = Profile::new("u-1");
        p.version = 3;
        p.counts.insert("page_view".into(), 2);
        p.segments.insert("spicy".into());
        p.recent_event_ids.push("e1", 10);
        p.outbox.push(BusEvent::SegmentEntered(SegmentChange {
            id: "u-1:spicy:entered:3".into(),
            profile_id: "u-1".into(),
            segment: "spicy".into(),
            at: chrono::Utc::now(),
            profile_version: 3,
            cause_event_id: None,
        }));
        let item = to_item(&p).unwrap();
        assert_eq!(item.get("id"), Some(&AttributeValue::S("u-1".into())));
        assert_eq!(item.get("version"), Some(&AttributeValue::N("3".into())));
        assert_eq!(
            item.get("recent_event_ids"),
            Some(&AttributeValue::B(p.recent_event_ids.pack().into())),
            "the ring is one binary attribute"
        );
        assert_eq!(from_item(item.clone()).unwrap(), p);

        // Items written before the ring was packed hold it as a list of strings.
        let mut old = item;
        old.insert(
            "recent_event_ids".into(),
            AttributeValue::L(vec![AttributeValue::S("e1".into())]),
        );
        assert_eq!(from_item(old.clone()).unwrap(), p);
        // A damaged ring is a permanent decode error that says what is wrong.
        old.insert("recent_event_ids".into(), AttributeValue::B(vec![7].into()));
        match from_item(old) {
            Err(PortError::Permanent { stage, reason }) => {
                assert_eq!(stage, "profile.decode");
                assert!(reason.contains("unknown format 7"), "{reason}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}
