//! The enrich function end to end against the emulator: real DynamoDB, EventBridge (a rule
//! routes the bus to an SQS queue that the test reads) and SQS dead letters. Every test
//! provisions its own uniquely named table, bus, rule, queues.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use ember_core::clock::SystemClock;
use ember_core::fold::FoldConfig;
use ember_core::ports::{BusEvent, DeadLetter};
use ember_core::profile::Profile;
use ember_enrich::{BatchStats, Deps, ReevaluateDeps, ReevaluateSettings, Settings};
use ember_tests::emulator::{
    ember_pattern, failed_sequence_numbers, kinesis_event, kinesis_fixture, unique, Aws,
    ProfilesAndBus, Queue,
};
use ember_tests::faults::{op, Fault, FaultProxy, Rule, Schedule};
use serde_json::json;

const QUIET: Duration = Duration::from_millis(400);

/// What `several-users.json` publishes: both carts and alice's heat segment.
const SEVERAL_USERS_BUS_IDS: [&str; 3] = [
    "u-1001:cart:1",
    "u-1001:high_heat_lover:entered:1",
    "u-1002:cart:1",
];

/// One test's resources and the handler wired to them.
struct Env {
    base: ProfilesAndBus,
    dlq: Queue,
}

impl std::ops::Deref for Env {
    type Target = ProfilesAndBus;
    fn deref(&self) -> &ProfilesAndBus {
        &self.base
    }
}

impl Env {
    /// Table, bus with a rule → SQS queue, and a dead-letter queue.
    async fn new() -> Env {
        let base = ProfilesAndBus::new()
            .await
            .expect("table, bus, rule -> queue");
        let dlq = base.aws.create_queue("ember-dlq").await.expect("dlq");
        Env { base, dlq }
    }

    /// Runs a fixture batch through a new handler; no record may be left failed (every
    /// problem is a dead letter, never a blocked shard).
    async fn apply(&self, fixture: &str) -> (KinesisEvent, BatchStats) {
        let event = kinesis_fixture(fixture).expect("fixture");
        let (response, stats, _) = self.deps().process(&event).await;
        let failed = failed_sequence_numbers(&response);
        assert!(failed.is_empty(), "failed records: {failed:?}");
        (event, stats)
    }

    /// A handler as the Lambda builds it (a new one per call = a new sandbox).
    fn deps(&self) -> Deps {
        let config = Settings {
            profiles_table: self.table.clone(),
            ledger_table: self.ledger.clone(),
            event_bus_name: self.bus.clone(),
            dead_letter_queue_url: self.dlq.url.clone(),
            fold: FoldConfig::default(),
            dedup_window: chrono::Duration::days(35),
            config_ttl: std::time::Duration::ZERO,
            stage: "test".into(),
        };
        Deps::build(&self.aws.config, &config, SystemClock::shared()).expect("deps")
    }
}

fn ids(events: &[BusEvent]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(|e| e.id().to_owned()).collect();
    v.sort();
    v
}

fn seqs_of(event: &KinesisEvent, partition_key: &str) -> Vec<String> {
    event
        .records
        .iter()
        .filter(|r| r.kinesis.partition_key == partition_key)
        .map(|r| r.kinesis.sequence_number.clone())
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn the_schedule_publishes_its_own_transitions_and_not_the_stream_events_again() {
    // Enrich publishes alice's cart event and keeps it stored with the stream position (no
    // second write). Half an hour later the scheduled re-evaluation moves her into
    // cart_abandoner: it publishes that entry, not her cart event a second time, and leaves
    // the stream's events stored, so a redelivery of her records can still republish them.
    let env = Env::new().await;
    let (event, _) = env.apply("several-users.json").await;
    let first = env.bus_events(QUIET).await;
    let carts = |events: &[BusEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, BusEvent::CartUpdated(c) if c.profile_id == "u-1001"))
            .count()
    };
    assert_eq!(carts(&first), 1);
    let alice = env.profile("u-1001").await;
    assert!(alice.outbox.by_stream && !alice.segments.contains("cart_abandoner"));

    let at = alice.cart.updated_at.expect("a cart") + chrono::Duration::hours(1);
    let reevaluate = ReevaluateDeps::build(
        &env.aws.config,
        &ReevaluateSettings {
            profiles_table: env.table.clone(),
            event_bus_name: env.bus.clone(),
            total_segments: 1,
            ledger_table: env.ledger.clone(),
            config_ttl: std::time::Duration::ZERO,
            stage: "test".into(),
        },
    )
    .expect("deps");
    let stats = reevaluate.run(at).await.expect("re-evaluation");
    assert_eq!(stats.failed, 0, "{stats:?}");
    let scheduled = env.bus_events(QUIET).await;
    assert!(
        scheduled.iter().any(|e| matches!(e,
            BusEvent::SegmentEntered(c) if c.profile_id == "u-1001" && c.segment == "cart_abandoner")),
        "{scheduled:?}"
    );
    assert_eq!(carts(&scheduled), 0, "published twice: {scheduled:?}");
    let alice = env.profile("u-1001").await;
    assert!(alice.segments.contains("cart_abandoner"));
    assert!(alice.outbox.by_stream, "{:?}", alice.outbox);

    // Lambda redelivers the batch (as if the first invocation had died before its publish):
    // the stream's events go out again, the schedule's do not.
    let (response, _, _) = env.deps().process(&event).await;
    assert!(failed_sequence_numbers(&response).is_empty());
    let redelivered = env.bus_events(QUIET).await;
    assert_eq!(carts(&redelivered), 1, "{redelivered:?}");
    assert!(!redelivered.iter().any(|e| matches!(e,
        BusEvent::SegmentEntered(c) if c.segment == "cart_abandoner")));
}

