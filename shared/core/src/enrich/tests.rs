//! Decoding whole events: every event type, its problems and what borrows from the record.

use serde_json::{json, Value};

use super::*;
use crate::consent::{Channel, SuppressionReason};
use crate::event::EventType;

fn registry() -> Registry {
    Registry::embedded().unwrap()
}

fn event(t: &str, payload: Value) -> Value {
    json!({"event_id": "e-1", "type": t, "version": 1, "user_id": "u-1",
           "occurred_at": "2026-11-20T10:00:00Z", "source": "web", "payload": payload})
}

/// Decodes `v`'s JSON text.
fn decode_value(v: &Value) -> Result<EnrichedEvent<'static>, Vec<Problem>> {
    decode(&serde_json::to_vec(v).unwrap(), &registry())
}

#[test]
fn escaped_strings_read_the_same_as_plain_ones() {
    let plain = br#"{"event_id":"e-1","type":"add_to_cart","version":1,"user_id":"u-1",
        "occurred_at":"2026-11-20T10:00:00Z","source":"web",
        "context":{"page_url":"https://shop.example/p?utm_source=ig&utm_term=%20x"},
        "payload":{"sku":" HS-1 ","name":"Reaper","price":"9.50","currency":"EUR","quantity":1}}"#;
    // The same event with every string written with escape sequences.
    let escaped = br#"{"event_id":"e\u002d1","type":"add_to_cart","version":1,"user_id":"u\u002d1",
        "occurred_at":"2026-11-20T10:00:00Z","source":"w\u0065b",
        "context":{"page_url":"https:\/\/shop.example\/p?utm_source=\u0069g&utm_term=%20x"},
        "payload":{"sku":" HS\u002d1 ","name":"Re\u0061per","price":"9.50","currency":"E\u0055R","quantity":1}}"#;
    let a = decode(plain, &registry()).unwrap();
    let b = decode(escaped, &registry()).unwrap();
    assert_eq!(a, b);
    let Fact::AddToCart { item, currency } = &a.fact else {
        panic!("{a:?}")
    };
    assert_eq!((&*item.sku, &**currency), ("HS-1", "EUR"), "trimmed");
    assert_eq!(a.header.event_id, "e-1");
    assert_eq!(a.utm["utm_source"], "ig");
    assert_eq!(a.utm["utm_term"], "x", "percent-decoded and trimmed");
}

#[test]
fn add_to_cart_is_normalised() {
    let mut v = event(
        "add_to_cart",
        json!({"sku": "HS-1", "name": "Ghost", "price": "12.50", "currency": "EUR", "quantity": 2}),
    );
    v["context"] = json!({"page_url": "https://shop.example/?utm_source=ig", "user_agent": "Mozilla/5.0 (iPhone; Mobile)"});
    let e = decode_value(&v).unwrap();
    assert_eq!(
        e.fact,
        Fact::AddToCart {
            item: LineItem {
                sku: "HS-1".into(),
                name: "Ghost".into(),
                quantity: 2,
                unit_price_minor: 1250,
                url: None
            },
            currency: "EUR".into()
        }
    );
    assert_eq!(e.utm.get("utm_source").map(|v| &**v), Some("ig"));
    assert_eq!(e.device, Some(DeviceClass::Mobile));
}

#[test]
fn purchase_problems_name_the_item() {
    let v = event(
        "purchase",
        json!({"order_id": "o-1", "total": "10.50", "currency": "JPY",
               "items": [{"sku": "A", "name": "A", "price": "10.5", "quantity": 1}]}),
    );
    let problems = decode_value(&v).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["/payload/total", "/payload/items/0/price"],
        "{problems:?}"
    );
}

#[test]
fn purchase_is_normalised() {
    let v = event(
        "purchase",
        json!({"order_id": "o-1", "total": 25, "currency": "EUR",
               "items": [{"sku": "A", "name": "A", "price": "12.50", "quantity": 2}]}),
    );
    let Fact::Purchase {
        total_minor,
        currency,
        items,
        ..
    } = decode_value(&v).unwrap().fact
    else {
        panic!()
    };
    assert_eq!(
        (total_minor, currency.as_ref(), items[0].unit_price_minor),
        (2500, "EUR", 1250)
    );
}

#[test]
fn unknown_currency_is_a_problem() {
    let v = event(
        "add_to_cart",
        json!({"sku": "A", "name": "A", "price": "1", "currency": "ABC", "quantity": 1}),
    );
    let problems = decode_value(&v).unwrap_err();
    assert_eq!(
        problems,
        vec![Problem::new(
            "/payload/currency",
            "unknown ISO 4217 currency 'ABC'"
        )]
    );
}

