//! DynamoDB implementation of [`EventClaims`], in the ledger table: one small item per event
//! id (`pk = event#<event id>`, `sk = claim`) holding the origin that claimed it (`by`) and
//! the TTL attribute `expires_at`.
//!
//! The claim is one conditional put: `attribute_not_exists(pk) OR expires_at <= now OR by =
//! :origin`. The last clause is what makes it safe under lost answers: the SDK retries a put
//! whose answer was lost, and the retry finds its own claim and succeeds, instead of failing
//! its condition and looking like a duplicate. An item is ~100 bytes: 1 write unit per claim.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use ember_core::ports::{Claim, EventClaims, PortResult};

use crate::ledger::{conditional, DynamoLedger, EXPIRES_AT, PK, SK};
use crate::retry::classify;

/// The attribute holding the claiming origin.
pub const BY: &str = "by";
/// The sort key of every claim item.
pub const CLAIM_SK: &str = "claim";

/// The ledger partition of an event id's claim.
pub fn claim_pk(event_id: &str) -> String {
    format!("event#{event_id}")
}

#[async_trait]
impl EventClaims for DynamoLedger {
    async fn claim(
        &self,
        event_id: &str,
        origin: &str,
        expires_at: DateTime<Utc>,
    ) -> PortResult<Claim> {
        let outcome = self
            .client()
            .put_item()
            .table_name(self.table())
            .item(PK, AttributeValue::S(claim_pk(event_id)))
            .item(SK, AttributeValue::S(CLAIM_SK.to_owned()))
            .item(BY, AttributeValue::S(origin.to_owned()))
            .item(
                EXPIRES_AT,
                AttributeValue::N(expires_at.timestamp().to_string()),
            )
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now OR #by = :by")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_names("#by", BY)
            .expression_attribute_values(":now", AttributeValue::N(self.now_secs().to_string()))
            .expression_attribute_values(":by", AttributeValue::S(origin.to_owned()))
            .send()
            .await;
        Ok(if conditional(outcome, "claim.put")? {
            Claim::Granted
        } else {
            Claim::Held
        })
    }

    async fn release(&self, event_id: &str, origin: &str) -> PortResult<()> {
        let outcome = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(claim_pk(event_id)))
            .key(SK, AttributeValue::S(CLAIM_SK.to_owned()))
            .condition_expression("#by = :by")
            .expression_attribute_names("#by", BY)
            .expression_attribute_values(":by", AttributeValue::S(origin.to_owned()))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            // Another origin's claim (or none): nothing of ours to release.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(&e, "claim.release")),
        }
    }

    async fn holder(&self, event_id: &str) -> PortResult<Option<String>> {
        let item = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, AttributeValue::S(claim_pk(event_id)))
            .key(SK, AttributeValue::S(CLAIM_SK.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&e, "claim.get"))?
            .item
            .unwrap_or_default();
        let live = match item.get(EXPIRES_AT) {
            Some(AttributeValue::N(n)) => n.parse::<i64>().is_ok_and(|t| t > self.now_secs()),
            _ => true,
        };
        Ok(match item.get(BY) {
            Some(AttributeValue::S(by)) if live => Some(by.clone()),
            _ => None,
        })
    }
}
