//! Payments provider (Stripe-compatible) events mapped to Ember events.
//!
//! | provider event | Ember event |
//! | --- | --- |
//! | `checkout.session.completed` (paid), `checkout.session.async_payment_succeeded` | `purchase` |
//! | `payment_intent.succeeded` | `purchase` |
//! | `checkout.session.created` | `checkout_started` |
//! | `refund.created`, `charge.refunded` (each refund in `refunds.data`) | `refund` |
//! | anything else | ignored (200, so the provider does not retry) |
//!
//! The customer is `data.object.metadata.user_id` (or `metadata.anonymous_id`). Amounts come
//! in minor units and are converted to the decimal major units the schemas expect. The
//! purchase's order id is the payment intent id when known, so a checkout session and its
//! payment intent map to the *same* Ember event id and enrichment counts the order once.
//! Likewise a refund's event id comes from the refund id, so `refund.created` and
//! `charge.refunded` announcing the same refund subtract it once; its order id is the payment
//! intent, the order id of the purchase it reverses.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{derived_id, Mapped};
use crate::error::ApiError;

pub const PROVIDER: &str = "payments";

/// Digits after the decimal point of a currency's minor unit (ISO 4217 / Stripe).
pub fn currency_exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" | "ISK" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" | "IQD" | "LYD" => 3,
        _ => 2,
    }
}

/// `2599, "eur"` -> `"25.99"`; `500, "jpy"` -> `"500"`.
pub fn minor_to_major(amount: i64, currency: &str) -> String {
    let exp = currency_exponent(currency);
    if exp == 0 {
        return amount.to_string();
    }
    let factor = 10i64.pow(exp);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let f = factor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / f,
        abs % f,
        width = exp as usize
    )
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Maps one verified payments webhook body.
pub fn map(body: &Value, now: DateTime<Utc>) -> Result<Mapped, ApiError> {
    let invalid = |m: &str| ApiError::InvalidRequest(format!("payments event: {m}"));
    let delivery_id = str_at(body, "/id")
        .ok_or_else(|| invalid("missing id"))?
        .to_owned();
    let kind = str_at(body, "/type").ok_or_else(|| invalid("missing type"))?;
    let object = body
        .pointer("/data/object")
        .filter(|o| o.is_object())
        .ok_or_else(|| invalid("missing data.object"))?;
    let occurred_at = body
        .get("created")
        .and_then(Value::as_i64)
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .unwrap_or(now)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let ignored = |reason: String| {
        Ok(Mapped::Ignored {
            delivery_id: delivery_id.clone(),
            reason,
        })
    };

    let user_id = str_at(object, "/metadata/user_id");
    let anonymous_id = str_at(object, "/metadata/anonymous_id");
    if matches!(kind, "refund.created" | "charge.refunded") {
        if user_id.is_none() && anonymous_id.is_none() {
            return ignored(
                "no metadata.user_id or metadata.anonymous_id to attribute it to".into(),
            );
        }
        let Some(order_id) = str_at(object, "/payment_intent") else {
            return ignored("refund without a payment_intent: no order to reverse".into());
        };
        let refunds: Vec<&Value> = if kind == "refund.created" {
            vec![object]
        } else {
            object
                .pointer("/refunds/data")
                .and_then(Value::as_array)
                .map(|list| list.iter().collect())
                .unwrap_or_default()
        };
        if refunds.is_empty() {
            return ignored("charge.refunded without refunds.data".into());
        }
        let mut events = Vec::new();
        for refund in refunds {
            let id = str_at(refund, "/id").ok_or_else(|| invalid("refund without id"))?;
            let currency = str_at(refund, "/currency")
                .or_else(|| str_at(object, "/currency"))
                .ok_or_else(|| invalid("refund without currency"))?;
            let amount = refund
                .get("amount")
                .and_then(Value::as_i64)
                .filter(|a| *a > 0)
                .ok_or_else(|| invalid("refund without a positive amount"))?;
            events.push(with_customer(
                json!({
                    "event_id": derived_id(PROVIDER, &format!("refund:{id}")),
                    "type": "refund",
                    "version": 1,
                    "occurred_at": occurred_at,
                    "source": PROVIDER,
                    "payload": {
                        "order_id": order_id,
                        "refund_id": id,
                        "amount": minor_to_major(amount, currency),
                        "currency": currency.to_ascii_uppercase(),
                    },
                }),
                user_id,
                anonymous_id,
            ));
        }
        return Ok(Mapped::Events {
            delivery_id,
            events,
        });
    }
    let event_type = match kind {
        "checkout.session.completed" => {
            let status = str_at(object, "/payment_status").unwrap_or("paid");
            if status != "paid" && status != "no_payment_required" {
                return ignored(format!("checkout not paid yet (payment_status {status})"));
            }
            "purchase"
        }
        "checkout.session.async_payment_succeeded" | "payment_intent.succeeded" => "purchase",
        "checkout.session.created" => "checkout_started",
        other => return ignored(format!("event type {other} is not used by Ember")),
    };
    if user_id.is_none() && anonymous_id.is_none() {
        return ignored("no metadata.user_id or metadata.anonymous_id to attribute it to".into());
    }
    let object_id = str_at(object, "/id").ok_or_else(|| invalid("missing data.object.id"))?;
    let currency =
        str_at(object, "/currency").ok_or_else(|| invalid("missing data.object.currency"))?;
    let amount = ["/amount_total", "/amount_received", "/amount"]
        .iter()
        .find_map(|p| object.pointer(p).and_then(Value::as_i64))
        .ok_or_else(|| invalid("missing amount (amount_total, amount_received or amount)"))?;
    let total = minor_to_major(amount, currency);
    let currency_upper = currency.to_ascii_uppercase();

    let (event_id, payload) = if event_type == "purchase" {
        let order_id = if kind == "payment_intent.succeeded" {
            object_id
        } else {
            str_at(object, "/payment_intent").unwrap_or(object_id)
        };
        let items = line_items(object, currency);
        (
            derived_id(PROVIDER, &format!("purchase:{order_id}")),
            json!({ "order_id": order_id, "total": total, "currency": currency_upper, "items": items }),
        )
    } else {
        (
            derived_id(PROVIDER, &format!("checkout_started:{object_id}")),
            json!({ "checkout_id": object_id, "total": total, "currency": currency_upper }),
        )
    };
    let event = json!({
        "event_id": event_id,
        "type": event_type,
        "version": 1,
        "occurred_at": occurred_at,
        "source": PROVIDER,
        "payload": payload,
    });
    Ok(Mapped::Events {
        delivery_id,
        events: vec![with_customer(event, user_id, anonymous_id)],
    })
}

