//! What a profile costs on its way to and from DynamoDB: `to_item` and `from_item` (the
//! `serde_dynamo` conversions of `shared/aws/src/profiles.rs` that every batch runs once per
//! profile, on top of the SDK's own JSON encoding of the request) for three customers:
//!
//! - `new`: one page view folded into an empty profile;
//! - `returning`: a heavy customer, 3,000 storefront events folded, with counters on each of
//!   the 30 days the rolling windows keep.
//!
//! Nothing in the item grows with the number of events, so `returning` is the size of any
//! customer with a full month of activity.
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
use ember_core::fold::FoldConfig;
use ember_core::profile::{DayCounters, Profile};
use ember_core::schema::Registry;
use ember_core::segment::RuleSet;

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

/// A heavy customer: 3,000 events of `workload`'s kind and counters on 30 days.
fn returning_customer() -> Profile {
    let mut profile = customer(Workload::new(3_000, 1).with_uuid_ids());
    let last = profile.last_seen.unwrap_or_default();
    for days_back in 1..30 {
        let day = (last - chrono::Duration::days(days_back)).date_naive();
        profile.daily.add(
            day,
            &DayCounters {
                events: 40,
                page_views: 16,
                product_views: 10,
                purchases: u64::from(days_back % 7 == 0),
                revenue_minor: if days_back % 7 == 0 { 2_599 } else { 0 },
            },
        );
    }
    profile
}

fn bench_profile_item(c: &mut Criterion) {
    let shapes = [
        ("new", customer(Workload::new(1, 1).with_uuid_ids())),
        ("returning", returning_customer()),
    ];
    for (name, profile) in &shapes {
        let item = to_item(profile).expect("profiles encode");
        let size = item_size(&item);
        println!(
            "profile_item/{name}: {size} bytes billed: {} WCU per write, {} RCU per consistent read \
             ({} days of counters)",
            size.div_ceil(1024),
            size.div_ceil(4096),
            profile.daily.days().count(),
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
                |item| from_item(item).map(|p| p.version),
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
