//! Reliability of the enrich handler under injected AWS faults, against the emulator.
//!
//! Every test runs the real handler (`ember_enrich::Enricher` with the DynamoDB, EventBridge
//! and SQS adapters) through the fault proxy, and re-drives the batch the way Lambda does with
//! `ReportBatchItemFailures` on a Kinesis source: the next invocation starts at the lowest
//! failed sequence number and carries every later record again (succeeded ones included).
//! When the batch has settled, the outcome must equal a fault-free reference run of the same
//! handler over in-memory ports:
//!
//! - every profile is identical to the reference (each valid event applied exactly once; the
//!   version counter is excluded, as outbox writes add versions), with an empty outbox;
//! - every invalid record is in the dead-letter queue with its stage and reason, and no valid
//!   record is;
//! - every segment/cart event of the reference is on the bus (read via rule → SQS) exactly
//!   once, and nothing else is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use ember_aws::redrive::{DeadLetterQueue, Selection};
use ember_aws::retry::Backoff;
use ember_benches::memory::memory_enricher;
use ember_benches::workload::Workload;
use ember_core::ports::{BusEvent, DeadLetter};
use ember_core::profile::Profile;
use ember_tests::api_support::read_stream;
use ember_tests::emulator::{
    self, failed_sequence_numbers, Aws, DynamoEnricher, ProfilesAndBus, Queue,
};
use ember_tests::faults::{op, Fault, FaultProxy, Rule, RuleStats, Schedule};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Most invocations a batch may need to settle.
const MAX_ROUNDS: usize = 25;

struct Rig {
    proxy: FaultProxy,
    aws: Aws,
    table: String,
    bus_queue: Queue,
    dlq: Queue,
    handler: DynamoEnricher,
}

impl Rig {
    /// Injects `rule`'s faults from now on; its counters say what it did.
    fn inject(&self, rule: Rule) -> Arc<RuleStats> {
        self.proxy.add(rule)
    }
}

/// Provisions a profiles table, a bus routed to a queue and a dead-letter queue, and a handler
/// whose clients go through the fault proxy with `sdk_attempts` SDK attempts per call.
async fn rig(sdk_attempts: u32) -> Rig {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .finish()
        .with(ember_aws::telemetry::filter(Some(
            "ember_enrich=warn,ember_aws=warn",
        )))
        .try_init();
    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    let aws = Aws::from_config(proxy.sdk_config(sdk_attempts, Duration::from_secs(3)).await);
    let base = ProfilesAndBus::on(aws).await.unwrap();
    let dlq = base.aws.create_queue("rel-dlq").await.unwrap();
    let quick = Backoff::new(2, Duration::from_millis(1), Duration::from_millis(5));
    let mut handler = base.enricher(&dlq.url, quick);
    handler.conflict_backoff = Backoff::new(5, Duration::from_millis(1), Duration::from_millis(10));
    Rig {
        proxy,
        aws: base.aws,
        table: base.table,
        bus_queue: base.events,
        dlq,
        handler,
    }
}

fn workload(records: usize, users: usize) -> Workload {
    let run = uuid::Uuid::new_v4().simple().to_string();
    Workload::new(records, users)
        .prefixed(
            &format!("rel-{}", &run[..12]),
            &format!("evt-{}", &run[..12]),
        )
        .with_invalid_every(9)
}

fn batch(w: &Workload) -> KinesisEvent {
    emulator::kinesis_event("shardId-000000000000", 1_000, &w.records())
}

/// The fault-free outcome: final profiles and published events of one in-memory run.
struct Reference {
    profiles: BTreeMap<String, Profile>,
    events: Vec<BusEvent>,
    invalid_origins: BTreeSet<String>,
    /// Profiles whose records came back through another stream position (a redrive): their
    /// watermark names it instead.
    moved: BTreeSet<String>,
}

async fn reference(w: &Workload, event: &KinesisEvent) -> Reference {
    let handler = memory_enricher().unwrap();
    let (response, _, _) = handler.process(event).await;
    assert!(response.batch_item_failures.is_empty());
    let invalid_origins = event
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| w.is_invalid(*i))
        .map(|(_, r)| {
            let shard = r
                .event_id
                .as_deref()
                .and_then(|id| id.split_once(':'))
                .map_or("", |s| s.0);
            format!("kinesis:{shard}:{}", r.kinesis.sequence_number)
        })
        .collect();
    let letters = handler.dead_letters.letters.lock().unwrap().clone();
    assert_eq!(
        letters
            .iter()
            .map(|l| l.origin.clone())
            .collect::<BTreeSet<_>>(),
        invalid_origins,
        "the reference run dead-letters exactly the broken records"
    );
    Reference {
        profiles: handler.store.snapshot(),
        events: handler.bus.take(),
        invalid_origins,
        moved: BTreeSet::new(),
    }
}