#[tokio::test]
async fn a_batch_lands_in_dynamodb_and_segment_events_on_the_bus() {
    let env = Env::new().await;
    let (_, stats) = env.apply("several-users.json").await;
    assert_eq!(
        (stats.records, stats.users, stats.writes, stats.dead_letters),
        (13, 3, 3, 0)
    );

    let alice = env.profile("u-1001").await;
    assert_eq!(alice.version, 1);
    assert_eq!(
        alice.counts,
        counts(&[
            ("add_to_cart", 1),
            ("consent_changed", 1),
            ("heat_preference", 1),
            ("page_view", 1),
            ("product_view", 1),
            ("profile_updated", 1)
        ])
    );
    assert_eq!(alice.email(), Some("alice@example.com"));
    assert_eq!(alice.name(), Some("Alice"));
    assert_eq!(alice.timezone(), Some("Europe/Berlin"));
    assert!(alice.has_consent("email"));
    let line = alice.cart.items.get("HS-HAB-01").expect("cart line");
    assert_eq!((line.quantity, line.unit_price_minor), (2, 1250));
    assert_eq!(alice.cart.currency.as_deref(), Some("EUR"));
    assert_eq!(alice.cart_value_minor(), 2500);
    assert_eq!(alice.heat_shu(), Some(50_000.0));
    assert_eq!(alice.device(), Some("desktop"));
    // Published: the events stay stored with the write's stream position until the next
    // write drops them (no second write just to clear them).
    assert!(alice.outbox.by_stream);
    assert!(!alice.stream.is_empty());

    let bob = env.profile("u-1002").await;
    assert_eq!(bob.purchase_count, 1);
    assert_eq!(bob.purchase_total_minor(), 2380);
    assert_eq!(bob.currency.as_deref(), Some("EUR"));
    assert!(!bob.has_consent("email"));
    assert_eq!(bob.heat_shu(), Some(8_000.0));
    assert_eq!(bob.device(), Some("mobile"));
    assert_eq!(
        bob.utm().get("utm_source").map(String::as_str),
        Some("newsletter")
    );
    assert_eq!(
        bob.utm().get("utm_campaign").map(String::as_str),
        Some("winter")
    );
    assert_eq!(
        bob.counts,
        counts(&[
            ("add_to_cart", 1),
            ("consent_changed", 1),
            ("heat_preference", 1),
            ("page_view", 1),
            ("purchase", 1)
        ])
    );

    let anon = env.profile("anon:a-77").await;
    assert_eq!(
        anon.counts,
        counts(&[("page_view", 1), ("product_view", 1)])
    );

    // The bus events, read back through the rule's SQS target, match the stored segments.
    let published = env.bus_events(QUIET).await;
    assert_eq!(published.len(), stats.published);
    assert_eq!(ids(&published), SEVERAL_USERS_BUS_IDS);
    for e in &published {
        match e {
            BusEvent::CartUpdated(c) if c.profile_id == "u-1001" => {
                assert_eq!(
                    (c.item_count, c.value_minor, c.currency.as_deref()),
                    (2, 2500, Some("EUR"))
                );
                assert_eq!(c.profile_version, 1);
            }
            BusEvent::CartUpdated(c) => {
                // Bob bought what he had in the cart: the purchase emptied it.
                assert_eq!(
                    (c.profile_id.as_str(), c.item_count, c.value_minor),
                    ("u-1002", 0, 0)
                );
                assert!(bob.cart.items.is_empty());
            }
            BusEvent::SegmentEntered(c) => {
                assert_eq!(
                    c.at,
                    "2026-11-20T09:05:00Z"
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .unwrap()
                );
                assert_eq!(c.cause_event_id.as_deref(), Some("evt-1001-06"));
            }
            other => panic!("unexpected bus event {other:?}"),
        }
    }
    let names = |p: &Profile| p.segments.iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&alice),
        vec!["high_heat_lover"],
        "50 000 SHU; cart not idle for 30 min yet"
    );
    assert!(bob.segments.is_empty() && anon.segments.is_empty());
}

