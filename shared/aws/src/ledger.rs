//! DynamoDB implementation of the [`Ledger`] port: small keyed records (send claims,
//! frequency-cap counters, suppressions, timers, cursors) in one table with string keys
//! `pk` (partition) and `sk` (sort) and the TTL attribute `expires_at` (epoch seconds).
//!
//! - `claim` is a conditional put (`attribute_not_exists(pk)`); an *expired* record (TTL
//!   deletion is lazy, up to days late) counts as absent and may be claimed again.
//! - `increment_below` is an `UpdateItem` `ADD #count :one` guarded by `#count < :limit`.
//! - `get`/`query` hide expired records, so callers never see stale claims or timers.
//!
//! The caller's attributes are stored as top-level item attributes (via `serde_dynamo`); the
//! names `pk`, `sk`, `expires_at` and `count` are reserved and cannot be overwritten.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use ember_core::clock::{Clock, SharedClock, SystemClock};
use ember_core::ports::{Ledger, PortError, PortResult};

use crate::retry::classify;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// The TTL attribute (configure it as the table's TimeToLiveSpecification).
pub const EXPIRES_AT: &str = "expires_at";
/// The counter attribute of `increment_below`.
pub const COUNT: &str = "count";
const RESERVED: [&str; 4] = [PK, SK, EXPIRES_AT, COUNT];

/// The ledger table (name from configuration, e.g. `LEDGER_TABLE`).
#[derive(Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    /// What "now" is when deciding whether a record has expired: the wall clock, or (for a
    /// replay of past events, e.g. `ember-local`) a clock that follows event time.
    clock: SharedClock,
}

impl std::fmt::Debug for DynamoLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoLedger")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
            clock: SystemClock::shared(),
        }
    }

    /// Uses `clock` instead of the wall clock for expiry decisions.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn now_secs(&self) -> i64 {
        self.clock.now().timestamp()
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Builds the client from the process-wide SDK configuration.
    pub fn from_conf(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_owned(), AttributeValue::S(pk.to_owned())),
            (SK.to_owned(), AttributeValue::S(sk.to_owned())),
        ])
    }

    /// Adds the key and the expiry (if any) to a record's attributes.
    fn complete(
        item: &mut HashMap<String, AttributeValue>,
        pk: &str,
        sk: &str,
        expires_at: Option<DateTime<Utc>>,
    ) {
        item.extend(Self::key(pk, sk));
        if let Some(at) = expires_at {
            item.insert(
                EXPIRES_AT.to_owned(),
                AttributeValue::N(at.timestamp().to_string()),
            );
        }
    }
}

/// The outcome of a conditional write (put, update, delete): `Ok(true)` if written,
/// `Ok(false)` if its condition did not hold.
pub(crate) fn conditional<R, E>(
    outcome: Result<R, SdkError<E>>,
    stage: &'static str,
) -> PortResult<bool>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match outcome {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(classify(&e, stage)),
    }
}

/// Converts the caller's JSON object into item attributes (reserved names refused).
fn attrs_to_item(attrs: &serde_json::Value) -> PortResult<HashMap<String, AttributeValue>> {
    let permanent = |reason: String| PortError::Permanent {
        stage: "ledger.encode",
        reason,
    };
    match attrs {
        serde_json::Value::Null => Ok(HashMap::new()),
        serde_json::Value::Object(map) => {
            if let Some(bad) = map.keys().find(|k| RESERVED.contains(&k.as_str())) {
                return Err(permanent(format!("attribute name {bad} is reserved")));
            }
            serde_dynamo::aws_sdk_dynamodb_1::to_item(map)
                .map_err(|e| permanent(format!("attributes cannot be encoded: {e}")))
        }
        _ => Err(permanent("attributes must be a JSON object".into())),
    }
}

