//! Replay: the same generated sample (the generator behind events/pipeline/sample.jsonl:
//! browsers, buyers, heat lovers, mild explorers, cart abandoners, churners, lapsed repeat
//! customers, malformed events) through the template's pipeline three times, against the
//! emulator. After the first run every profile, bus event and email exists; the second and
//! third runs (every event again, same ids, through the HTTP API and Kinesis) must leave the
//! profiles identical (same versions), publish nothing and send no email.

use std::collections::BTreeMap;

use ember_core::profile::Profile;
use ember_local::generate::{generate, GenerateOptions};
use ember_local::{replay, Pipeline, ReplaySummary};
use ember_tests::emulator::Aws;
use ember_tests::local::start_pipeline;

async fn profiles(aws: &Aws, table: &str) -> BTreeMap<String, Profile> {
    aws.all_profiles(table).await
}

/// Sent emails as sorted (recipient, subject) pairs.
fn mail(s: &ReplaySummary) -> Vec<(String, String)> {
    let mut v: Vec<_> = s
        .emails
        .iter()
        .map(|e| (e.to.join(","), e.subject.clone()))
        .collect();
    v.sort();
    v
}

fn bus_count(p: &Pipeline) -> usize {
    p.bus_events.lock().map(|v| v.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sample_replayed_three_times_gives_identical_profiles_and_the_same_emails() {
    let aws = Aws::from_env().await.expect("emulator environment");
    let gen = GenerateOptions {
        users: 40,
        seed: 11,
        lapsed: 3,
        ..Default::default()
    };
    let (events, _) = generate(&gen);
    let (pipeline, ropts) = start_pipeline(&aws, &events)
        .await
        .expect("pipeline starts");
    let table = pipeline.name_of("ProfilesTable").expect("profiles table");

    let mut runs = Vec::new();
    for _ in 0..3 {
        let summary = replay(&pipeline, events.clone(), &ropts, None).await;
        let snapshot = profiles(&aws, &table).await;
        runs.push((summary, snapshot, bus_count(&pipeline)));
    }
    pipeline.stop(true).await;

    let mut runs = runs.into_iter().map(|(s, p, b)| (s.expect("replay"), p, b));
    let (first, first_profiles, first_bus) = runs.next().expect("first run");
    println!("{first}");
    assert!(first.drained, "the first run did not drain");
    assert_eq!(first.rejected.len(), gen.invalid, "{:?}", first.rejected);
    assert!(
        first_profiles.len() >= gen.users + gen.lapsed,
        "{} profiles",
        first_profiles.len()
    );
    let segments = |name: &str| {
        first_profiles
            .values()
            .filter(|p| p.segments.contains(name))
            .count()
    };
    // The sample exercises the whole pipeline, so "nothing changed" below means something.
    for seg in ["high_heat_lover", "churn_risk"] {
        assert!(segments(seg) > 0, "nobody in {seg}");
    }
    assert!(first_bus > 0 && !first.emails.is_empty(), "{first}");

    for (n, (again, again_profiles, again_bus)) in runs.enumerate() {
        let n = n + 2;
        assert!(again.drained, "run {n} did not drain");
        assert_eq!(
            again.accepted, first.accepted,
            "run {n} posted the same events"
        );
        assert_eq!(
            again.kinesis_records - again.kinesis_assignments,
            (first.kinesis_records - first.kinesis_assignments) * n as u64,
            "run {n}: every event went through the stream again"
        );
        assert_eq!(
            again.kinesis_assignments, first.kinesis_assignments,
            "run {n}: no campaign assignment again (nothing was sent)"
        );
        assert_eq!(again.reports, first.reports, "run {n} changed a report");
        assert_eq!(again_bus, first_bus, "run {n} published bus events");
        assert_eq!(mail(&again), mail(&first), "run {n} changed the emails");
        assert_eq!(
            again_profiles.len(),
            first_profiles.len(),
            "run {n} added profiles"
        );
        for (id, p) in &first_profiles {
            assert_eq!(again_profiles.get(id), Some(p), "run {n} changed {id}");
        }
    }
}