#[tokio::test]
async fn the_same_batch_three_times_gives_the_same_profile_and_no_new_events() {
    let env = Env::new().await;
    env.apply("several-users.json").await;
    let alice = env.profile("u-1001").await;
    let bob = env.profile("u-1002").await;
    let published = env.bus_events(QUIET).await;
    assert!(!published.is_empty());

    for _ in 0..2 {
        let (_, stats) = env.apply("several-users.json").await;
        assert_eq!((stats.writes, stats.claims, stats.duplicates), (0, 0, 13));
    }
    assert_eq!(env.profile("u-1001").await, alice);
    assert_eq!(env.profile("u-1002").await, bob);
    // A redelivery cannot know whether the last write's events went out (Lambda redelivers
    // after a crash too), so it publishes them again: the same events, same ids, which
    // consumers de-duplicate. Nothing new is ever published.
    let again = env.bus_events(QUIET).await;
    assert!(
        again.iter().all(|e| published.contains(e)),
        "only the same events again: {again:?}"
    );
}

#[tokio::test]
async fn a_poison_record_goes_to_the_dead_letter_queue_and_the_rest_is_processed() {
    let env = Env::new().await;
    let (event, stats) = env.apply("poison.json").await;
    assert_eq!(stats.dead_letters, 2);

    let u = env.profile("u-2001").await;
    assert_eq!(u.counts, counts(&[("add_to_cart", 1), ("page_view", 1)]));
    assert_eq!(u.cart.items.get("HS-HAB-01").map(|l| l.quantity), Some(1));
    assert_eq!(
        env.profile("u-2002").await.counts,
        counts(&[("page_view", 1)])
    );

    let bodies = env.aws.drain(&env.dlq.url, QUIET).await.expect("drain dlq");
    let mut letters: Vec<DeadLetter> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).expect("dead letter JSON"))
        .collect();
    letters.sort_by(|a, b| a.origin.cmp(&b.origin));
    // The reasons are the handler's (its unit test reads them); here they survive the queue.
    let origin = |i: usize| {
        let seq = &event.records[i].kinesis.sequence_number;
        format!("kinesis:shardId-000000000001:{seq}")
    };
    let landed: Vec<(String, &str)> = letters
        .iter()
        .map(|l| (l.origin.clone(), l.stage.as_str()))
        .collect();
    assert_eq!(landed, [(origin(1), "decode"), (origin(2), "validate")]);
    assert!(
        letters[1].reason.contains("/payload/currency"),
        "{letters:?}"
    );
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&letters[0].raw_base64)
        .expect("base64");
    assert_eq!(raw, event.records[1].kinesis.data.0);
}

#[tokio::test]
async fn concurrent_invocations_on_one_user_lose_no_update() {
    let env = Env::new().await;
    let user = unique("u");
    // Three writers at once (records of one user arrive on one shard in order, so concurrent
    // writers come from different shards, e.g. around a reshard).
    let batch = |tag: &str, n: usize, shard: &str| -> KinesisEvent {
        let records: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                let e = json!({
                    "event_id": format!("{tag}-{i}"), "type": "page_view", "version": 1,
                    "user_id": user, "occurred_at": format!("2026-11-20T10:{:02}:00Z", i % 60),
                    "source": "web", "payload": {"url": format!("https://shop.example/{tag}/{i}")}
                });
                (user.clone(), serde_json::to_vec(&e).expect("json"))
            })
            .collect();
        kinesis_event(shard, 0, &records)
    };
    let (a, b, c) = (
        batch("a", 20, "shardId-000000000000"),
        batch("b", 15, "shardId-000000000001"),
        batch("c", 10, "shardId-000000000002"),
    );
    let (da, db, dc) = (env.deps(), env.deps(), env.deps());
    let (ra, rb, rc) = tokio::join!(da.process(&a), db.process(&b), dc.process(&c));
    for (r, _, _) in [&ra, &rb, &rc] {
        assert!(failed_sequence_numbers(r).is_empty(), "{r:?}");
    }
    let p = env.profile(&user).await;
    assert_eq!(p.counts.get("page_view"), Some(&45));
    assert_eq!(p.version, 3, "one write per invocation");
    assert_eq!(ra.1.writes + rb.1.writes + rc.1.writes, 3);
    eprintln!(
        "conflicts resolved by refolding: {}",
        ra.1.conflicts + rb.1.conflicts + rc.1.conflicts
    );
}

