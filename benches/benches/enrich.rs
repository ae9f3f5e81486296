//! Criterion benchmarks of the enrichment path, in-process (no network):
//!
//! - `decode`: JSON parse + schema validation + enrichment per record;
//! - `stages`: `decode`'s first two stages alone at 1,000 records: `parse` (bytes →
//!   `serde_json::Value`) and `validate` (schema checks of envelope and payload + the typed
//!   envelope);
//! - `core`: decode + group by profile + fold + one segment evaluation per profile (what the
//!   handler does between reading and writing profiles); `core_uuid_ids`: the same at 1,000
//!   records with UUID event ids, as the HTTP API assigns them;
//! - `handler`: `Enricher::process` end to end with in-memory ports (empty store each run,
//!   so every event is new), including dead-letter, outbox and publish bookkeeping.
//!
//! Batches of 100, 1,000 and 10,000 records, with 1 and 1,000 distinct users. Throughput is
//! reported in records/s. Run: `cargo bench -p ember-benches --bench enrich`.

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ember_benches::memory::memory_enricher;
use ember_benches::workload::Workload;
use ember_core::enrich::{decode, EnrichedEvent};
use ember_core::fold::FoldConfig;
use ember_core::profile::Profile;
use ember_core::schema::Registry;
use ember_core::segment::RuleSet;

const SIZES: &[usize] = &[100, 1_000, 10_000];
const USERS: &[usize] = &[1, 1_000];

fn configure(c: &mut Criterion) -> Criterion {
    let _ = c;
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn bench_decode(c: &mut Criterion) {
    let registry = Registry::embedded().expect("embedded schemas compile");
    let mut group = c.benchmark_group("decode");
    for &records in SIZES {
        let raw = Workload::new(records, 1_000).records();
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::from_parameter(records), &raw, |b, raw| {
            b.iter(|| {
                let mut ok = 0usize;
                for (_, bytes) in raw {
                    ok += usize::from(decode(black_box(bytes), &registry).is_ok());
                }
                ok
            })
        });
    }
    group.finish();
}

fn bench_stages(c: &mut Criterion) {
    let registry = Registry::embedded().expect("embedded schemas compile");
    let raw = Workload::new(1_000, 1_000).records();
    let values: Vec<serde_json::Value> = raw
        .iter()
        .map(|(_, bytes)| serde_json::from_slice(bytes).expect("the workload is JSON"))
        .collect();
    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Elements(raw.len() as u64));
    group.bench_function("parse/1000", |b| {
        b.iter(|| {
            raw.iter()
                .filter(|(_, bytes)| {
                    serde_json::from_slice::<serde_json::Value>(black_box(bytes)).is_ok()
                })
                .count()
        })
    });
    group.bench_function("validate/1000", |b| {
        b.iter(|| {
            values
                .iter()
                .filter(|v| registry.validate(black_box(v)).is_ok())
                .count()
        })
    });
    group.finish();
}

/// Turns the default workload into a variant of it.
type Shape = fn(Workload) -> Workload;

fn bench_core(c: &mut Criterion) {
    let registry = Registry::embedded().expect("embedded schemas compile");
    let rules = RuleSet::embedded().expect("embedded rules compile");
    let fold = FoldConfig::default();
    let now = Utc
        .with_ymd_and_hms(2026, 11, 21, 0, 0, 0)
        .single()
        .unwrap_or_default();
    // `core`: every size; `core_uuid_ids`: the same workload with UUID event ids (what the
    // HTTP API assigns), at 1,000 records.
    let variants: [(&str, &[usize], Shape); 2] = [
        ("core", SIZES, |w| w),
        ("core_uuid_ids", &[1_000], Workload::with_uuid_ids),
    ];
    for (name, sizes, shape) in variants {
        let mut group = c.benchmark_group(name);
        for &users in USERS {
            for &records in sizes {
                let raw = shape(Workload::new(records, users)).records();
                group.throughput(Throughput::Elements(records as u64));
                let id = BenchmarkId::new(format!("users={users}"), records);
                group.bench_with_input(id, &raw, |b, raw| {
                    b.iter(|| {
                        // Hashed like the handler's grouping (foldhash).
                        let mut by_key: foldhash::HashMap<&str, Vec<EnrichedEvent>> =
                            Default::default();
                        for (key, bytes) in raw {
                            if let Ok(e) = decode(bytes, &registry) {
                                by_key.entry(key.as_str()).or_default().push(e);
                            }
                        }
                        let mut segments = 0usize;
                        for (key, events) in by_key {
                            let mut profile = Profile::new(key);
                            for e in &events {
                                profile.apply(black_box(e), &fold);
                            }
                            segments += rules.evaluate(&profile, now).len();
                        }
                        segments
                    })
                });
            }
        }
        group.finish();
    }
}

fn bench_handler(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let enricher = memory_enricher().expect("embedded schemas and rules");
    let mut group = c.benchmark_group("handler");
    for &users in USERS {
        for &records in SIZES {
            let event = Workload::new(records, users).kinesis_event();
            group.throughput(Throughput::Elements(records as u64));
            let id = BenchmarkId::new(format!("users={users}"), records);
            group.bench_with_input(id, &event, |b, event| {
                b.iter(|| {
                    enricher.store.clear();
                    enricher.bus.take();
                    let (response, stats, _) = runtime.block_on(enricher.process(event));
                    assert!(response.batch_item_failures.is_empty());
                    stats.writes
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = configure(&mut Criterion::default());
    targets = bench_decode, bench_stages, bench_core, bench_handler
}
criterion_main!(benches);