/// An item back to JSON (without `pk`/`sk`), or `None` if its TTL has passed.
fn item_to_json(
    mut item: HashMap<String, AttributeValue>,
    now: i64,
) -> PortResult<Option<(String, serde_json::Value)>> {
    let expired = item
        .get(EXPIRES_AT)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|at| at <= now);
    if expired {
        return Ok(None);
    }
    item.remove(PK);
    let sk = match item.remove(SK) {
        Some(AttributeValue::S(s)) => s,
        _ => String::new(),
    };
    let value: serde_json::Value =
        serde_dynamo::aws_sdk_dynamodb_1::from_item(item).map_err(|e| PortError::Permanent {
            stage: "ledger.decode",
            reason: format!("record {sk}: {e}"),
        })?;
    Ok(Some((sk, value)))
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn claim(
        &self,
        pk: &str,
        sk: &str,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut item = attrs_to_item(attrs)?;
        Self::complete(&mut item, pk, sk, expires_at);
        let names = [("#pk", PK), ("#exp", EXPIRES_AT)]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let now = AttributeValue::N(self.now_secs().to_string());
        let values = [(":now".to_owned(), now)].into();
        let condition = "attribute_not_exists(#pk) OR #exp <= :now";
        self.put_if(item, condition, names, values, "ledger.claim")
            .await
    }

    async fn get(&self, pk: &str, sk: &str) -> PortResult<Option<serde_json::Value>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&e, "ledger.get"))?;
        match out.item {
            Some(item) => Ok(item_to_json(item, self.now_secs())?.map(|(_, v)| v)),
            None => Ok(None),
        }
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
    ) -> PortResult<Vec<(String, serde_json::Value)>> {
        let now = self.now_secs();
        let mut records = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            // DynamoDB refuses an empty `begins_with` operand: an empty prefix means "all".
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()));
            let query = if sk_prefix.is_empty() {
                query.key_condition_expression("#pk = :pk")
            } else {
                query
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":prefix", AttributeValue::S(sk_prefix.to_owned()))
            };
            let out = query
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&e, "ledger.query"))?;
            for item in out.items.unwrap_or_default() {
                if let Some(record) = item_to_json(item, now)? {
                    records.push(record);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(records)
    }

    async fn increment_below(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        if limit == 0 {
            return Ok(false);
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", COUNT)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()));
        request = match expires_at {
            Some(at) => request
                .update_expression("ADD #count :one SET #exp = if_not_exists(#exp, :exp)")
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_values(":exp", AttributeValue::N(at.timestamp().to_string())),
            None => request.update_expression("ADD #count :one"),
        };
        conditional(request.send().await, "ledger.increment")
    }

    async fn delete(&self, pk: &str, sk: &str) -> PortResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .send()
            .await
            .map_err(|e| classify(&e, "ledger.delete"))?;
        Ok(())
    }

    async fn replace_if(
        &self,
        pk: &str,
        sk: &str,
        expected: &serde_json::Value,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut item = attrs_to_item(attrs)?;
        let expected = attrs_to_item(expected)?;
        // (every expected attribute holds) OR (every new attribute already holds: our own
        // call, retried by the SDK after its answer was lost).
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut clause = |prefix: &str, attrs: &HashMap<String, AttributeValue>| -> String {
            let mut parts: Vec<String> = attrs
                .iter()
                .enumerate()
                .map(|(i, (name, value))| {
                    names.insert(format!("#{prefix}{i}"), name.clone());
                    values.insert(format!(":{prefix}{i}"), value.clone());
                    format!("#{prefix}{i} = :{prefix}{i}")
                })
                .collect();
            parts.sort();
            if parts.is_empty() {
                "attribute_exists(#pk)".to_owned()
            } else {
                parts.join(" AND ")
            }
        };
        let condition = format!(
            "attribute_exists(#pk) AND (({}) OR ({}))",
            clause("e", &expected),
            clause("n", &item)
        );
        names.insert("#pk".to_owned(), PK.to_owned());
        Self::complete(&mut item, pk, sk, expires_at);
        self.put_if(item, &condition, names, values, "ledger.replace_if")
            .await
    }
}

impl DynamoLedger {
    /// Puts `item` if `condition` holds: `Ok(false)` when it does not.
    async fn put_if(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        names: HashMap<String, String>,
        values: HashMap<String, AttributeValue>,
        stage: &'static str,
    ) -> PortResult<bool> {
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        conditional(outcome, stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_attribute_names_are_refused() {
        assert!(attrs_to_item(&serde_json::json!({"pk": "x"})).is_err());
        assert!(attrs_to_item(&serde_json::json!({"count": 1})).is_err());
        assert!(attrs_to_item(&serde_json::json!([1, 2])).is_err());
        let item = attrs_to_item(&serde_json::json!({"campaign": "c", "n": 2})).unwrap();
        assert_eq!(item.get("campaign"), Some(&AttributeValue::S("c".into())));
        assert!(attrs_to_item(&serde_json::Value::Null).unwrap().is_empty());
    }

    #[test]
    fn expired_items_are_hidden_and_keys_stripped() {
        let mut item = DynamoLedger::key("p", "s");
        item.insert("campaign".into(), AttributeValue::S("c".into()));
        item.insert(EXPIRES_AT.into(), AttributeValue::N("100".into()));
        assert_eq!(item_to_json(item.clone(), 100).unwrap(), None);
        let (sk, value) = item_to_json(item, 99).unwrap().unwrap();
        assert_eq!(sk, "s");
        assert_eq!(
            value,
            serde_json::json!({"campaign": "c", "expires_at": 100})
        );
    }
}
