//! The adapters the enrich function uses, against the emulator: the DynamoDB profile store's
//! optimistic locking and legacy items, a write with campaign counters that its version
//! refuses, event-id claims (also when an answer is lost), EventBridge publishing in chunks of
//! 10, SQS dead letters in batches.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::{item_size, DynamoProfileStore};
use ember_aws::sqs::SqsDeadLetterSink;
use ember_core::attribution::report_pk;
use ember_core::ports::{
    BusEvent, Claim, DeadLetter, DeadLetterSink, EventBus, EventClaims, PortError, ProfileStore,
};
use ember_core::profile::{Profile, Tally};
use ember_tests::emulator::{ember_pattern, segment_entered, unique, Aws};
use ember_tests::faults::{op, Fault, FaultProxy, Rule};

const QUIET: Duration = Duration::from_millis(400);

/// The emulator, a new profiles table and the store on it.
async fn profile_store() -> (Aws, String, DynamoProfileStore) {
    let aws = Aws::from_env().await.expect("emulator environment");
    let table = aws.create_profiles_table().await.expect("table");
    let store = DynamoProfileStore::from_conf(&aws.config, &table);
    (aws, table, store)
}

#[tokio::test]
async fn the_profile_store_checks_versions_and_reports_deletes() {
    let (aws, _table, store) = profile_store().await;
    let id = unique("u");

    assert_eq!(store.get(&id).await.expect("get"), None);
    let mut p = Profile::new(&id);
    p.version = 1;
    p.counts.insert("page_view".into(), 1);
    store.put(&p, 0).await.expect("create");
    assert!(
        matches!(store.put(&p, 0).await, Err(PortError::Conflict(_))),
        "exists already"
    );

    let mut next = p.clone();
    next.version = 2;
    next.counts.insert("page_view".into(), 2);
    store.put(&next, 1).await.expect("update at version 1");
    let stale = Profile {
        version: 2,
        ..p.clone()
    };
    assert!(
        matches!(store.put(&stale, 1).await, Err(PortError::Conflict(_))),
        "stale writer loses"
    );
    assert_eq!(store.get(&id).await.expect("get"), Some(next));

    assert!(store.delete(&id).await.expect("delete"));
    assert!(!store.delete(&id).await.expect("delete again"));
    assert_eq!(store.get(&id).await.expect("get"), None);

    // A missing table is a permanent error naming the stage.
    let missing = DynamoProfileStore::from_conf(&aws.config, unique("no-such-table"));
    match missing.get("x").await {
        Err(PortError::Permanent { stage, .. }) => assert_eq!(stage, "profile.get"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_with_counters_that_the_version_refuses_changes_neither_profile_nor_counters() {
    let (aws, _table, store) = profile_store().await;
    let ledger = aws.create_ledger_table().await.expect("ledger");
    let store = store.with_report_table(&ledger);
    let id = unique("u");
    let tally = |recipients| Tally {
        campaign: "winback".into(),
        group: "email".into(),
        recipients,
        conversions: 0,
        revenue_minor: BTreeMap::new(),
    };
    // Imported here only: `Ledger::claim` and `EventClaims::claim` clash in the claim tests.
    use ember_core::ports::Ledger as _;
    let counters = DynamoLedger::from_conf(&aws.config, &ledger);
    let recipients = || async {
        let counter = counters.get(&report_pk("winback"), "email").await;
        counter
            .expect("counter read")
            .map(|c| c["recipients"].clone())
    };

    let mut p = Profile::new(&id);
    p.version = 1;
    store.put_tallied(&p, 0, &[tally(1)]).await.expect("first");
    assert_eq!(recipients().await, Some(1.into()));

    // Written as if the profile were new: the put's condition fails, so the transaction is
    // cancelled and the counter update in it (applied or not) must not be kept.
    let mut stale = p.clone();
    stale.version = 2;
    stale.counts.insert("purchase".into(), 1);
    let refused = store.put_tallied(&stale, 0, &[tally(5)]).await;
    assert!(
        matches!(refused, Err(PortError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(recipients().await, Some(1.into()));
    assert_eq!(store.get(&id).await.expect("get"), Some(p));
}

#[tokio::test]
async fn an_item_of_the_legacy_form_is_read_and_rewritten_in_the_current_form() {
    let (aws, table, store) = profile_store().await;
    let id = unique("u");
    // As the previous version stored it: the ring of event ids (a list of 1,000 strings),
    // trait times in their own map, daily counters keyed by day.
    let ring: Vec<serde_json::Value> = (0..1_000)
        .map(|i| serde_json::json!(format!("3b7e1f0c-9d2a-4c6b-8e5f-{i:012}")))
        .collect();
    let old = serde_json::json!({
        "id": id, "version": 7, "last_seen": "2026-11-20T10:00:00Z",
        "email": "ada@example.com", "name": null, "timezone": null, "device": "mobile",
        "counts": {"page_view": 1200},
        "daily": {"2026-11-20": {"events": 5, "page_views": 5, "product_views": 0, "purchases": 0, "revenue_minor": 0}},
        "trait_times": {"email": "2026-11-01T00:00:00Z", "device": "2026-11-20T10:00:00Z"},
        "utm": {}, "poll_answers": {}, "outbox": [], "merged_profiles": [],
        "recent_event_ids": ring,
        "segments": []
    });
    let item: std::collections::HashMap<String, AttributeValue> =
        serde_dynamo::aws_sdk_dynamodb_1::to_item(old).unwrap();
    let legacy_size = item_size(&item);
    aws.dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put the legacy form");
    let p = store.get(&id).await.expect("get").expect("stored");
    assert_eq!(p.version, 7);
    assert_eq!(p.email(), Some("ada@example.com"));
    assert_eq!(p.counts["page_view"], 1200);
    assert_eq!(p.daily.events, vec![5]);

    let mut next = p.clone();
    next.version = 8;
    store.put(&next, 7).await.expect("update");
    let item = aws
        .get_item(&table, "id", &id)
        .await
        .expect("get_item")
        .expect("stored");
    for gone in ["recent_event_ids", "trait_times", "merged_profiles"] {
        assert!(!item.contains_key(gone), "{gone} still stored");
    }
    let size = item_size(&item);
    assert!(
        size < 512 && size * 50 < legacy_size,
        "{size} vs {legacy_size} bytes"
    );
    assert_eq!(store.get(&id).await.unwrap(), Some(next));
}

/// The ledger table and the event-id claims on it.
async fn claims() -> (Aws, DynamoLedger) {
    let aws = Aws::from_env().await.expect("emulator environment");
    let table = aws.create_ledger_table().await.expect("ledger");
    let ledger = DynamoLedger::new(aws.dynamodb.clone(), &table);
    (aws, ledger)
}

#[tokio::test]
async fn an_event_id_is_claimed_once_and_granted_again_to_its_own_record() {
    let (_aws, ledger) = claims().await;
    let until = chrono::Utc::now() + chrono::Duration::days(35);
    let id = unique("evt");
    assert_eq!(
        ledger.claim(&id, "shard-1:100", until).await.unwrap(),
        Claim::Granted
    );
    assert_eq!(
        ledger.claim(&id, "shard-1:100", until).await.unwrap(),
        Claim::Granted
    );
    assert_eq!(
        ledger.claim(&id, "shard-1:200", until).await.unwrap(),
        Claim::Held
    );
    // Releasing someone else's claim does nothing; releasing our own frees the id.
    ledger.release(&id, "shard-1:200").await.unwrap();
    assert_eq!(
        ledger.claim(&id, "shard-1:200", until).await.unwrap(),
        Claim::Held
    );
    ledger.release(&id, "shard-1:100").await.unwrap();
    assert_eq!(
        ledger.claim(&id, "shard-1:200", until).await.unwrap(),
        Claim::Granted
    );
    // An expired claim (TTL deletion is lazy) counts as absent.
    let old = unique("evt");
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    ledger.claim(&old, "shard-1:1", past).await.unwrap();
    assert_eq!(
        ledger.claim(&old, "shard-1:2", until).await.unwrap(),
        Claim::Granted
    );
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_granted_by_the_sdk_retry_not_taken_for_a_duplicate() {
    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    let aws = Aws::from_config(proxy.sdk_config(3, Duration::from_secs(2)).await);
    let table = aws.create_ledger_table().await.expect("ledger");
    let ledger = DynamoLedger::new(aws.dynamodb.clone(), &table);
    // The put lands, its answer is lost, the SDK sends it again: the condition sees the
    // record's own claim and succeeds.
    let lost = proxy.add(Rule::new(op::DDB_PUT_ITEM, Fault::DropAfterForward).first(1));
    let id = unique("evt");
    let until = chrono::Utc::now() + chrono::Duration::days(35);
    assert_eq!(
        ledger.claim(&id, "shard-1:7", until).await.unwrap(),
        Claim::Granted
    );
    assert_eq!(lost.injected(), 1);
    assert_eq!(proxy.calls(op::DDB_PUT_ITEM), 2, "the SDK retried");
    assert_eq!(
        ledger.claim(&id, "shard-1:8", until).await.unwrap(),
        Claim::Held
    );
}

#[tokio::test]
async fn the_bus_publishes_more_than_ten_events_in_chunks() {
    let aws = Aws::from_env().await.expect("emulator environment");
    let bus = aws.create_bus("ember-bus").await.expect("bus");
    let queue = aws
        .route_to_queue(&bus, &ember_pattern())
        .await
        .expect("rule");
    let events: Vec<BusEvent> = (0..23)
        .map(|i| segment_entered(i, "high_heat_lover"))
        .collect();
    let results = EventBridgeBus::from_conf(&aws.config, &bus)
        .publish(&events)
        .await;
    assert_eq!(results.len(), 23);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut got = aws
        .drain_bus_events(&queue.url, QUIET)
        .await
        .expect("drain");
    got.sort_by_key(|e| match e {
        BusEvent::SegmentEntered(c) => c
            .profile_id
            .trim_start_matches("u-")
            .parse::<u32>()
            .unwrap_or(0),
        _ => u32::MAX,
    });
    assert_eq!(got, events);

    // A bus that refuses for good (one that does not exist, say; through the fault proxy,
    // as emulators differ on what they answer then): every event gets the permanent error.
    let proxy = FaultProxy::from_env().await.expect("proxy");
    proxy.add(Rule::new(op::EVENTS_PUT_EVENTS, Fault::Refuse));
    let refusing = proxy.sdk_config(1, Duration::from_secs(5)).await;
    let results = EventBridgeBus::from_conf(&refusing, &bus)
        .publish(&events[..3])
        .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(PortError::Permanent { .. }))),
        "{results:?}"
    );
}

#[tokio::test]
async fn dead_letters_arrive_in_the_queue_as_json() {
    let aws = Aws::from_env().await.expect("emulator environment");
    let queue = aws.create_queue("ember-dlq").await.expect("queue");
    let letters: Vec<DeadLetter> = (0..25)
        .map(|i| DeadLetter {
            origin: format!("kinesis:shardId-000000000000:{i:05}"),
            stage: "validate".into(),
            reason: format!("/payload/price: is required ({i})"),
            raw_base64: "eyJ4IjoxfQ==".into(),
            at: chrono::Utc::now(),
        })
        .collect();
    SqsDeadLetterSink::from_conf(&aws.config, &queue.url)
        .send(&letters)
        .await
        .expect("send");
    let mut got: Vec<DeadLetter> = aws
        .drain(&queue.url, QUIET)
        .await
        .expect("drain")
        .iter()
        .map(|b| serde_json::from_str(b).expect("dead letter JSON"))
        .collect();
    got.sort_by(|a, b| a.origin.cmp(&b.origin));
    assert_eq!(got, letters);

    let missing = SqsDeadLetterSink::from_conf(&aws.config, format!("{}-gone", queue.url));
    assert!(missing.send(&letters[..1]).await.is_err());
}