/// Invokes the handler like Lambda until no record fails; returns the number of invocations.
async fn redrive(handler: &DynamoEnricher, event: &KinesisEvent) -> usize {
    let mut current = event.clone();
    for round in 1..=MAX_ROUNDS {
        let (response, stats, _) = handler.process(&current).await;
        let failed: BTreeSet<String> = failed_sequence_numbers(&response).into_iter().collect();
        eprintln!(
            "round {round}: {} records, {stats:?}",
            current.records.len()
        );
        if failed.is_empty() {
            return round;
        }
        let from = current
            .records
            .iter()
            .position(|r| failed.contains(&r.kinesis.sequence_number))
            .expect("failures name records of the batch");
        current.records = current.records[from..].to_vec();
    }
    panic!("the batch did not settle in {MAX_ROUNDS} invocations");
}

/// What a bus event says, without the parts that legitimately vary between runs (the id and
/// profile version: outbox writes add versions).
fn meaning(e: &BusEvent) -> String {
    match e {
        BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => format!(
            "{}|{}|{}|{}|{:?}",
            e.detail_type(),
            c.profile_id,
            c.segment,
            c.at,
            c.cause_event_id
        ),
        BusEvent::CartUpdated(c) => format!(
            "CartUpdated|{}|{}|{}|{:?}|{}",
            c.profile_id, c.item_count, c.value_minor, c.currency, c.updated_at
        ),
        BusEvent::ConfigPublished(c) => format!("ConfigPublished|{}", c.version),
    }
}

fn id_of(e: &BusEvent) -> String {
    e.id().to_owned()
}

/// The ids of the bus events the fault-free reference run publishes.
async fn reference_event_ids(w: &Workload, event: &KinesisEvent) -> BTreeSet<String> {
    reference(w, event).await.events.iter().map(id_of).collect()
}

/// A profile without what legitimately differs between runs: its version (outbox writes add
/// versions) and the published events a profile keeps until its next write drops them.
fn normalised(p: &Profile) -> Profile {
    Profile {
        version: 0,
        outbox: Default::default(),
        ..p.clone()
    }
}

/// A rig with `sdk_attempts`, the batch of a workload of `records` over `users`, and what a
/// fault-free run of it gives.
async fn scenario(
    sdk_attempts: u32,
    records: usize,
    users: usize,
) -> (Rig, KinesisEvent, Reference) {
    let rig = rig(sdk_attempts).await;
    let w = workload(records, users);
    let event = batch(&w);
    let expected = reference(&w, &event).await;
    (rig, event, expected)
}

/// Checks the settled state against the reference; returns the bus events read.
async fn assert_settled(rig: &Rig, reference: &Reference) -> Vec<BusEvent> {
    rig.proxy.clear_rules();
    for (id, expected) in &reference.profiles {
        let stored = rig.aws.get_profile(&rig.table, id).await.unwrap();
        let stored = stored.unwrap_or_else(|| panic!("profile {id} missing"));
        assert!(
            !stored.outbox.has_unpublished(),
            "profile {id} still has unpublished events: {:?}",
            stored.outbox
        );
        let mut expected = normalised(expected);
        if reference.moved.contains(id) {
            expected.stream = stored.stream.clone();
        }
        assert_eq!(
            normalised(&stored),
            expected,
            "profile {id} differs from the fault-free run"
        );
    }

    let letters: Vec<DeadLetter> = rig
        .aws
        .drain(&rig.dlq.url, Duration::from_millis(500))
        .await
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).expect("dead letters are JSON"))
        .collect();
    for l in &letters {
        assert!(matches!(l.stage.as_str(), "decode" | "validate"), "{l:?}");
        assert!(!l.reason.is_empty(), "{l:?}");
    }
    let origins: BTreeSet<String> = letters.iter().map(|l| l.origin.clone()).collect();
    assert_eq!(
        origins, reference.invalid_origins,
        "dead letters are exactly the broken records"
    );

    let events = rig
        .aws
        .drain_bus_events(&rig.bus_queue.url, Duration::from_millis(700))
        .await
        .unwrap();
    // The bus is at least once (so is EventBridge's own delivery): a redelivered batch
    // publishes its last write's events again, with the same ids, and consumers de-duplicate
    // by id. And a key that made progress in several writes (some calls failed) published
    // the states in between too, as any batch boundary would. What must hold: one content
    // per id, no transition lost (each profile's segment changes alternate and end where the
    // fault-free run's end), and each cart's last event is the fault-free run's last.
    let mut by_id: BTreeMap<String, &BusEvent> = BTreeMap::new();
    for e in &events {
        if let Some(first) = by_id.insert(id_of(e), e) {
            assert_eq!(first, e, "two different events share the id {}", id_of(e));
        }
    }
    let distinct: Vec<BusEvent> = by_id.into_values().cloned().collect();
    assert_eq!(
        outcome(&distinct),
        outcome(&reference.events),
        "the bus does not tell the fault-free run's story"
    );
    distinct
}

