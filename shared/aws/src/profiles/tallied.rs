//! A profile write with campaign report counters: one `TransactWriteItems` holding the
//! profile's conditional put and an `ADD` to each (campaign, group) record of the ledger.
//! The transaction is all or nothing, so the counters move exactly when the profile (and its
//! stream watermark) does. A retry of a transaction whose answer was lost carries the same
//! client request token and is answered without being applied again.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use ember_core::attribution::{report_pk, revenue_attribute};
use ember_core::ports::{PortError, PortResult};
use ember_core::profile::{Profile, Tally};

use super::{condition, to_item, DynamoProfileStore};
use crate::retry::classify;

fn invalid(reason: String) -> PortError {
    PortError::Permanent {
        stage: "profile.tally",
        reason,
    }
}

/// `ADD recipients :a0, conversions :a1, #n2 :a2 …` on the group's record.
fn tally_update(table: &str, t: &Tally) -> PortResult<TransactWriteItem> {
    let mut adds = vec![("recipients".to_owned(), t.recipients)];
    adds.push(("conversions".to_owned(), t.conversions));
    adds.extend(
        t.revenue_minor
            .iter()
            .map(|(currency, by)| (revenue_attribute(currency), *by)),
    );
    let mut update = Update::builder()
        .table_name(table)
        .key("pk", AttributeValue::S(report_pk(&t.campaign)))
        .key("sk", AttributeValue::S(t.group.clone()));
    let mut clauses = Vec::new();
    for (i, (name, by)) in adds.iter().enumerate() {
        clauses.push(format!("#n{i} :a{i}"));
        update = update
            .expression_attribute_names(format!("#n{i}"), name)
            .expression_attribute_values(format!(":a{i}"), AttributeValue::N(by.to_string()));
    }
    let update = update
        .update_expression(format!("ADD {}", clauses.join(", ")))
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

impl DynamoProfileStore {
    pub(super) async fn put_with_tallies(
        &self,
        profile: &Profile,
        expected_version: u64,
        tallies: &[Tally],
    ) -> PortResult<()> {
        let Some(report_table) = self.report_table.as_deref() else {
            return Err(invalid(
                "no report table configured: campaign counters cannot be written".into(),
            ));
        };
        let (expression, names, values) = condition(expected_version);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(profile)?))
            .condition_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build());
        for t in tallies {
            request = request.transact_items(tally_update(report_table, t)?);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c))
                    if c.cancellation_reasons().first().and_then(|r| r.code())
                        == Some("ConditionalCheckFailed") =>
                {
                    Err(PortError::Conflict(format!(
                        "the profile is no longer at version {expected_version}"
                    )))
                }
                _ => Err(classify(&e, "profile.put")),
            },
        }
    }
}
