//! Runtime configuration end to end through the local pipeline wired from template.yaml:
//! segments, campaigns and templates published through the admin API while the pipeline
//! runs, picked up by every function without a rebuild, stamped on what they produce, and a
//! publish's backfill that mails existing customers only when the campaign opts in.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ember_aws::ledger::DynamoLedger;
use ember_core::ports::Ledger;
use ember_local::replay::{collect, replay, ReplaySummary};
use ember_local::Pipeline;
use ember_tests::emulator::Aws;
use ember_tests::local::{admin_call, start_pipeline_with};
use serde_json::{json, Value};

fn at(t: &str) -> DateTime<Utc> {
    t.parse().expect("time")
}

/// A customer with an address and email consent who views two products at `t`.
fn browsing_customer(id: &str, t: DateTime<Utc>) -> Vec<Value> {
    let e = |n: u32, ty: &str, payload: Value| {
        json!({"event_id": format!("{id}-{n}"), "type": ty, "version": 1, "user_id": id,
               "occurred_at": (t + chrono::Duration::seconds(i64::from(n))).to_rfc3339(),
               "source": "web", "payload": payload})
    };
    vec![
        e(
            1,
            "profile_updated",
            json!({"email": format!("{id}@example.com"), "name": "Sam"}),
        ),
        e(
            2,
            "consent_changed",
            json!({"channel": "email", "granted": true}),
        ),
        e(
            3,
            "product_view",
            json!({"sku": "SAU-001", "name": "Smoked Chipotle"}),
        ),
        e(
            4,
            "product_view",
            json!({"sku": "SAU-002", "name": "Habanero Gold"}),
        ),
    ]
}

/// Publishes one item through the admin API; returns the version in force afterwards.
async fn put(p: &Pipeline, path: &str, item: Value) -> u64 {
    let (status, body) = admin_call(p, "PUT", &format!("/v1/{path}"), Some(&item)).await;
    assert_eq!(status, 200, "PUT {path}: {body}");
    body["version"].as_u64().expect("version")
}

/// A segment of customers with `n` or more product views in 30 days.
fn viewers(n: u64) -> Value {
    json!({"when": {"trait": "product_views_30d", "gte": n}})
}

fn campaign(segment: &str, template: &str, on_backfill: &str) -> Value {
    json!({"trigger": "segment_entered", "segment": segment, "template": template,
           "delay": "0s", "daily_cap": 1, "priority": 5, "on_backfill": on_backfill})
}

/// Lets everything in flight finish, then ten minutes pass and the sweeper runs: sends the
/// rate deferred (concurrent duplicates of a bus event each take a slot) go out then.
async fn settle(p: &Pipeline) -> ReplaySummary {
    let drained = || p.drain(Duration::from_secs(60));
    assert!(drained().await, "the pipeline drains");
    let later = p.clock.now() + chrono::Duration::minutes(10);
    p.clock.advance_to(later);
    p.fire_schedules(later).await.expect("schedules");
    assert!(drained().await, "the pipeline drains");
    let mut summary = ReplaySummary::default();
    collect(p, &mut summary).await.expect("collect");
    summary
}

/// Emails per recipient with `subject`.
fn received(summary: &ReplaySummary, subject: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in summary.emails.iter().filter(|e| e.subject == subject) {
        for to in &e.to {
            *out.entry(to.clone()).or_insert(0) += 1;
        }
    }
    out
}

fn backfilled(p: &Pipeline, segment: &str) -> Vec<(String, u64)> {
    let events = p.bus_events.lock().expect("bus events").clone();
    let mut out: Vec<(String, String, u64)> = events
        .iter()
        .filter(|e| e["detail-type"] == "SegmentEntered" && e["detail"]["segment"] == segment)
        .filter(|e| e["detail"]["backfill"] == true)
        .map(|e| {
            let d = &e["detail"];
            let version = d["config_version"].as_u64().unwrap_or_default();
            let id = d["id"].as_str().unwrap_or_default().to_owned();
            (
                id,
                d["profile_id"].as_str().unwrap_or_default().to_owned(),
                version,
            )
        })
        .collect();
    // Concurrent re-evaluations may publish one entry twice (the same id): consumers
    // de-duplicate, and so does this count.
    out.sort();
    out.dedup();
    out.into_iter()
        .map(|(_, profile, v)| (profile, v))
        .collect()
}

