//! The scheduled segment re-evaluation (binary `reevaluate`) end to end against the emulator:
//! profiles in a real DynamoDB table, a parallel Scan, conditional writes, and the transitions
//! read back from an SQS queue behind a rule on a real EventBridge bus.

use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use ember_aws::profiles::DynamoProfileStore;
use ember_core::ports::{BusEvent, ProfileStore};
use ember_core::profile::Profile;
use ember_enrich::{ReevaluateDeps, ReevaluateSettings};
use ember_tests::emulator::{unique, ProfilesAndBus};
use serde_json::json;

const QUIET: Duration = Duration::from_millis(400);

struct Env(ProfilesAndBus);

impl std::ops::Deref for Env {
    type Target = ProfilesAndBus;
    fn deref(&self) -> &ProfilesAndBus {
        &self.0
    }
}

impl Env {
    async fn new() -> Env {
        Env(ProfilesAndBus::new()
            .await
            .expect("table, bus, rule -> queue"))
    }

    /// The function as the Lambda builds it from its environment.
    fn deps(&self, total_segments: u32) -> ReevaluateDeps {
        let config = ReevaluateSettings {
            profiles_table: self.table.clone(),
            event_bus_name: self.bus.clone(),
            total_segments,
            ledger_table: self.ledger.clone(),
            config_ttl: std::time::Duration::ZERO,
            stage: "test".into(),
        };
        ReevaluateDeps::build(&self.aws.config, &config).expect("deps")
    }

    fn store(&self) -> DynamoProfileStore {
        DynamoProfileStore::new(self.aws.dynamodb.clone(), &self.table)
    }
}

/// The `Scheduled Event` EventBridge delivers, crossing the same JSON boundary as Lambda.
fn scheduled_event(at: DateTime<Utc>) -> EventBridgeEvent<serde_json::Value> {
    serde_json::from_value(json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/reevaluate"],
        "detail": {}
    }))
    .expect("a Scheduled Event")
}

/// A stored profile: `purchases` purchases, last seen `days_ago` before `now`, at version 1.
fn buyer(id: &str, purchases: u64, days_ago: i64, now: DateTime<Utc>) -> Profile {
    let mut p = Profile::new(id);
    p.version = 1;
    p.created_at = Some(now - chrono::Duration::days(days_ago + 60));
    p.last_seen = Some(now - chrono::Duration::days(days_ago));
    p.purchase_count = purchases;
    p.purchase_totals_minor
        .insert("EUR".into(), 4_200 * purchases as i64);
    p.currency = Some("EUR".into());
    p.last_purchase_at = p.last_seen;
    p
}

fn entered(events: &[BusEvent], segment: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            BusEvent::SegmentEntered(c) if c.segment == segment => Some(c.profile_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn churners_enter_churn_risk_on_the_schedule_exactly_once() {
    let env = Env::new().await;
    let store = env.store();
    let now = Utc::now();
    let churner = unique("churner");
    let active = unique("active");
    let one_time = unique("one-time");
    let merged = format!("anon:{}", unique("merged"));
    store
        .put(&buyer(&churner, 2, 40, now), 0)
        .await
        .expect("put churner");
    store
        .put(&buyer(&active, 3, 2, now), 0)
        .await
        .expect("put active");
    store
        .put(&buyer(&one_time, 1, 40, now), 0)
        .await
        .expect("put one-time buyer");
    let mut anon = buyer(&merged, 2, 40, now);
    anon.merged_into = Some(churner.clone());
    store.put(&anon, 0).await.expect("put merged anonymous");
    // Enough unchanged profiles that a single-segment scan takes two pages (100 items each).
    for i in 0..130 {
        store
            .put(&buyer(&format!("{active}-{i}"), 2, 1, now), 0)
            .await
            .expect("put filler");
    }
    let before_active = env.profile(&active).await;

    let deps = env.deps(1);
    let stats = deps
        .handle(&scheduled_event(now), "req-1")
        .await
        .expect("re-evaluation");
    assert_eq!(stats.scanned, 134);
    assert_eq!(stats.skipped_merged, 1);
    assert_eq!((stats.changed, stats.published), (1, 1), "{stats:?}");
    assert_eq!((stats.conflicts, stats.failed), (0, 0), "{stats:?}");

    let p = env.profile(&churner).await;
    assert!(p.segments.contains("churn_risk"), "{:?}", p.segments);
    assert_eq!(
        p.version, 3,
        "written with its transition, then cleared once published"
    );
    assert!(p.outbox.is_empty());
    let a = env.profile(&active).await;
    assert_eq!(a, before_active, "an unchanged profile is not rewritten");
    assert_eq!(env.profile(&one_time).await.version, 1);
    let m = env.profile(&merged).await;
    assert_eq!(m.version, 1, "merged anonymous profiles are skipped");
    assert!(m.segments.is_empty());

    let events = env.bus_events(QUIET).await;
    assert_eq!(entered(&events, "churn_risk"), vec![churner.clone()]);
    assert_eq!(events.len(), 1, "{events:?}");
    let BusEvent::SegmentEntered(change) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(change.id, format!("{churner}:churn_risk:entered:2"));
    assert_eq!(change.profile_version, 2);
    assert_eq!(
        change.at.timestamp(),
        now.timestamp(),
        "evaluated at the schedule's time"
    );

    // The next run (a new sandbox, an hour later, 3 parallel scan segments: every profile
    // scanned exactly once) publishes nothing and rewrites nothing.
    let later = now + chrono::Duration::hours(1);
    let again = env
        .deps(3)
        .handle(&scheduled_event(later), "req-2")
        .await
        .expect("second run");
    assert_eq!(again.scanned, 134);
    assert_eq!((again.changed, again.writes, again.published), (0, 0, 0));
    assert_eq!(env.profile(&churner).await.version, 3);
    assert!(
        env.bus_events(QUIET).await.is_empty(),
        "nothing published twice"
    );
}

#[tokio::test]
async fn a_profile_seen_again_exits_churn_risk_on_the_schedule() {
    let env = Env::new().await;
    let store = env.store();
    let now = Utc::now();
    let back = unique("back");
    // Still flagged, but seen yesterday (e.g. the flag predates the rule change).
    let mut p = buyer(&back, 2, 1, now);
    p.segments.insert("churn_risk".into());
    store.put(&p, 0).await.expect("put");

    let stats = env
        .deps(1)
        .handle(&scheduled_event(now), "req")
        .await
        .expect("re-evaluation");
    assert_eq!((stats.changed, stats.published), (1, 1), "{stats:?}");
    let stored = env.profile(&back).await;
    assert!(!stored.segments.contains("churn_risk"));
    assert_eq!(stored.version, 3);
    let events = env.bus_events(QUIET).await;
    assert!(
        matches!(&events[..], [BusEvent::SegmentExited(c)] if c.segment == "churn_risk" && c.profile_id == back),
        "{events:?}"
    );
}