fn with_customer(mut event: Value, user_id: Option<&str>, anonymous_id: Option<&str>) -> Value {
    if let Some(u) = user_id {
        event["user_id"] = json!(u);
    }
    if let Some(a) = anonymous_id {
        event["anonymous_id"] = json!(a);
    }
    event
}

/// Expanded `line_items.data[]` (when the provider sends them) as purchase items.
fn line_items(object: &Value, currency: &str) -> Vec<Value> {
    let Some(lines) = object.pointer("/line_items/data").and_then(Value::as_array) else {
        return Vec::new();
    };
    lines
        .iter()
        .filter_map(|line| {
            let sku = str_at(line, "/price/product").or_else(|| str_at(line, "/price/id"))?;
            let name = str_at(line, "/description").unwrap_or(sku);
            let unit = line.pointer("/price/unit_amount").and_then(Value::as_i64)?;
            let quantity = line.get("quantity").and_then(Value::as_u64).unwrap_or(1);
            Some(json!({ "sku": sku, "name": name, "price": minor_to_major(unit, currency), "quantity": quantity }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_become_decimal_strings() {
        assert_eq!(minor_to_major(2599, "eur"), "25.99");
        assert_eq!(minor_to_major(5, "usd"), "0.05");
        assert_eq!(minor_to_major(500, "JPY"), "500");
        assert_eq!(minor_to_major(1234, "kwd"), "1.234");
        assert_eq!(minor_to_major(-250, "usd"), "-2.50");
    }

    fn session(kind: &str, status: &str) -> Value {
        json!({"id": "evt_1", "type": kind, "created": 1763634000, "data": {"object": {
            "id": "cs_1", "amount_total": 2599, "currency": "eur", "payment_status": status,
            "payment_intent": "pi_1", "metadata": {"user_id": "u-1"}}}})
    }

    #[test]
    fn a_refund_announced_twice_is_one_refund_event_of_the_order() {
        let now = Utc::now();
        let created = json!({"id": "evt_9", "type": "refund.created", "data": {"object": {
            "id": "re_1", "amount": 1000, "currency": "eur", "payment_intent": "pi_1",
            "metadata": {"user_id": "u-1"}}}});
        let charge = json!({"id": "evt_10", "type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "currency": "eur", "payment_intent": "pi_1", "metadata": {"user_id": "u-1"},
            "refunds": {"data": [{"id": "re_1", "amount": 1000}, {"id": "re_2", "amount": 599}]}}}});
        let Mapped::Events { events: a, .. } = map(&created, now).unwrap() else {
            panic!("not mapped")
        };
        let Mapped::Events { events: b, .. } = map(&charge, now).unwrap() else {
            panic!("not mapped")
        };
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 2);
        assert_eq!(a[0]["event_id"], b[0]["event_id"]);
        assert_eq!(a[0]["type"], "refund");
        assert_eq!(a[0]["user_id"], "u-1");
        assert_eq!(
            b[1]["payload"],
            json!({"order_id": "pi_1", "refund_id": "re_2", "amount": "5.99", "currency": "EUR"})
        );
        // No order to reverse, or nobody to attribute it to: answered, not mapped.
        let mut orphan = created.clone();
        orphan["data"]["object"]["payment_intent"] = Value::Null;
        assert!(matches!(map(&orphan, now), Ok(Mapped::Ignored { .. })));
        let mut anonymous = created;
        anonymous["data"]["object"]["metadata"] = json!({});
        assert!(matches!(map(&anonymous, now), Ok(Mapped::Ignored { .. })));
    }

    #[test]
    fn session_and_intent_share_one_purchase_id() {
        let now = Utc::now();
        let Mapped::Events {
            events,
            delivery_id,
        } = map(&session("checkout.session.completed", "paid"), now).unwrap()
        else {
            panic!("not mapped")
        };
        assert_eq!(delivery_id, "evt_1");
        assert_eq!(events[0]["type"], "purchase");
        assert_eq!(
            events[0]["payload"],
            json!({"order_id": "pi_1", "total": "25.99", "currency": "EUR", "items": []})
        );
        assert_eq!(events[0]["occurred_at"], "2025-11-20T10:20:00Z");
        let intent = json!({"id": "evt_2", "type": "payment_intent.succeeded", "data": {"object": {
            "id": "pi_1", "amount": 2599, "currency": "eur", "metadata": {"user_id": "u-1"}}}});
        let Mapped::Events { events: e2, .. } = map(&intent, now).unwrap() else {
            panic!("not mapped")
        };
        assert_eq!(e2[0]["event_id"], events[0]["event_id"]);
    }

    #[test]
    fn unpaid_unknown_and_unattributed_are_ignored() {
        let now = Utc::now();
        assert!(matches!(
            map(&session("checkout.session.completed", "unpaid"), now),
            Ok(Mapped::Ignored { .. })
        ));
        assert!(matches!(
            map(&session("invoice.paid", "paid"), now),
            Ok(Mapped::Ignored { .. })
        ));
        let mut anon = session("checkout.session.completed", "paid");
        anon["data"]["object"]["metadata"] = json!({});
        assert!(matches!(map(&anon, now), Ok(Mapped::Ignored { .. })));
        assert!(matches!(
            map(&json!({"type": "x"}), now),
            Err(ApiError::InvalidRequest(_))
        ));
    }

    #[test]
    fn created_session_is_checkout_started() {
        let Mapped::Events { events, .. } =
            map(&session("checkout.session.created", "unpaid"), Utc::now()).unwrap()
        else {
            panic!("not mapped")
        };
        assert_eq!(events[0]["type"], "checkout_started");
        assert_eq!(events[0]["payload"]["checkout_id"], "cs_1");
    }
}