#[test]
fn heat_preference_problems_point_at_the_value() {
    let problems = decode_value(&event("heat_preference", json!({"value": -10}))).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "/payload/value");
    let e = decode_value(&event(
        "heat_preference",
        json!({"value": "I like it really hot"}),
    ))
    .unwrap();
    assert!(matches!(
        e.fact,
        Fact::HeatPreference {
            shu: SHU_EXTRA_HOT,
            ..
        }
    ));
}

#[test]
fn identify_takes_ids_from_the_envelope() {
    let mut v = event("identify", json!({}));
    v["anonymous_id"] = json!("a-9");
    let e = decode_value(&v).unwrap();
    assert_eq!(
        e.fact,
        Fact::Identify {
            user_id: "u-1".into(),
            anonymous_id: "a-9".into()
        }
    );
    let problems = decode_value(&event("identify", json!({}))).unwrap_err();
    assert_eq!(problems[0].path, "/anonymous_id");
}

#[test]
fn profile_updated_checks_email_and_timezone() {
    let e = decode_value(&event(
        "profile_updated",
        json!({"email": "Ana@Example.COM", "timezone": "Europe/Berlin"}),
    ))
    .unwrap();
    assert_eq!(
        e.fact,
        Fact::ProfileUpdated {
            email: Some("ana@example.com".into()),
            name: None,
            timezone: Some("Europe/Berlin".into())
        }
    );
    let problems = decode_value(&event(
        "profile_updated",
        json!({"email": "not an email", "timezone": "Mars/Olympus"}),
    ))
    .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["/payload/email", "/payload/timezone"]);
}

#[test]
fn consent_and_suppression_are_typed() {
    let e = decode_value(&event(
        "consent_changed",
        json!({"channel": "email", "granted": false}),
    ))
    .unwrap();
    assert_eq!(
        e.fact,
        Fact::ConsentChanged {
            channel: Channel::Email,
            granted: false
        }
    );
    let e = decode_value(&event("email_suppressed", json!({"reason": "complaint"}))).unwrap();
    assert_eq!(
        e.fact,
        Fact::EmailSuppressed {
            reason: SuppressionReason::Complaint,
            message_id: None
        }
    );
    let problems =
        decode_value(&event("email_suppressed", json!({"reason": "bored"}))).unwrap_err();
    assert_eq!(problems[0].path, "/payload/reason");
}

#[test]
fn bad_json_and_bad_page_url_are_problems() {
    let problems = decode(b"{not json", &registry()).unwrap_err();
    assert!(problems[0].message.starts_with("not valid JSON"));
    let mut v = event("page_view", json!({}));
    v["context"] = json!({"page_url": "not a url"});
    let problems = decode_value(&v).unwrap_err();
    assert_eq!(problems[0].path, "/context/page_url");
}

#[test]
fn every_type_has_a_fixture_that_enriches() {
    let payloads = [
        ("page_view", json!({"title": "Home"})),
        (
            "product_view",
            json!({"sku": "A", "price": 3, "currency": "USD"}),
        ),
        (
            "add_to_cart",
            json!({"sku": "A", "name": "A", "price": 3, "currency": "USD", "quantity": 1}),
        ),
        ("remove_from_cart", json!({"sku": "A"})),
        (
            "checkout_started",
            json!({"total": "3.00", "currency": "USD"}),
        ),
        (
            "purchase",
            json!({"order_id": "o", "total": 3, "currency": "USD", "items": []}),
        ),
        ("email_opened", json!({"campaign": "c", "message_id": "m"})),
        (
            "email_clicked",
            json!({"campaign": "c", "message_id": "m", "link": "https://x.example"}),
        ),
        ("heat_preference", json!({"value": "medium"})),
        (
            "poll_answer",
            json!({"question_id": "q", "answer": "smoky"}),
        ),
        (
            "consent_changed",
            json!({"channel": "sms", "granted": true}),
        ),
        ("identify", json!({"anonymous_id": "a"})),
        ("profile_updated", json!({"name": "Ana"})),
        ("email_suppressed", json!({"reason": "hard_bounce"})),
        (
            "refund",
            json!({"order_id": "o", "refund_id": "r", "amount": "1.50", "currency": "USD"}),
        ),
        (
            "campaign_assigned",
            json!({"campaign": "c", "group": "holdout", "attribution_hours": 168}),
        ),
    ];
    assert_eq!(payloads.len(), EventType::ALL.len());
    for (t, p) in payloads {
        let e = decode_value(&event(t, p)).unwrap_or_else(|e| panic!("{t}: {e:?}"));
        assert_eq!(e.header.event_type.as_str(), t);
    }
}