/// Per profile: the last cart event, and per segment the last transition, after checking
/// that entries and exits alternate (in profile-version order).
fn outcome(events: &[BusEvent]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&BusEvent> = events.iter().collect();
    sorted.sort_by_key(|e| match e {
        BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => c.profile_version,
        BusEvent::CartUpdated(c) => c.profile_version,
        BusEvent::ConfigPublished(c) => c.version,
    });
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for e in sorted {
        let key = match e {
            BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => {
                format!("{}|{}", c.profile_id, c.segment)
            }
            BusEvent::CartUpdated(c) => format!("{}|cart", c.profile_id),
            BusEvent::ConfigPublished(_) => "config".to_owned(),
        };
        if let Some(previous) = last.get(&key) {
            assert!(
                matches!(e, BusEvent::CartUpdated(_)) || !previous.starts_with(e.detail_type()),
                "{key}: two {} in a row",
                e.detail_type()
            );
        }
        let what = match e {
            BusEvent::CartUpdated(_) => meaning(e),
            other => other.detail_type().to_owned(),
        };
        last.insert(key, what);
    }
    last
}

#[tokio::test]
async fn dynamodb_throttling_and_500s_apply_every_event_exactly_once() {
    let (rig, event, expected) = scenario(1, 90, 9).await;

    // Bursts, with no SDK retries so that every fault reaches the handler. (A steady fault
    // rate without SDK retries never settles under Lambda's re-drive: every invocation reads
    // every remaining profile again. `everything_at_once_timeouts_included` covers steady
    // rates with the SDK's retries on.)
    let throttled = rig.inject(Rule::new(op::DDB_GET_ITEM, Fault::Throttle).first(4));
    let failed_puts = rig.inject(Rule::new(op::DDB_PUT_ITEM, Fault::ServerError).first(3));
    let rounds = redrive(&rig.handler, &event).await;
    assert!(throttled.injected() > 0 && failed_puts.injected() > 0);
    assert!(rounds > 1, "the faults must have failed records");
    assert_settled(&rig, &expected).await;
}

#[tokio::test]
async fn ambiguous_profile_writes_lose_no_bus_event() {
    // The write reaches DynamoDB but its answer is lost (connection dropped): the retry sees a
    // version conflict, re-reads and finds every event already applied. Only profile writes:
    // claims are PutItem calls too, and dropping half of everything only slows the test.
    let (rig, event, expected) = scenario(1, 60, 6).await;
    let dropped = rig.inject(
        Rule::new(op::DDB_PUT_ITEM, Fault::DropAfterForward)
            .on_table(&rig.table)
            .every(2),
    );
    redrive(&rig.handler, &event).await;
    assert!(dropped.injected() > 0);
    assert_settled(&rig, &expected).await;
}

#[tokio::test]
async fn eventbridge_partial_failures_and_throttling_publish_each_event_once() {
    let (rig, event, expected) = scenario(1, 90, 9).await;
    let entered = expected
        .events
        .iter()
        .filter(|e| matches!(e, BusEvent::SegmentEntered(_)))
        .count();
    assert!(entered > 0, "the workload must move profiles into segments");

    let throttled = rig.inject(Rule::new(op::EVENTS_PUT_EVENTS, Fault::Throttle).every(4));
    let partial = rig.inject(Rule::new(
        op::EVENTS_PUT_EVENTS,
        Fault::PartialFailure {
            entries: Schedule::Every(2),
        },
    ));
    let rounds = redrive(&rig.handler, &event).await;
    assert!(throttled.injected() > 0, "{}", throttled.matched());
    assert!(partial.entries_failed() > 0);
    let events = assert_settled(&rig, &expected).await;
    eprintln!(
        "settled in {rounds} invocations, {} bus events",
        events.len()
    );
}

