//! The training run of profile-guided optimisation (`infra/pgo.sh`, BENCHMARKS.md section 1):
//! a JSON-lines file of events (default: the demo's `events/pipeline/sample.jsonl`, written by
//! `ember-local generate`, not the benchmark's workload) goes through the enrich handler with
//! the in-memory ports, as Lambda payloads of 100 Kinesis records (the event source mapping's
//! default batch size), keyed by profile like the HTTP API keys them. The store keeps its
//! profiles from batch to batch, as DynamoDB would.
//!
//! It is a bench target (no harness) rather than a binary so that `cargo bench` builds it with
//! the same profile and features as `benches/enrich.rs`: a PGO profile only applies to
//! functions whose symbol names match, and those carry cargo's per-build crate hashes.
//!
//! Usage: `cargo bench -p ember-benches --bench pgo_train -- [file] [passes]`; each pass after
//! the first replays the file under fresh event ids (so it is folded again, not dropped as
//! duplicates) for more samples of the same traffic.

use std::error::Error;

use ember_benches::memory::memory_enricher;
use ember_benches::workload::kinesis_event;
use ember_core::event::Envelope;

/// Records per Lambda invocation (Kinesis event source mapping default).
const BATCH: usize = 100;

fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` appends `--bench`; the other arguments are positional.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let path = args
        .first()
        .map_or("events/pipeline/sample.jsonl", String::as_str);
    let passes: usize = args.get(1).map(|p| p.parse()).transpose()?.unwrap_or(3);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // Each line's partition key, read once (it is the same in every pass).
    let keyed: Vec<(String, &str)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (profile_key(l), l))
        .collect();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let enricher = memory_enricher()?;

    let (mut records, mut failed, mut writes) = (0usize, 0usize, 0usize);
    for pass in 0..passes {
        let batch: Vec<(String, Vec<u8>)> = keyed
            .iter()
            .map(|(key, line)| (key.clone(), with_pass(line, pass).into_bytes()))
            .collect();
        for chunk in batch.chunks(BATCH) {
            // Built without writing JSON text, so that the training counts little beyond what
            // the function itself runs (serde_json's writer would otherwise be the hottest code).
            let event = kinesis_event(chunk);
            let (response, stats, _) = runtime.block_on(enricher.process(&event));
            records += chunk.len();
            failed += response.batch_item_failures.len();
            writes += stats.writes;
        }
    }
    let dead = enricher.dead_letters.len();
    println!(
        "pgo_train: {records} records from {path} ({passes} passes): {writes} profile writes, \
         {dead} dead letters, {failed} records left for retry"
    );
    if failed > 0 {
        return Err("the handler asked for retries; the training run is not representative".into());
    }
    Ok(())
}

/// The partition key of a line: its profile, as the HTTP API keys records. Lines that are not
/// events get a fixed key and are sent as they are: the HTTP API would refuse them, but a
/// producer writing to the stream directly could send them, and the handler dead-letters them.
fn profile_key(line: &str) -> String {
    serde_json::from_str::<Envelope>(line)
        .ok()
        .and_then(|e| e.profile_key())
        .unwrap_or_else(|| "invalid".to_owned())
}

/// The line with its event id made unique for `pass` (unchanged in the first pass), so later
/// passes are folded again instead of dropped as duplicates.
fn with_pass(line: &str, pass: usize) -> String {
    const ID: &str = "\"event_id\":\"";
    match line.find(ID) {
        Some(at) if pass > 0 => {
            let start = at + ID.len();
            format!("{}pass{pass}-{}", &line[..start], &line[start..])
        }
        _ => line.to_owned(),
    }
}
