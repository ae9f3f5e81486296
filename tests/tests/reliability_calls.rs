//! AWS calls per batch, counted by the fault proxy (no faults injected): Ember's handler
//! against the naive per-record implementation (`ember_benches::naive`: one GetItem + PutItem
//! per record, one PutEvents per change, one SendMessageBatch per bad record), same workload,
//! same adapters, same emulator. Counts are not timings, so this is an ordinary test; run with
//! `--nocapture` to see the table quoted in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::Duration;

use ember_benches::naive::Naive;
use ember_benches::workload::Workload;
use ember_core::fold::FoldConfig;
use ember_enrich::Enricher;
use ember_tests::emulator::{self, ember_pattern, Aws};
use ember_tests::faults::{op, FaultProxy};

const OPS: &[&str] = &[
    op::DDB_GET_ITEM,
    op::DDB_PUT_ITEM,
    op::EVENTS_PUT_EVENTS,
    op::SQS_SEND_MESSAGE_BATCH,
];

fn counts(proxy: &FaultProxy) -> BTreeMap<&'static str, u64> {
    OPS.iter().map(|o| (*o, proxy.calls(o))).collect()
}

#[tokio::test]
async fn ember_makes_a_fraction_of_the_naive_calls() {
    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    let aws = Aws::from_config(proxy.sdk_config(3, Duration::from_secs(5)).await);
    let bus = aws.create_bus("calls-bus").await.unwrap();
    let queue = aws.route_to_queue(&bus, &ember_pattern()).await.unwrap();
    let dlq = aws.create_queue("calls-dlq").await.unwrap();

    let records = 300;
    let users = 20;
    let run = emulator::unique("calls");
    let w = Workload::new(records, users)
        .prefixed(&run, &format!("{run}-e"))
        .with_invalid_every(25);
    let invalid = (0..records).filter(|i| w.is_invalid(*i)).count();
    let valid = records - invalid;
    let event = emulator::kinesis_event("shardId-000000000000", 0, &w.records());

    // Naive baseline.
    let naive_table = aws.create_profiles_table().await.unwrap();
    let naive_ledger = aws.create_ledger_table().await.unwrap();
    let (s, l, b, d) = emulator::adapters(&aws, &naive_table, &naive_ledger, &bus, &dlq.url);
    let naive = Naive::new(s, l, b, d).unwrap();
    proxy.reset_calls();
    let naive_stats = naive.process(&event).await.expect("no faults injected");
    let naive_calls = counts(&proxy);
    let naive_events = aws
        .drain_bus_events(&queue.url, Duration::from_millis(500))
        .await
        .unwrap();

    // Ember.
    let table = aws.create_profiles_table().await.unwrap();
    let ledger = aws.create_ledger_table().await.unwrap();
    let (s, l, b, d) = emulator::adapters(&aws, &table, &ledger, &bus, &dlq.url);
    let ember = Enricher::new(s, l, b, d, FoldConfig::default()).unwrap();
    proxy.reset_calls();
    let (response, stats, _) = ember.process(&event).await;
    assert!(response.batch_item_failures.is_empty());
    let ember_calls = counts(&proxy);
    let ember_events = aws
        .drain_bus_events(&queue.url, Duration::from_millis(500))
        .await
        .unwrap();

    eprintln!("{records} records ({invalid} invalid), {users} users");
    eprintln!("{:<34} {:>8} {:>8}", "operation", "naive", "ember");
    for o in OPS {
        eprintln!("{:<34} {:>8} {:>8}", o, naive_calls[o], ember_calls[o]);
    }
    let total = |c: &BTreeMap<&str, u64>| c.values().sum::<u64>();
    eprintln!(
        "{:<34} {:>8} {:>8}",
        "total",
        total(&naive_calls),
        total(&ember_calls)
    );
    eprintln!(
        "{:<34} {:>8} {:>8}",
        "bus events published",
        naive_events.len(),
        ember_events.len()
    );

    // The baseline does what it says.
    assert_eq!(naive_calls[op::DDB_GET_ITEM], valid as u64);
    assert_eq!(naive_calls[op::DDB_PUT_ITEM], naive_stats.writes as u64);
    assert_eq!(
        naive_calls[op::EVENTS_PUT_EVENTS],
        naive_stats.published as u64
    );
    assert_eq!(naive_calls[op::SQS_SEND_MESSAGE_BATCH], invalid as u64);

    // Ember: one read and at most one write per distinct profile (and one tombstone read per
    // new profile), one claim per event id, dead letters in tens, and the batch's bus events
    // published together in chunks of ≤10.
    assert_eq!(stats.users, users);
    assert!(
        ember_calls[op::DDB_GET_ITEM] <= 2 * users as u64,
        "{ember_calls:?}"
    );
    assert_eq!(stats.claims, valid);
    assert!(
        ember_calls[op::DDB_PUT_ITEM] <= (users + valid) as u64,
        "{ember_calls:?}"
    );
    assert_eq!(
        ember_calls[op::SQS_SEND_MESSAGE_BATCH],
        invalid.div_ceil(10) as u64
    );
    assert!(!ember_events.is_empty());
    assert_eq!(
        ember_calls[op::EVENTS_PUT_EVENTS],
        ember_events.len().div_ceil(10) as u64,
        "{ember_calls:?}: {} bus events",
        ember_events.len()
    );
    assert!(
        total(&ember_calls) * 2 < total(&naive_calls),
        "{ember_calls:?} vs {naive_calls:?}"
    );
}