#[tokio::test]
async fn dead_letter_queue_errors_fail_only_the_broken_records_until_they_land() {
    let (rig, event, expected) = scenario(1, 45, 5).await;

    let down = rig.inject(Rule::new(op::SQS_SEND_MESSAGE_BATCH, Fault::ServerError).first(2));
    // Then a burst of partial failures (every 2nd entry of the next 3 calls).
    let partial = rig.inject(
        Rule::new(
            op::SQS_SEND_MESSAGE_BATCH,
            Fault::PartialFailure {
                entries: Schedule::Every(2),
            },
        )
        .first(3),
    );
    let rounds = redrive(&rig.handler, &event).await;
    assert_eq!(down.injected(), 2);
    assert!(partial.entries_failed() > 0);
    assert!(
        rounds > 1,
        "a failed dead-letter send must fail its records"
    );
    assert_settled(&rig, &expected).await;
}

#[tokio::test]
async fn records_refused_for_good_are_redriven_from_the_dead_letter_queue_and_applied_once() {
    let (rig, event, mut expected) = scenario(1, 60, 6).await;
    // Profile writes refused for good (an item the table will not take, say): those
    // customers' records are dead-lettered with the cause, their claims released.
    let refused = rig.inject(
        Rule::new(op::DDB_PUT_ITEM, Fault::Refuse)
            .on_table(&rig.table)
            .first(3),
    );
    redrive(&rig.handler, &event).await;
    assert!(refused.injected() > 0);
    rig.proxy.clear_rules();

    // The cause is fixed: the operator puts exactly those records back on the stream.
    let queue = DeadLetterQueue::from_conf(&rig.aws.config, &rig.dlq.url);
    let listed = queue.list().await.unwrap();
    let refused_origins: BTreeSet<String> = listed
        .iter()
        .filter_map(|q| q.letter.as_ref().ok())
        .filter(|l| l.stage == "profile.put")
        .map(|l| l.origin.clone())
        .collect();
    assert!(!refused_origins.is_empty(), "{listed:?}");
    let stream_name = rig.aws.create_stream("rel-redrive", 1).await.unwrap();
    let stream = ember_aws::kinesis::KinesisEventStream::new(rig.aws.kinesis.clone(), &stream_name);
    let selection = Selection {
        stage: Some("profile.put".into()),
        reason: Some("ValidationException".into()),
    };
    let plan = ember_aws::redrive::redrive(&queue, &stream, &selection, true)
        .await
        .unwrap();
    assert!(
        read_stream(&rig.aws.kinesis, &stream_name).await.is_empty(),
        "a dry run puts nothing"
    );
    let report = ember_aws::redrive::redrive(&queue, &stream, &selection, false)
        .await
        .unwrap();
    assert_eq!(report.done, plan.done);
    assert_eq!(
        report.done.iter().cloned().collect::<BTreeSet<_>>(),
        refused_origins
    );
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(
        report.skipped,
        expected.invalid_origins.len(),
        "invalid records stay"
    );

    // Enrich reads them back; a redrive repeated (the same records twice) applies them once.
    let landed: Vec<(String, Vec<u8>)> = read_stream(&rig.aws.kinesis, &stream_name)
        .await
        .into_iter()
        .map(|(key, value)| (key, serde_json::to_vec(&value).unwrap()))
        .collect();
    assert_eq!(landed.len(), refused_origins.len());
    expected.moved = landed.iter().map(|(key, _)| key.clone()).collect();
    let mut twice = landed.clone();
    twice.extend(landed);
    let again = emulator::kinesis_event("shardId-000000000001", 0, &twice);
    redrive(&rig.handler, &again).await;
    // Same profiles as the fault-free run; the queue holds only the invalid records.
    assert_settled(&rig, &expected).await;
}

#[tokio::test]
async fn everything_at_once_timeouts_included() {
    let (rig, event, expected) = scenario(2, 120, 12).await;
    rig.inject(Rule::new(op::DDB_GET_ITEM, Fault::Stall(Duration::from_secs(4))).every(7));
    rig.inject(Rule::new(op::DDB_PUT_ITEM, Fault::Throttle).every(3));
    rig.inject(Rule::new(op::EVENTS_PUT_EVENTS, Fault::ServerError).every(5));
    rig.inject(Rule::new(op::SQS_SEND_MESSAGE_BATCH, Fault::Throttle).first(1));
    redrive(&rig.handler, &event).await;
    assert_settled(&rig, &expected).await;
}

