//! What a profile costs on its way to and from DynamoDB: `to_item` and `from_item` (the
//! `serde_dynamo` conversions of `shared/aws/src/profiles.rs` that every batch runs once per
//! profile, on top of the SDK's own JSON encoding of the request) for three customers:
//!
//! - `new`: one page view folded into an empty profile;
//! - `returning`: a customer at the profile's bounds, 1,200 storefront events folded (so the
//!   de-duplication ring holds its maximum of 1,000 event ids, each about as long as a UUID
//!   but not one, so stored as text) and a daily bucket for each of the 30 days the rolling
//!   windows keep;
//! - `returning_uuid`: the same customer with event ids that are UUIDs, as the HTTP API
//!   assigns them and the envelope schema recommends (packed to 16 bytes each).
//!
//! Before measuring it prints each item's billed size (DynamoDB's documented rules,
//! `ember_aws::profiles::item_size`) and the capacity units a write and a strongly consistent
//! read of it cost. Run: `cargo bench -p ember-benches --bench profile_item`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ember_aws::profiles::{from_item, item_size, to_item};
use ember_benches::workload::Workload;
use ember_core::enrich::decode;
use ember_core::fold::{day_key, FoldConfig};
use ember_core::profile::{DayCounters, Profile, RECENT_EVENT_IDS};
use ember_core::schema::Registry;
use ember_core::segment::RuleSet;

/// Event ids of 34–37 characters (`<32 characters>-<n>`), about a UUID's 36.
const ID_PREFIX: &str = "3b7e1f0c-9d2a-4c6b-8e5f-0a1b2c3d";

/// The profile of the one user of `workload`'s events, folded as the handler folds them, with
/// its segments evaluated.
fn customer(workload: Workload) -> Profile {
    let registry = Registry::embedded().expect("embedded schemas compile");
    let rules = RuleSet::embedded().expect("embedded rules compile");
    let records = workload.records();
    let mut profile = Profile::new(records[0].0.clone());
    for (_, bytes) in &records {
        let event = decode(bytes, &registry).expect("workload events are valid");
        profile.apply(&event, &FoldConfig::default());
    }
    let now = profile.last_seen.unwrap_or_default();
    profile.segments = rules.evaluate(&profile, now);
    profile
}

/// A customer at the profile's bounds: 1,200 events of `workload`'s kind and 30 daily buckets.
fn returning_customer(workload: fn(Workload) -> Workload) -> Profile {
    let mut profile = customer(workload(Workload::new(1_200, 1)));
    assert_eq!(profile.recent_event_ids.len(), RECENT_EVENT_IDS);
    let last = profile.last_seen.unwrap_or_default();
    for days_back in 1..30 {
        let day = last - chrono::Duration::days(days_back);
        profile.daily.insert(
            day_key(day),
            DayCounters {
                events: 40,
                page_views: 16,
                product_views: 10,
                purchases: 1,
                revenue_minor: 1_250,
            },
        );
    }
    profile
}

fn bench_profile_item(c: &mut Criterion) {
    let text_ids = |w: Workload| w.prefixed("u", ID_PREFIX);
    let shapes = [
        ("new", customer(text_ids(Workload::new(1, 1)))),
        ("returning", returning_customer(text_ids)),
        (
            "returning_uuid",
            returning_customer(Workload::with_uuid_ids),
        ),
    ];
    for (name, profile) in &shapes {
        let item = to_item(profile).expect("profiles encode");
        let size = item_size(&item);
        println!(
            "profile_item/{name}: {size} bytes billed: {} WCU per write, {} RCU per consistent read \
             ({} event ids, {} daily buckets)",
            size.div_ceil(1024),
            size.div_ceil(4096),
            profile.recent_event_ids.len(),
            profile.daily.len(),
        );
    }
    let mut group = c.benchmark_group("profile_item");
    for (name, profile) in &shapes {
        group.bench_with_input(BenchmarkId::new("to_item", name), profile, |b, p| {
            b.iter(|| to_item(black_box(p)).map(|item| item.len()))
        });
        let item = to_item(profile).expect("profiles encode");
        group.bench_with_input(BenchmarkId::new("from_item", name), &item, |b, item| {
            b.iter_batched(
                || item.clone(),
                |item| from_item(item).map(|p| p.recent_event_ids.len()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = configure();
    targets = bench_profile_item
}
criterion_main!(benches);
