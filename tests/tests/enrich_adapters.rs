//! The adapters the enrich function uses, against the emulator: the DynamoDB profile store's
//! optimistic locking and packed ring of event ids, EventBridge publishing in chunks of 10, SQS dead letters in batches.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::profiles::{item_size, to_item, DynamoProfileStore};
use ember_aws::sqs::SqsDeadLetterSink;
use ember_core::ports::{
    BusEvent, DeadLetter, DeadLetterSink, EventBus, PortError, ProfileStore, SegmentChange,
};
use ember_core::profile::{Profile, RECENT_EVENT_IDS};
use ember_tests::emulator::{ember_pattern, unique, Aws};

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
async fn a_full_ring_of_event_ids_is_stored_packed_and_old_lists_are_still_read() {
    let (aws, table, store) = profile_store().await;
    let id = unique("u");
    let mut p = Profile::new(&id);
    p.version = 1;
    for _ in 0..RECENT_EVENT_IDS + 5 {
        p.recent_event_ids
            .push(&uuid::Uuid::new_v4().to_string(), RECENT_EVENT_IDS);
    }
    p.recent_event_ids.push("evt-not-a-uuid", RECENT_EVENT_IDS);
    store.put(&p, 0).await.expect("create");

    // What DynamoDB holds: one binary attribute of 17 bytes per UUID, not a list.
    let item = aws
        .get_item(&table, "id", &id)
        .await
        .expect("get_item")
        .expect("stored");
    let Some(AttributeValue::B(ring)) = item.get("recent_event_ids") else {
        panic!("the ring is not binary: {:?}", item.get("recent_event_ids"));
    };
    assert_eq!(
        ring.as_ref().len(),
        1 + 17 * (RECENT_EVENT_IDS - 1) + 1 + 14
    );
    let packed_size = item_size(&item);
    assert!(packed_size < 18_000, "{packed_size} bytes");
    let back = store.get(&id).await.expect("get").expect("stored");
    assert_eq!(back, p);
    assert!(back.recent_event_ids.contains("evt-not-a-uuid"));

    // An item written before packing (the ring as a list of strings) reads the same, and
    // the next write stores it packed.
    let mut old = to_item(&p).expect("item");
    let list = p
        .recent_event_ids
        .iter()
        .map(|e| AttributeValue::S(e.into_owned()))
        .collect();
    old.insert("recent_event_ids".into(), AttributeValue::L(list));
    assert!(
        item_size(&old) > 2 * packed_size,
        "{} vs {packed_size} bytes",
        item_size(&old)
    );
    aws.dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(old))
        .send()
        .await
        .expect("put the old form");
    assert_eq!(store.get(&id).await.expect("get old form"), Some(p.clone()));
    let mut next = p.clone();
    next.version = 2;
    store.put(&next, 1).await.expect("update");
    let item = aws.get_item(&table, "id", &id).await.expect("get_item");
    assert!(matches!(
        item.as_ref().and_then(|i| i.get("recent_event_ids")),
        Some(AttributeValue::B(_))
    ));
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
        .map(|i| {
            BusEvent::SegmentEntered(SegmentChange {
                id: format!("u-{i}:high_heat_lover:entered:1"),
                profile_id: format!("u-{i}"),
                segment: "high_heat_lover".into(),
                at: chrono::Utc::now(),
                profile_version: 1,
                cause_event_id: Some(format!("e-{i}")),
            })
        })
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

    // A bus that does not exist: every event gets the (permanent) error.
    let results = EventBridgeBus::from_conf(&aws.config, unique("no-such-bus"))
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