#[tokio::test]
async fn replaying_a_batch_three_times_changes_nothing() {
    let (rig, event, expected) = scenario(3, 60, 6).await;
    assert_eq!(redrive(&rig.handler, &event).await, 1);
    let first = assert_settled(&rig, &expected).await;

    let puts_before = rig.proxy.calls(op::DDB_PUT_ITEM);
    let events_before = rig.proxy.calls(op::EVENTS_PUT_EVENTS);
    for _ in 0..3 {
        assert_eq!(redrive(&rig.handler, &event).await, 1);
    }
    // No profile write and no claim: every record is below its profile's watermark. The last
    // write's events may go out again (a redelivery cannot know they did), never new ones.
    assert_eq!(rig.proxy.calls(op::DDB_PUT_ITEM), puts_before);
    assert!(rig.proxy.calls(op::EVENTS_PUT_EVENTS) >= events_before);
    for (id, p) in &expected.profiles {
        let stored = rig.aws.get_profile(&rig.table, id).await.unwrap().unwrap();
        assert_eq!(normalised(&stored), normalised(p));
    }
    let again = rig
        .aws
        .drain_bus_events(&rig.bus_queue.url, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(
        again.iter().all(|e| first.contains(e)),
        "a replay published new events: {again:?}"
    );
    // Broken records are dead-lettered again on replay (at least once, same origin).
    let letters = rig
        .aws
        .drain(&rig.dlq.url, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(letters.len(), 3 * expected.invalid_origins.len());
    assert!(!first.is_empty() || expected.events.is_empty());
}

/// Distinct bus events read from the rig's queue, by id.
async fn published_ids(rig: &Rig) -> BTreeSet<String> {
    rig.aws
        .drain_bus_events(&rig.bus_queue.url, Duration::from_millis(700))
        .await
        .unwrap()
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test]
async fn bus_events_survive_a_failed_publish_whose_outbox_write_also_fails() {
    let rig = rig(1).await;
    let w = Workload::new(30, 3).prefixed(&emulator::unique("rel-ob"), &emulator::unique("ob"));
    let event = batch(&w);
    let expected = reference_event_ids(&w, &event).await;
    assert!(!expected.is_empty());
    // Every PutEvents fails; the writes of the batch (claims, profiles) land, then the write
    // that would mark the events unpublished fails too.
    let writes = w.records().len() + 3;
    rig.inject(Rule::new(op::EVENTS_PUT_EVENTS, Fault::ServerError));
    rig.inject(
        Rule::new(op::DDB_PUT_ITEM, Fault::SlowResponse(Duration::ZERO)).first(writes as u64),
    );
    rig.inject(Rule::new(op::DDB_PUT_ITEM, Fault::ServerError));
    let (response, _, _) = rig.handler.process(&event).await;
    assert!(
        !response.batch_item_failures.is_empty(),
        "the records are retried"
    );
    rig.proxy.clear_rules();
    let mut stored = 0;
    for id in reference(&w, &event).await.profiles.keys() {
        let p = rig.aws.get_profile(&rig.table, id).await.unwrap().unwrap();
        assert_eq!(p.version, 1, "{id}: written once, the second write failed");
        stored += p.outbox.len();
    }
    assert_eq!(
        stored,
        expected.len(),
        "every event is stored with its profile"
    );
    // Lambda retries the records: the events stored with the profiles go out.
    redrive(&rig.handler, &event).await;
    assert_eq!(published_ids(&rig).await, expected);
}

#[tokio::test]
async fn bus_events_of_written_profiles_survive_the_function_dying_before_it_publishes() {
    let rig = rig(1).await;
    let w = Workload::new(30, 3).prefixed(&emulator::unique("rel-to"), &emulator::unique("to"));
    let event = batch(&w);
    let expected = reference_event_ids(&w, &event).await;
    // PutEvents hangs; the invocation times out after the profiles were written (the process
    // is gone: nothing after the writes runs).
    rig.inject(Rule::new(
        op::EVENTS_PUT_EVENTS,
        Fault::Stall(Duration::from_secs(5)),
    ));
    let timed_out = tokio::time::timeout(Duration::from_secs(2), rig.handler.process(&event)).await;
    assert!(timed_out.is_err(), "the invocation must time out");
    rig.proxy.clear_rules();
    for id in reference(&w, &event).await.profiles.keys() {
        assert!(
            rig.aws.get_profile(&rig.table, id).await.unwrap().is_some(),
            "{id} written"
        );
    }
    // Lambda retries the whole batch: every record is below its watermark, nothing is folded
    // again, and the stored events are published.
    redrive(&rig.handler, &event).await;
    assert_eq!(published_ids(&rig).await, expected);
}
