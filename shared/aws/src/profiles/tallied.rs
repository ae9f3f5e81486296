//! A profile write with campaign report counters: one `TransactWriteItems` holding the
//! profile's conditional put and an `ADD` to each (campaign, group) record of the ledger.
//! The transaction is all or nothing, so the counters move exactly when the profile (and its
//! stream watermark) does. A retry of a transaction whose answer was lost carries the same
//! client request token and is answered without being applied again. A store sends one such
//! transaction at a time (its profiles' writes would otherwise cancel each other on a shared
//! counter), and a cancellation by another invocation's transaction is a version conflict:
//! re-read, refold, write again.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use ember_core::attribution::{report_pk, revenue_attribute};
use ember_core::ports::{PortError, PortResult};
use ember_core::profile::{Profile, Tally};

use super::{condition, to_item, DynamoProfileStore};
use crate::retry::{classify, is_transient_code};

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
        let _one_at_a_time = self.tallying.lock().await;
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    let codes: Vec<&str> = c
                        .cancellation_reasons()
                        .iter()
                        .filter_map(|r| r.code())
                        .collect();
                    Err(cancelled(&codes, expected_version)
                        .unwrap_or_else(|| classify(&e, "profile.put")))
                }
                _ => Err(classify(&e, "profile.put")),
            },
        }
    }
}

/// What a cancelled transaction means, from its cancellation reasons (the profile's first,
/// then one per counter), when it is not a plain failure. Nothing of a cancelled transaction
/// was applied, so each of these is retried whole.
fn cancelled(codes: &[&str], expected_version: u64) -> Option<PortError> {
    if codes.first() == Some(&"ConditionalCheckFailed") {
        return Some(PortError::Conflict(format!(
            "the profile is no longer at version {expected_version}"
        )));
    }
    // Another transaction (another shard's invocation) held a counter record: re-read and
    // write again, after the handler's conflict backoff.
    if codes.contains(&"TransactionConflict") {
        return Some(PortError::Conflict(
            "a concurrent transaction held a campaign counter".into(),
        ));
    }
    if codes.iter().any(|c| is_transient_code(c)) {
        return Some(PortError::Transient {
            stage: "profile.put",
            reason: format!("transaction cancelled: {}", codes.join(", ")),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_transaction_is_retried_unless_it_is_refused() {
        let version = |e: Option<PortError>| matches!(e, Some(PortError::Conflict(r)) if r.contains("version 7"));
        assert!(version(cancelled(&["ConditionalCheckFailed", "None"], 7)));
        assert!(matches!(
            cancelled(&["None", "TransactionConflict"], 7),
            Some(PortError::Conflict(_))
        ));
        assert!(matches!(
            cancelled(&["None", "ThrottlingError"], 7),
            Some(PortError::Transient { .. })
        ));
        assert!(matches!(
            cancelled(&["None", "ProvisionedThroughputExceeded"], 7),
            Some(PortError::Transient { .. })
        ));
        // A refused item (for example too large) is the error as DynamoDB gave it.
        assert!(cancelled(&["ValidationError", "None"], 7).is_none());
    }
}