#[tokio::test]
async fn identify_merges_the_anonymous_profile() {
    let env = Env::new().await;
    let (_, stats) = env.apply("identify.json").await;
    assert_eq!(
        stats.writes, 3,
        "anon profile, its merge mark, the user profile"
    );
    let anon = env.profile("anon:a-900").await;
    assert_eq!(anon.merged_into.as_deref(), Some("u-3001"));
    let user = env.profile("u-3001").await;
    assert_eq!(
        user.cart
            .items
            .get("HS-GHO-03")
            .map(|l| (l.quantity, l.unit_price_minor)),
        Some((1, 1590))
    );
    assert_eq!(
        user.counts.get("page_view"),
        Some(&2),
        "anonymous page view merged + own"
    );
    assert_eq!(user.counts.get("identify"), Some(&1));
}

#[tokio::test]
async fn when_eventbridge_fails_events_wait_in_the_outbox_and_are_published_once() {
    let aws = Aws::from_env().await.expect("emulator environment");
    let table = aws.create_profiles_table().await.expect("table");
    let ledger = aws.create_ledger_table().await.expect("ledger");
    let dlq = aws.create_queue("ember-dlq").await.expect("dlq");
    // EventBridge refuses every PutEvents for now (the fault proxy stands for a bus that
    // does not exist yet: emulators differ on what they answer then).
    let bus = aws.create_bus("ember-bus-later").await.expect("bus");
    let queue = aws
        .route_to_queue(&bus, &ember_pattern())
        .await
        .expect("rule");
    let proxy = FaultProxy::from_env().await.expect("proxy");
    let refused = proxy.add(Rule::new(op::EVENTS_PUT_EVENTS, Fault::Refuse));
    let proxied = proxy.sdk_config(2, Duration::from_secs(5)).await;
    let config = Settings {
        profiles_table: table.clone(),
        ledger_table: ledger,
        event_bus_name: bus.clone(),
        dead_letter_queue_url: dlq.url.clone(),
        fold: FoldConfig::default(),
        dedup_window: chrono::Duration::days(35),
        config_ttl: std::time::Duration::ZERO,
        stage: "test".into(),
    };
    let event = kinesis_fixture("several-users.json").expect("fixture");

    let deps = Deps::build(&proxied, &config, SystemClock::shared()).expect("deps");
    let (response, _, _) = deps.process(&event).await;
    assert!(refused.injected() > 0);
    let failures = failed_sequence_numbers(&response);
    for s in seqs_of(&event, "u-1001") {
        assert!(failures.contains(&s), "alice's record {s} must be retried");
    }
    let alice = aws
        .get_profile(&table, "u-1001")
        .await
        .expect("get")
        .expect("alice stored");
    assert_eq!(alice.version, 2, "fold write + outbox write");
    assert!(alice
        .outbox
        .events
        .iter()
        .any(|e| matches!(e, BusEvent::CartUpdated(c) if c.id == "u-1001:cart:1")));
    let outbox = ids(&alice.outbox.events);

    // EventBridge takes events again; Lambda retries the batch: the outbox goes out, once.
    proxy.clear_rules();
    let (response, _, _) = deps.process(&event).await;
    assert!(
        failed_sequence_numbers(&response).is_empty(),
        "{response:?}"
    );
    let alice = aws
        .get_profile(&table, "u-1001")
        .await
        .expect("get")
        .expect("alice");
    assert!(alice.outbox.is_empty());
    assert_eq!(alice.version, 3);
    let published = aws
        .drain_bus_events(&queue.url, QUIET)
        .await
        .expect("drain");
    let alice_published: Vec<BusEvent> = published
        .into_iter()
        .filter(|e| e.id().starts_with("u-1001:"))
        .collect();
    assert_eq!(ids(&alice_published), outbox);

    let (_, stats, _) = deps.process(&event).await;
    assert_eq!((stats.writes, stats.published), (0, 0));
    assert!(aws
        .drain(&queue.url, QUIET)
        .await
        .expect("drain")
        .is_empty());
}

