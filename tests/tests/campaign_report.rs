//! Campaign reports against the emulator: `campaign_assigned`, purchases and refunds through
//! the enrich handler on real DynamoDB, the counters it adds in the profile's transaction,
//! and `GET /v1/campaigns/{name}/report` reading them. The batch is applied three times (a
//! redelivery, then the same events re-sent under new stream records): every count once.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ember_core::fold::FoldConfig;
use ember_enrich::{Deps, Settings};
use ember_tests::api_support::setup;
use ember_tests::emulator::{failed_sequence_numbers, kinesis_event};
use serde_json::{json, Value};

const CAMPAIGN: &str = "churn_winback";
const CUSTOMERS: usize = 24;

fn t0() -> DateTime<Utc> {
    "2026-11-02T10:00:00Z".parse().unwrap()
}

fn event(id: String, user: &str, kind: &str, at: DateTime<Utc>, payload: Value) -> Value {
    json!({"event_id": id, "type": kind, "version": 1, "user_id": user,
           "occurred_at": at.to_rfc3339(), "source": "test", "payload": payload})
}

/// What each customer does, and the report it must produce (by hand, from the rules).
struct Scenario {
    events: Vec<Value>,
    /// group → (recipients, conversions, revenue in cents)
    expected: BTreeMap<String, (u64, u64, i64)>,
}

fn scenario() -> Scenario {
    let mut events = Vec::new();
    let mut expected: BTreeMap<String, (u64, u64, i64)> = BTreeMap::new();
    for i in 0..CUSTOMERS {
        let user = format!("u-report-{i}");
        let group = if i % 3 == 0 { "holdout" } else { "email" };
        events.push(event(
            format!("assigned-{i}"),
            &user,
            "campaign_assigned",
            t0(),
            json!({"campaign": CAMPAIGN, "group": group, "attribution_hours": 168}),
        ));
        let e = expected.entry(group.to_owned()).or_default();
        e.0 += 1;
        if i % 2 == 0 {
            let order = format!("pi_{i}");
            events.push(event(
                format!("purchase-{i}"),
                &user,
                "purchase",
                t0() + Duration::days(1),
                json!({"order_id": order, "total": "10.00", "currency": "EUR", "items": []}),
            ));
            e.1 += 1;
            e.2 += 1_000;
            match i % 8 {
                // Refunded in full: revenue back, no longer a conversion.
                2 => {
                    events.push(event(
                        format!("refund-{i}"),
                        &user,
                        "refund",
                        t0() + Duration::days(3),
                        json!({"order_id": order, "refund_id": format!("re_{i}"),
                               "amount": "10.00", "currency": "EUR"}),
                    ));
                    e.1 -= 1;
                    e.2 -= 1_000;
                }
                // Refunded in part: still a conversion.
                4 => {
                    events.push(event(
                        format!("refund-{i}"),
                        &user,
                        "refund",
                        t0() + Duration::days(20),
                        json!({"order_id": order, "refund_id": format!("re_{i}"),
                               "amount": "4.00", "currency": "EUR"}),
                    ));
                    e.2 -= 400;
                }
                _ => {}
            }
        }
        if i % 5 == 0 {
            // After the window: not the campaign's.
            events.push(event(
                format!("late-{i}"),
                &user,
                "purchase",
                t0() + Duration::days(9),
                json!({"order_id": format!("pi_late_{i}"), "total": "99.00", "currency": "EUR", "items": []}),
            ));
        }
    }
    Scenario { events, expected }
}

