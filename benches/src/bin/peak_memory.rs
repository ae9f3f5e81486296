//! Peak heap of Ember's enrich handler for one Kinesis batch, measured with a counting
//! global allocator. Usage: `cargo run --release -p ember-benches --bin ember-peak-memory
//! -- [records] [users]` (defaults 10000 and 1000).

use ember_benches::alloc::{self, CountingAlloc};
use ember_benches::memory::memory_enricher;
use ember_benches::workload::Workload;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let users: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let baseline = alloc::live();
    let enricher = memory_enricher()?;
    let after_init = alloc::live();

    // The Lambda payload as the runtime hands it over: JSON text of the KinesisEvent.
    let payload = serde_json::to_vec(&Workload::new(records, users).kinesis_event())?;
    let payload_bytes = payload.len();
    alloc::reset_peak();
    let before = alloc::live();
    let event: aws_lambda_events::event::kinesis::KinesisEvent = serde_json::from_slice(&payload)?;
    let (response, stats, elapsed) = runtime.block_on(enricher.process(&event));
    let peak = alloc::peak() - before;
    drop(event);

    println!("records={records} users={users}");
    println!(
        "lambda payload (JSON)        : {:>8.1} MiB",
        mib(payload_bytes)
    );
    println!(
        "handler state after init     : {:>8.1} MiB (schemas, rules)",
        mib(after_init - baseline)
    );
    println!("peak heap during the batch   : {:>8.1} MiB (payload parse + processing, in-memory ports incl. stored profiles)", mib(peak));
    println!(
        "profiles held by the in-memory store afterwards: {:.1} MiB",
        mib(alloc::live().saturating_sub(before))
    );
    println!(
        "stats: users={} writes={} published={} failed={} in {:?}",
        stats.users,
        stats.writes,
        stats.published,
        response.batch_item_failures.len(),
        elapsed
    );
    Ok(())
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