#[tokio::test]
async fn aws_calls_per_batch_are_bounded_and_partial_publish_failures_are_resent() {
    let env = Env::new().await;
    let proxy = FaultProxy::from_env().await.expect("proxy");
    // The first PutEvents entry fails (throttled) inside a successful response.
    let partial = proxy.add(
        Rule::new(
            op::EVENTS_PUT_EVENTS,
            Fault::PartialFailure {
                entries: Schedule::First(1),
            },
        )
        .first(1),
    );
    let sdk = proxy.sdk_config(3, Duration::from_secs(5)).await;
    let config = Settings {
        profiles_table: env.table.clone(),
        ledger_table: env.ledger.clone(),
        event_bus_name: env.bus.clone(),
        dead_letter_queue_url: env.dlq.url.clone(),
        fold: FoldConfig::default(),
        dedup_window: chrono::Duration::days(35),
        config_ttl: std::time::Duration::ZERO,
        stage: "test".into(),
    };
    let deps = Deps::build(&sdk, &config, SystemClock::shared()).expect("deps");
    let event = kinesis_fixture("several-users.json").expect("fixture");
    let (response, stats, elapsed) = deps.process(&event).await;
    assert!(
        failed_sequence_numbers(&response).is_empty(),
        "{response:?}"
    );
    assert_eq!(partial.entries_failed(), 1);

    // 13 records, 3 profiles: one read and one write per profile (and, as they are new, one
    // read of their erasure tombstones), one claim per event id; one PutEvents for the whole
    // batch's 3 events plus one re-send of the failed entry. One read of the configuration
    // version in force (every batch here, with CONFIG_TTL_SECONDS 0; once a minute deployed).
    assert_eq!(proxy.calls(op::DDB_GET_ITEM), 3 + 3 + 1);
    assert_eq!(proxy.calls(op::DDB_PUT_ITEM), 3 + 13);
    assert_eq!(proxy.calls(op::EVENTS_PUT_EVENTS), 2);
    assert_eq!(proxy.calls(op::SQS_SEND_MESSAGE_BATCH), 0);
    assert_eq!(stats.published, 3);
    let published = env.bus_events(QUIET).await;
    assert_eq!(ids(&published), SEVERAL_USERS_BUS_IDS);
    eprintln!(
        "batch of {} records, {} users: {} ms",
        stats.records,
        stats.users,
        elapsed.as_millis()
    );
}

#[tokio::test]
async fn a_full_batch_writes_once_per_user() {
    let env = Env::new().await;
    let users: Vec<String> = (0..50).map(|i| format!("u-load-{i:02}")).collect();
    let records: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            let user = &users[i % users.len()];
            let e = json!({
                "event_id": format!("load-{i}"), "type": "add_to_cart", "version": 1,
                "user_id": user, "occurred_at": format!("2026-11-20T10:{:02}:00Z", i / 50),
                "source": "web",
                "payload": {"sku": format!("SKU-{}", i % 3), "name": "Sauce", "price": "4.50",
                            "currency": "EUR", "quantity": 1}
            });
            (user.clone(), serde_json::to_vec(&e).expect("json"))
        })
        .collect();
    let event = kinesis_event("shardId-000000000003", 1000, &records);
    let (response, stats, elapsed) = env.deps().process(&event).await;
    assert!(
        failed_sequence_numbers(&response).is_empty(),
        "{response:?}"
    );
    assert_eq!(
        (stats.users, stats.writes, stats.published),
        (50, 50, 50),
        "one write and one CartUpdated per user"
    );
    let p = env.profile("u-load-07").await;
    assert_eq!(p.counts.get("add_to_cart"), Some(&4));
    assert_eq!(p.cart_value_minor(), 4 * 450);
    assert_eq!(env.bus_events(QUIET).await.len(), 50);
    eprintln!("batch of 200 records, 50 users: {} ms", elapsed.as_millis());
}

#[tokio::test]
async fn a_profile_that_can_never_be_written_is_dead_lettered_and_the_rest_goes_on() {
    let env = Env::new().await;
    // A stored item that no longer decodes: every write of this customer fails for good.
    env.aws.put_undecodable_profile(&env.table, "u-1001").await;
    // Nothing blocks the shard.
    let (event, stats) = env.apply("several-users.json").await;
    let alice = seqs_of(&event, "u-1001").len();
    assert_eq!(stats.dead_letters, alice);
    let letters: Vec<DeadLetter> = env
        .aws
        .drain(&env.dlq.url, QUIET)
        .await
        .expect("dlq")
        .iter()
        .map(|b| serde_json::from_str(b).expect("json"))
        .collect();
    assert_eq!(letters.len(), alice);
    assert!(
        letters
            .iter()
            .all(|l| l.stage == "profile.decode" && !l.raw_base64.is_empty()),
        "{letters:?}"
    );
    assert_eq!(env.profile("u-1002").await.counts.values().sum::<u64>(), 5);
}
