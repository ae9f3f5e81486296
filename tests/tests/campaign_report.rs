//! Campaign reports against the emulator: `campaign_assigned`, purchases and refunds through
//! the enrich handler on real DynamoDB, the counters it adds in the profile's transaction,
//! and `GET /v1/campaigns/{name}/report` reading them. The batch is applied three times (a
//! redelivery, then the same events re-sent under new stream records): every count once. A
//! transaction DynamoDB cancels for a concurrent one is written again, counted once too; and
//! the report page of the counters renders in headless Chromium.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ember_aws::ledger::DynamoLedger;
use ember_core::fold::FoldConfig;
use ember_core::report::CampaignReport;
use ember_enrich::{Deps, Settings};
use ember_tests::api_support::{setup, Env};
use ember_tests::emulator::{failed_sequence_numbers, kinesis_event};
use ember_tests::faults::{op, Fault, FaultProxy, Rule};
use serde_json::{json, Value};

const CAMPAIGN: &str = "churn_winback";
const CUSTOMERS: usize = 24;

/// Writes the HTML report of `reports` and has headless Chromium render it
/// (`infra/check-report.sh`: a chart and a table per campaign). Without Chromium the check is
/// skipped, unless `EMBER_REQUIRE_BROWSER` is set (CI installs Chromium and sets it).
fn browser_renders(reports: &[CampaignReport]) {
    let dir = std::env::temp_dir().join(format!("ember-report-{}", uuid::Uuid::new_v4()));
    let page = ember_local::report::write_html(&dir, reports).expect("report page");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/check-report.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&page)
        .output()
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => assert!(text.contains("1 campaign reports"), "{text}"),
        // The script's "no Chromium here".
        Some(2) if std::env::var_os("EMBER_REQUIRE_BROWSER").is_none() => {
            eprintln!("report page not rendered: {text}")
        }
        _ => panic!("the report page did not render with a chart and a table: {text}"),
    }
}

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

/// Enrich's settings on the test's tables, a fresh bus and dead-letter queue (its URL too).
async fn settings(env: &Env) -> (Settings, String) {
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
    (settings, dlq.url)
}

/// The events as stream records keyed by customer.
fn records(events: &[Value]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            let key = e["user_id"].as_str().unwrap().to_owned();
            (key, serde_json::to_vec(e).unwrap())
        })
        .collect()
}

/// The campaign's report from the API, once enrich has dead-lettered nothing.
async fn report_without_dead_letters(env: &Env, dlq: &str) -> Value {
    let dead = env
        .aws
        .drain(dlq, std::time::Duration::from_millis(300))
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    let path = format!("/v1/campaigns/{CAMPAIGN}/report");
    let (status, report) = env.admin("GET", &path, None).await;
    assert_eq!(status, 200, "{report}");
    report
}

/// (recipients, conversions, EUR revenue) by group, from the API's report.
fn by_group(report: &Value) -> BTreeMap<String, (u64, u64, i64)> {
    report["groups"]
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
        .collect()
}

#[tokio::test]
async fn assignments_purchases_and_refunds_are_counted_once_and_reported() {
    let env = setup().await;
    let (settings, dlq) = settings(&env).await;
    let clock = ember_core::clock::SystemClock::shared();
    let Scenario { events, expected } = scenario();
    let records = records(&events);
    // The batch, its redelivery, and the same events re-sent under new records.
    for first_sequence in [0, 0, 10_000] {
        let batch = kinesis_event("shardId-000000000000", first_sequence, &records);
        let deps = Deps::build(&env.aws.config, &settings, clock.clone()).expect("deps");
        let (response, _, _) = deps.process(&batch).await;
        assert!(failed_sequence_numbers(&response).is_empty());
    }
    // The counters, as the API reports them.
    let report = report_without_dead_letters(&env, &dlq).await;
    assert_eq!(by_group(&report), expected);
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

    // The page `make demo` writes, from these counters, rendered by a real browser.
    let ledger = DynamoLedger::new(env.aws.dynamodb.clone(), &env.ledger_table);
    let groups = ["email".to_owned(), "holdout".to_owned()];
    let page = ember_api::report::campaign_report(&ledger, CAMPAIGN, &groups)
        .await
        .expect("report");
    browser_renders(&[page]);

    // An unknown campaign without counters is a 404; the report needs the admin key.
    let (status, _) = env.admin("GET", "/v1/campaigns/nope/report", None).await;
    assert_eq!(status, 404);
}

/// DynamoDB cancels a transaction while another holds one of its items
/// (`TransactionConflict`): nothing of it is applied, and enrich re-reads, refolds and writes
/// again, so the batch succeeds and every count is still made once.
#[tokio::test]
async fn a_transaction_cancelled_by_a_concurrent_one_is_written_again() {
    let env = setup().await;
    let (settings, dlq) = settings(&env).await;
    let proxy = FaultProxy::from_env()
        .await
        .expect("AWS_ENDPOINT_URL must point at the emulator");
    let conflicts =
        proxy.add(Rule::new(op::DDB_TRANSACT_WRITE_ITEMS, Fault::TransactionConflict).first(4));
    let conf = proxy
        .sdk_config(3, std::time::Duration::from_secs(10))
        .await;
    let Scenario { events, expected } = scenario();
    let batch = kinesis_event("shardId-000000000000", 0, &records(&events));
    let deps =
        Deps::build(&conf, &settings, ember_core::clock::SystemClock::shared()).expect("deps");
    let (response, _, _) = deps.process(&batch).await;
    assert!(
        failed_sequence_numbers(&response).is_empty(),
        "{response:?}"
    );
    assert_eq!(conflicts.injected(), 4, "the conflicts were met");
    let report = report_without_dead_letters(&env, &dlq).await;
    assert_eq!(by_group(&report), expected);
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
