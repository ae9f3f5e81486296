//! DynamoDB implementation of [`ProfileStore`]: one item per profile, partition key `id`
//! (string), optimistic locking on the `version` attribute.
//!
//! - `item.rs`: the item's form (the [`Profile`] fields via `serde_dynamo`) and the size
//!   DynamoDB bills it at;
//! - `tallied.rs`: a write that adds to the campaign report counters in the same
//!   transaction;
//! - `legacy.rs`: reading items written by versions that kept a ring of event ids in the
//!   profile (rewritten in the current form by the next write).

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use ember_core::ports::{check_scan_segment, PortError, PortResult, ProfileStore};
use std::collections::HashMap;

use ember_core::profile::{Profile, Tally};

use crate::retry::classify;

mod item;
mod legacy;
mod tallied;

pub use item::{from_item, item_size, to_item, MAX_ITEM_BYTES};

/// Name of the table's partition key attribute (a string: the profile id).
pub const KEY_ATTRIBUTE: &str = "id";

/// Profiles in one DynamoDB table (name from configuration, e.g. `PROFILES_TABLE`).
#[derive(Debug, Clone)]
pub struct DynamoProfileStore {
    client: Client,
    table: String,
    /// The ledger table, where writes with tallies add to the campaign report counters.
    report_table: Option<String>,
    /// Held for each counter transaction: a batch's profiles are written concurrently, and
    /// their transactions often add to the same counter record, which DynamoDB would cancel
    /// as `TransactionConflict`. Clones share it.
    tallying: std::sync::Arc<tokio::sync::Mutex<()>>,
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
            report_table: None,
            tallying: Default::default(),
        }
    }

    /// Writes campaign report counters (`put_tallied`) to `ledger_table`.
    pub fn with_report_table(mut self, ledger_table: impl Into<String>) -> Self {
        self.report_table = Some(ledger_table.into());
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn key(id: &str) -> (String, AttributeValue) {
        (KEY_ATTRIBUTE.to_owned(), AttributeValue::S(id.to_owned()))
    }
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
        let (expression, names, values) = condition(expected_version);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(profile)?))
            .condition_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(values);
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Err(PortError::Conflict(
                    format!("the profile is no longer at version {expected_version}"),
                )),
                _ => Err(classify(&e, "profile.put")),
            },
        }
    }

    async fn put_tallied(
        &self,
        profile: &Profile,
        expected_version: u64,
        tallies: &[Tally],
    ) -> PortResult<()> {
        if tallies.is_empty() {
            return self.put(profile, expected_version).await;
        }
        self.put_with_tallies(profile, expected_version, tallies)
            .await
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
                Err(e) => {
                    tracing::warn!(profile = %ember_core::privacy::masked(&id), error = %e, "scanned profile skipped")
                }
            }
        }
        let next = out
            .last_evaluated_key
            .and_then(|mut key| key.remove(KEY_ATTRIBUTE))
            .and_then(|v| v.as_s().ok().cloned());
        Ok((profiles, next))
    }
}

type Names = HashMap<String, String>;
type Values = Option<HashMap<String, AttributeValue>>;

/// The optimistic lock of a write: the item must not exist (`expected_version` 0) or must
/// still be at `expected_version`.
fn condition(expected_version: u64) -> (&'static str, Names, Values) {
    if expected_version == 0 {
        let names = HashMap::from([("#id".to_owned(), KEY_ATTRIBUTE.to_owned())]);
        ("attribute_not_exists(#id)", names, None)
    } else {
        let names = HashMap::from([("#v".to_owned(), "version".to_owned())]);
        let values = HashMap::from([(
            ":expected".to_owned(),
            AttributeValue::N(expected_version.to_string()),
        )]);
        ("#v = :expected", names, Some(values))
    }
}

/// Items per scan page (DynamoDB also stops a page at 1 MB).
pub const SCAN_PAGE_SIZE: i32 = 100;