#[tokio::test]
async fn assignments_purchases_and_refunds_are_counted_once_and_reported() {
    let env = setup().await;
    let bus = env.aws.create_bus("report-bus").await.expect("bus");
    let dlq = env.aws.create_queue("report-dlq").await.expect("dlq");
    let settings = Settings {
        profiles_table: env.profiles_table.clone(),
        ledger_table: env.ledger_table.clone(),
        event_bus_name: bus,
        dead_letter_queue_url: dlq.url.clone(),
        fold: FoldConfig::default(),
        dedup_window: chrono::Duration::days(35),
        config_ttl: std::time::Duration::ZERO,
        stage: "test".into(),
    };
    let clock = ember_core::clock::SystemClock::shared();
    let Scenario { events, expected } = scenario();
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let key = e["user_id"].as_str().unwrap().to_owned();
            (key, serde_json::to_vec(e).unwrap())
        })
        .collect();
    // The batch, its redelivery, and the same events re-sent under new records.
    for first_sequence in [0, 0, 10_000] {
        let batch = kinesis_event("shardId-000000000000", first_sequence, &records);
        let deps = Deps::build(&env.aws.config, &settings, clock.clone()).expect("deps");
        let (response, _, _) = deps.process(&batch).await;
        assert!(failed_sequence_numbers(&response).is_empty());
    }
    let dead = env
        .aws
        .drain(&dlq.url, std::time::Duration::from_millis(300))
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");

    // The counters, as the API reports them.
    let path = format!("/v1/campaigns/{CAMPAIGN}/report");
    let (status, report) = env.admin("GET", &path, None).await;
    assert_eq!(status, 200, "{report}");
    let reported: BTreeMap<String, (u64, u64, i64)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_owned(),
                (
                    g["recipients"].as_u64().unwrap(),
                    g["conversions"].as_u64().unwrap(),
                    g["revenue_minor"]["EUR"].as_i64().unwrap_or(0),
                ),
            )
        })
        .collect();
    assert_eq!(reported, expected);
    let names: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["email", "holdout"], "sent groups first");
    let email = &report["groups"][0];
    assert!(email["uplift"]["absolute_ci95"].as_array().unwrap().len() == 2);

    // A recount from the profiles read back agrees with the counters.
    let mut recount: BTreeMap<String, (u64, u64, i64)> = BTreeMap::new();
    for i in 0..CUSTOMERS {
        let p = env
            .aws
            .profile(&env.profiles_table, &format!("u-report-{i}"))
            .await;
        let group = if i % 3 == 0 { "holdout" } else { "email" };
        let r = recount.entry(group.to_owned()).or_default();
        r.0 += 1;
        match p.campaigns.get(CAMPAIGN) {
            Some(exposure) => {
                assert_eq!(exposure.group, group);
                r.1 += u64::from(exposure.converted);
                r.2 += exposure.orders.values().sum::<i64>();
            }
            // Dropped at the late purchase: its window was over with nothing paid to refund.
            None => assert!(
                i % 5 == 0 && (i % 2 == 1 || i % 8 == 2),
                "customer {i} lost an exposure that can still change"
            ),
        }
        // The purchase totals are net of refunds (`big_spender` is not overstated).
        let refunded = match i % 8 {
            2 => 1_000,
            4 => 400,
            _ => 0,
        };
        let bought = if i % 2 == 0 { 1_000 } else { 0 } + if i % 5 == 0 { 9_900 } else { 0 };
        assert_eq!(
            p.purchase_totals_minor.get("EUR").copied().unwrap_or(0),
            bought - refunded,
            "customer {i}"
        );
    }
    assert_eq!(recount, expected);

    // An unknown campaign without counters is a 404; the report needs the admin key.
    let (status, _) = env.admin("GET", "/v1/campaigns/nope/report", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn campaign_assigned_events_are_refused_at_the_api() {
    let env = setup().await;
    let forged = event(
        "forged-1".into(),
        "u-1",
        "campaign_assigned",
        t0(),
        json!({"campaign": CAMPAIGN, "group": "email", "attribution_hours": 168}),
    );
    let payload = ember_tests::api_support::with_body("event-single.json", &forged.to_string());
    let (status, body) = env.call_payload(&payload).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains("written by Ember itself"),
        "{body}"
    );
    assert!(env.records().await.is_empty());
}
