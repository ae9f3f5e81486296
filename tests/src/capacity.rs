//! What DynamoDB would bill, measured from the requests and answers that pass through the
//! [`crate::faults::FaultProxy`]: every item written is read off the wire and sized by
//! DynamoDB's documented rules ([`ember_aws::profiles::item_size`]).
//!
//! - a write (`PutItem`, `UpdateItem`, `DeleteItem`) costs one write unit per started KB of the
//!   larger of the item before and after it (the meter remembers the last size it saw per
//!   key; a conditional write that fails its condition is billed the same way);
//! - a strongly consistent `GetItem` costs one read unit per started 4 KB of the item, at
//!   least one (also when there is no item); an eventually consistent one half of that.
//!
//! - each item of a `TransactWriteItems` costs twice what the same write alone would (DynamoDB
//!   prepares and commits every item), all of it counted for the transaction's put item in
//!   [`CapacityMeter::by_key`]; a transaction cancelled by a failed condition is billed as if
//!   it had run (an upper bound);
//!
//! Operations the enrich path does not use (Query, Scan, batch calls) are counted but not
//! priced: [`CapacityMeter::unpriced`] says how many passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use serde_json::Value;

/// Capacity of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableCapacity {
    pub write_units: f64,
    pub read_units: f64,
    pub writes: u64,
    pub reads: u64,
    /// The largest item written.
    pub largest_item: usize,
}

/// Units billed for one item (table and key).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    pub write_units: f64,
    pub read_units: f64,
}

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<String, TableCapacity>,
    per_key: HashMap<(String, String), Units>,
    /// Last size seen per (table, key).
    sizes: HashMap<(String, String), usize>,
    transactions: u64,
    unpriced: u64,
}

impl Inner {
    /// Bills `times` writes of `bytes` to the table and to `payer`, the item whose write
    /// caused them (itself, or a transaction's put).
    fn write(
        &mut self,
        table: String,
        payer: (String, String),
        bytes: usize,
        times: f64,
    ) -> &mut TableCapacity {
        let units = write_units(bytes) * times;
        self.per_key.entry(payer).or_default().write_units += units;
        let t = self.tables.entry(table).or_default();
        t.write_units += units;
        t.writes += 1;
        t
    }

    /// A put of `item`: billed by the larger of it and the item it replaces.
    fn put(
        &mut self,
        table: String,
        item: &HashMap<String, AttributeValue>,
        applied: bool,
        times: f64,
    ) {
        let size = ember_aws::profiles::item_size(item);
        let key = (table.clone(), key_of(item));
        let before = self.sizes.get(&key).copied();
        let billed = size.max(before.unwrap_or(0));
        if applied {
            self.sizes.insert(key.clone(), size);
        }
        let t = self.write(table, key, billed, times);
        t.largest_item = t.largest_item.max(size);
    }

    /// An update or delete of the item at `key`, `after` its size when the answer says it.
    fn change(
        &mut self,
        table: String,
        key: String,
        after: Option<usize>,
        times: f64,
        payer: Option<(String, String)>,
    ) {
        let before = self.sizes.get(&(table.clone(), key.clone())).copied();
        let billed = before.unwrap_or(0).max(after.unwrap_or(0));
        let payer = payer.unwrap_or_else(|| (table.clone(), key));
        self.write(table, payer, billed, times);
    }
}

/// Sums capacity units per table; shared with the proxy.
#[derive(Debug, Default)]
pub struct CapacityMeter {
    inner: Mutex<Inner>,
}

impl CapacityMeter {
    /// Capacity per table name.
    pub fn tables(&self) -> BTreeMap<String, TableCapacity> {
        self.lock().tables.clone()
    }

    /// Units per (table, key): keys are the item's `id`, or `pk` and `sk` joined by U+001F.
    pub fn by_key(&self) -> HashMap<(String, String), Units> {
        self.lock().per_key.clone()
    }

    /// `TransactWriteItems` calls billed.
    pub fn transactions(&self) -> u64 {
        self.lock().transactions
    }

    /// Calls that passed without a price (see the module doc).
    pub fn unpriced(&self) -> u64 {
        self.lock().unpriced
    }