/// The send-rate counters in the ledger: emails per second.
async fn sends_per_second(aws: &Aws, ledger_table: &str) -> BTreeMap<String, u64> {
    let items = aws
        .dynamodb
        .scan()
        .table_name(ledger_table)
        .send()
        .await
        .expect("scan the ledger")
        .items
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|item| {
            let pk = item.get("pk")?.as_s().ok()?;
            let count = item.get("count")?.as_n().ok()?.parse().ok()?;
            pk.starts_with("rate#").then(|| (pk.clone(), count))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_configuration_drives_the_running_pipeline() {
    let aws = Aws::from_env().await.expect("emulator environment");
    let fans: Vec<Value> = ["u-fan-1", "u-fan-2", "u-fan-3"]
        .iter()
        .flat_map(|id| browsing_customer(id, at("2026-11-20T07:00:00Z")))
        .collect();
    // Functions look for a new version on every invocation (deployed: once a minute).
    // A send rate of 2 a second: the opt-in backfill's four emails need two seconds.
    let parameters = [("ConfigTtlSeconds", "0"), ("SesMaxSendRate", "2")];
    let (pipeline, mut ropts) = start_pipeline_with(&aws, &fans, &parameters)
        .await
        .expect("pipeline starts");
    ropts.tail = chrono::Duration::hours(1);
    let first = replay(&pipeline, fans, &ropts, None).await;
    let ledger_table = pipeline.name_of("LedgerTable").expect("ledger table");
    let profiles_table = pipeline.name_of("ProfilesTable").expect("profiles table");
    let ledger = DynamoLedger::from_conf(&aws.config, &ledger_table);

    // A new segment, a campaign for it, then the rule that matches the three customers: the
    // publish's backfill enters them, and the campaign (on_backfill: skip) mails nobody.
    assert_eq!(put(&pipeline, "segments/browsers", viewers(100)).await, 1);
    let thanks = json!({"subject": "Thanks for browsing, {{ first_name or 'friend' }}",
                        "html": "<p>{{ greeting }} Still thinking about it?</p>",
                        "text": "{{ greeting }} Still thinking about it?"});
    assert_eq!(put(&pipeline, "templates/thanks", thanks).await, 2);
    let follow_up = campaign("browsers", "thanks", "skip");
    assert_eq!(
        put(&pipeline, "campaigns/browse_followup", follow_up).await,
        3
    );
    assert_eq!(put(&pipeline, "segments/browsers", viewers(2)).await, 4);
    let after_backfill = settle(&pipeline).await;
    let fan_entries = backfilled(&pipeline, "browsers");

    // A customer who matches it by what they do now gets the email, from version 4.
    let newcomer = browsing_customer("u-new", at("2026-11-20T09:00:00Z"));
    let second = replay(&pipeline, newcomer, &ropts, None).await;
    let after_live = settle(&pipeline).await;
    let sends = ledger.query("send#u-new", "browse_followup#").await;

    // A campaign that opts in: the backfill of its segment mails each existing customer once.
    assert_eq!(put(&pipeline, "segments/lookers", viewers(100)).await, 5);
    let opt_in = campaign("lookers", "heat_match", "send");
    assert_eq!(put(&pipeline, "campaigns/look_again", opt_in).await, 6);
    assert_eq!(put(&pipeline, "segments/lookers", viewers(1)).await, 7);
    let after_opt_in = settle(&pipeline).await;
    let opt_in_sends = ledger.query("send#u-fan-1", "look_again#").await;
    let fan = aws.get_profile(&profiles_table, "u-fan-1").await;
    let per_second = sends_per_second(&aws, &ledger_table).await;
    pipeline.stop(true).await;

    first.expect("first replay");
    second.expect("second replay");
    let fan = fan.expect("read").expect("u-fan-1 stored");
    assert!(fan.segments.contains("browsers") && fan.segments.contains("lookers"));
    assert_eq!(
        fan_entries,
        [
            ("u-fan-1".to_owned(), 4),
            ("u-fan-2".to_owned(), 4),
            ("u-fan-3".to_owned(), 4)
        ],
        "the backfill entered the existing customers with the version that matched them"
    );
    assert!(
        received(&after_backfill, "Thanks for browsing, Sam").is_empty(),
        "a backfill never mails unless the campaign opts in"
    );
    assert_eq!(
        received(&after_live, "Thanks for browsing, Sam"),
        BTreeMap::from([("u-new@example.com".to_owned(), 1)])
    );
    let sends = sends.expect("send records");
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].1["config_version"], 4, "{sends:?}");
    assert_eq!(sends[0].1["state"], "sent");

    let heat_subjects: Vec<String> = after_opt_in
        .emails
        .iter()
        .filter(|e| !after_live.emails.iter().any(|l| l.id == e.id))
        .map(|e| e.subject.clone())
        .collect();
    let mut per_customer: BTreeMap<String, usize> = BTreeMap::new();
    for e in after_opt_in
        .emails
        .iter()
        .filter(|e| !after_live.emails.iter().any(|l| l.id == e.id))
    {
        for to in &e.to {
            *per_customer.entry(to.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        per_customer.keys().cloned().collect::<Vec<_>>(),
        [
            "u-fan-1@example.com",
            "u-fan-2@example.com",
            "u-fan-3@example.com",
            "u-new@example.com"
        ],
        "{heat_subjects:?}"
    );
    assert!(per_customer.values().all(|n| *n == 1), "{per_customer:?}");
    assert!(
        per_second.values().all(|n| *n <= 2),
        "no second holds more than the rate: {per_second:?}"
    );
    assert!(
        per_second.values().sum::<u64>() >= 5,
        "every email took a slot: {per_second:?}"
    );
    let opt_in_sends = opt_in_sends.expect("send records");
    assert_eq!(opt_in_sends.len(), 1);
    assert_eq!(opt_in_sends[0].1["config_version"], 7);
}