    /// Forgets the counters (sizes of known items are kept).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.tables.clear();
        inner.per_key.clear();
        inner.transactions = 0;
        inner.unpriced = 0;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one DynamoDB call: its operation, request body and (successful or
    /// conditional-check-failed) answer body.
    pub fn observe(&self, operation: &str, request: &[u8], status: u16, response: &[u8]) {
        let Some(op) = operation.strip_prefix("DynamoDB_20120810.") else {
            return;
        };
        let Ok(req) = serde_json::from_slice::<Value>(request) else {
            return;
        };
        let table = req["TableName"].as_str().unwrap_or_default().to_owned();
        let answered = status == 200 || is_condition_failure(response);
        if !answered {
            return; // throttled or failed: not billed
        }
        let mut inner = self.lock();
        match op {
            "PutItem" => inner.put(table, &wire_item(&req["Item"]), status == 200, 1.0),
            "UpdateItem" | "DeleteItem" => {
                let key = key_of(&wire_item(&req["Key"]));
                let after = match serde_json::from_slice::<Value>(response) {
                    Ok(v) if v.get("Attributes").is_some() => {
                        Some(ember_aws::profiles::item_size(&wire_item(&v["Attributes"])))
                    }
                    _ => None,
                };
                if op == "DeleteItem" && status == 200 {
                    inner.sizes.remove(&(table.clone(), key.clone()));
                }
                inner.change(table, key, after, 1.0, None);
            }
            "TransactWriteItems" => {
                inner.transactions += 1;
                let actions = req["TransactItems"].as_array().cloned().unwrap_or_default();
                // Every item's units go to the transaction's put (the profile whose write
                // carries the counters), so they count for that profile's customer.
                let mut payer = None;
                for action in actions {
                    if let Some(put) = action.get("Put") {
                        let table = put["TableName"].as_str().unwrap_or_default().to_owned();
                        let item = wire_item(&put["Item"]);
                        payer.get_or_insert_with(|| (table.clone(), key_of(&item)));
                        inner.put(table, &item, status == 200, 2.0);
                    } else if let Some((_, op)) = action.as_object().and_then(|m| m.iter().next()) {
                        // Update, Delete, ConditionCheck: the answer holds no sizes.
                        let table = op["TableName"].as_str().unwrap_or_default().to_owned();
                        let key = key_of(&wire_item(&op["Key"]));
                        inner.change(table, key, None, 2.0, payer.clone());
                    }
                }
            }
            "GetItem" => {
                let key = key_of(&wire_item(&req["Key"]));
                let consistent = req["ConsistentRead"].as_bool().unwrap_or(false);
                let size = serde_json::from_slice::<Value>(response)
                    .ok()
                    .filter(|v| v.get("Item").is_some())
                    .map_or(0, |v| {
                        ember_aws::profiles::item_size(&wire_item(&v["Item"]))
                    });
                inner
                    .per_key
                    .entry((table.clone(), key))
                    .or_default()
                    .read_units += read_units(size, consistent);
                let t = inner.tables.entry(table).or_default();
                t.read_units += read_units(size, consistent);
                t.reads += 1;
            }
            _ => inner.unpriced += 1,
        }
    }
}

/// One write unit per started KB (at least one).
pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// One read unit per started 4 KB for a strongly consistent read (at least one), half that
/// for an eventually consistent one.
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

fn is_condition_failure(response: &[u8]) -> bool {
    serde_json::from_slice::<Value>(response)
        .ok()
        .and_then(|v| v["__type"].as_str().map(str::to_owned))
        .is_some_and(|t| {
            t.ends_with("ConditionalCheckFailedException")
                || t.ends_with("TransactionCanceledException")
        })
}

/// The key attributes of an item (`id`, or `pk` and `sk`), as one string.
fn key_of(item: &HashMap<String, AttributeValue>) -> String {
    ["id", "pk", "sk"]
        .iter()
        .filter_map(|k| item.get(*k).and_then(|v| v.as_s().ok()))
        .cloned()
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// An item in DynamoDB's wire JSON (`{"name": {"S": "…"}}`) as SDK attribute values.
pub fn wire_item(v: &Value) -> HashMap<String, AttributeValue> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), wire_value(v))).collect())
        .unwrap_or_default()
}

fn wire_value(v: &Value) -> AttributeValue {
    let Some((kind, inner)) = v.as_object().and_then(|m| m.iter().next()) else {
        return AttributeValue::Null(true);
    };
    let text = |x: &Value| x.as_str().unwrap_or_default().to_owned();
    let bytes = |x: &Value| {
        Blob::new(
            base64::engine::general_purpose::STANDARD
                .decode(x.as_str().unwrap_or_default())
                .unwrap_or_default(),
        )
    };
    let list = |x: &Value| x.as_array().cloned().unwrap_or_default();
    match kind.as_str() {
        "S" => AttributeValue::S(text(inner)),
        "N" => AttributeValue::N(text(inner)),
        "B" => AttributeValue::B(bytes(inner)),
        "BOOL" => AttributeValue::Bool(inner.as_bool().unwrap_or(false)),
        "NULL" => AttributeValue::Null(true),
        "L" => AttributeValue::L(list(inner).iter().map(wire_value).collect()),
        "M" => AttributeValue::M(wire_item(inner)),
        "SS" => AttributeValue::Ss(list(inner).iter().map(text).collect()),
        "NS" => AttributeValue::Ns(list(inner).iter().map(text).collect()),
        "BS" => AttributeValue::Bs(list(inner).iter().map(bytes).collect()),
        _ => AttributeValue::Null(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_are_billed_by_the_larger_item_and_reads_by_4_kb() {
        let meter = CapacityMeter::default();
        let put = |text: &str| {
            serde_json::to_vec(
                &json!({"TableName": "t", "Item": {"id": {"S": "a"}, "x": {"S": text}}}),
            )
            .unwrap()
        };
        meter.observe(
            "DynamoDB_20120810.PutItem",
            &put(&"y".repeat(1500)),
            200,
            b"{}",
        );
        meter.observe("DynamoDB_20120810.PutItem", &put("small"), 200, b"{}");
        meter.observe("DynamoDB_20120810.PutItem", &put("small"), 200, b"{}");
        let failed =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}"#;
        meter.observe("DynamoDB_20120810.PutItem", &put("small"), 400, failed);
        meter.observe(
            "DynamoDB_20120810.PutItem",
            &put("small"),
            400,
            br#"{"__type":"x#ProvisionedThroughputExceededException"}"#,
        );
        let get = serde_json::to_vec(
            &json!({"TableName": "t", "Key": {"id": {"S": "a"}}, "ConsistentRead": true}),
        )
        .unwrap();
        let item =
            serde_json::to_vec(&json!({"Item": {"id": {"S": "a"}, "x": {"S": "z".repeat(5000)}}}))
                .unwrap();
        meter.observe("DynamoDB_20120810.GetItem", &get, 200, &item);
        meter.observe("DynamoDB_20120810.GetItem", &get, 200, b"{}");
        let t = meter.tables()["t"];
        // 2 (1.5 KB) + 2 (over the 1.5 KB before) + 1 + 1 (the failed condition) ; throttled free.
        assert_eq!((t.writes, t.write_units), (4, 6.0));
        assert_eq!((t.reads, t.read_units), (2, 3.0));
        assert_eq!(t.largest_item, 2 + 1 + 1 + 1500);
    }

    #[test]
    fn a_transaction_bills_each_item_twice() {
        let meter = CapacityMeter::default();
        let request = serde_json::to_vec(&json!({"TransactItems": [
            {"Put": {"TableName": "profiles",
                     "Item": {"id": {"S": "a"}, "x": {"S": "y".repeat(1500)}}}},
            {"Update": {"TableName": "ledger", "Key": {"pk": {"S": "report#c"}, "sk": {"S": "g"}},
                        "UpdateExpression": "ADD recipients :a"}}
        ]}))
        .unwrap();
        meter.observe("DynamoDB_20120810.TransactWriteItems", &request, 200, b"{}");
        let cancelled =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException"}"#;
        meter.observe(
            "DynamoDB_20120810.TransactWriteItems",
            &request,
            400,
            cancelled,
        );
        let tables = meter.tables();
        // Twice 2 units (1.5 KB) per put, twice 1 unit per counter update.
        assert_eq!(
            (tables["profiles"].writes, tables["profiles"].write_units),
            (2, 8.0)
        );
        assert_eq!(
            (tables["ledger"].writes, tables["ledger"].write_units),
            (2, 4.0)
        );
        assert_eq!((meter.transactions(), meter.unpriced()), (2, 0));
        // All of it is the profile's: the write that carried the counters.
        let by_key = meter.by_key();
        let profile = ("profiles".to_owned(), "a".to_owned());
        assert_eq!(by_key[&profile].write_units, 12.0);
        assert_eq!(by_key.len(), 1);
    }
}
