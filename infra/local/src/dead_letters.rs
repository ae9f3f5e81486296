//! `ember-local dead-letters`, `email-failures` and `stream-failures`: what the operator does
//! with the failure queues, on the emulator or on AWS alike (endpoints from `AWS_ENDPOINT_URL*`, credentials as
//! the SDK finds them). The work is `ember_aws::redrive`; this prints it, with any email
//! address redacted (profile ids may be addresses).

use ember_aws::redrive::{self, DeadLetterQueue, Report, Selection};
use ember_core::privacy::redact_addresses;

/// What to do with the queue's dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Print each: origin, stage, time and reason (never the raw record: it holds customer data).
    List,
    /// Put the selected ones back on `stream`.
    Redrive { stream: String, dry_run: bool },
    /// Delete the selected ones for good.
    Purge,
}

pub async fn run(
    sdk: &aws_config::SdkConfig,
    queue_url: &str,
    action: Action,
    selection: &Selection,
) -> Result<(), Box<dyn std::error::Error>> {
    let queue = DeadLetterQueue::from_conf(sdk, queue_url);
    match action {
        Action::List => {
            let all = queue.list().await?;
            let mut shown = 0;
            for queued in &all {
                match &queued.letter {
                    Ok(l) if selection.matches(l) => {
                        shown += 1;
                        println!(
                            "{}  {:<14} {}  {}",
                            l.at.format("%Y-%m-%d %H:%M:%S"),
                            l.stage,
                            l.origin,
                            redact_addresses(&l.reason)
                        );
                    }
                    Ok(_) => {}
                    Err(why) => println!("{}  {why}", redrive::UNREADABLE),
                }
            }
            println!("{shown} of {} dead letters selected", all.len());
        }
        Action::Redrive { stream, dry_run } => {
            let stream = ember_aws::kinesis::KinesisEventStream::from_conf(sdk, stream);
            let report = redrive::redrive(&queue, &stream, selection, dry_run).await?;
            let verb = if dry_run {
                "would put back"
            } else {
                "put back"
            };
            print_report(&report, verb);
        }
        Action::Purge => {
            let report = redrive::purge(&queue, selection).await?;
            print_report(&report, "deleted");
        }
    }
    Ok(())
}

/// What to do with the email failure queue's bus events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Each message: the bus event it holds (type and id), or why it holds none.
    List,
    /// Publish them on `bus` again.
    Redrive { bus: String, dry_run: bool },
}

pub async fn run_events(
    sdk: &aws_config::SdkConfig,
    queue_url: &str,
    action: EventAction,
) -> Result<(), Box<dyn std::error::Error>> {
    let queue = DeadLetterQueue::from_conf(sdk, queue_url);
    match action {
        EventAction::List => {
            let all = queue.list().await?;
            for queued in &all {
                match redrive::bus_event_of(&queued.body) {
                    Ok(e) => println!("{:<16} {}", e.detail_type(), redact_addresses(e.id())),
                    Err(why) => println!("{:<16} {why}", "(kept)"),
                }
            }
            println!("{} messages", all.len());
        }
        EventAction::Redrive { bus, dry_run } => {
            let bus = ember_aws::eventbridge::EventBridgeBus::from_conf(sdk, bus);
            let report = redrive::redrive_events(&queue, &bus, dry_run).await?;
            let verb = if dry_run {
                "would publish"
            } else {
                "published"
            };
            print_report(&report, verb);
        }
    }
    Ok(())
}

/// Where `stream-failures redrive` decides what was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    /// Read from and put back on.
    pub stream: String,
    pub profiles_table: String,
    pub ledger_table: String,
    /// The archive bucket, for ranges that have left the stream, and the de-duplication
    /// window in days.
    pub archive: Option<(String, i64)>,
    pub dry_run: bool,
}

/// Lists the failed batches (`target` = `None`), or redrives them.
pub async fn run_stream_failures(
    sdk: &aws_config::SdkConfig,
    queue_url: &str,
    target: Option<StreamTarget>,
) -> Result<(), Box<dyn std::error::Error>> {
    use ember_aws::stream_failures;
    let queue = DeadLetterQueue::from_conf(sdk, queue_url);
    let Some(target) = target else {
        let all = stream_failures::list(&queue).await?;
        for batch in &all {
            match batch {
                Ok(b) => println!(
                    "{}  {} {}..{}  {} records  {}",
                    b.first_arrival
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_else(|| "-".into()),
                    b.shard_id,
                    b.start,
                    b.end,
                    b.size,
                    b.condition
                ),
                Err(why) => println!("{}  {why}", redrive::UNREADABLE),
            }
        }
        println!("{} failed batches", all.len());
        return Ok(());
    };
    let source = ember_aws::kinesis::KinesisEventStream::from_conf(sdk, &target.stream);
    let archive = target
        .archive
        .as_ref()
        .map(|(bucket, days)| (ember_aws::archive::Archive::from_conf(sdk, bucket), *days));
    let ports = stream_failures::Ports {
        queue: &queue,
        source: &source,
        claims: &ember_aws::ledger::DynamoLedger::from_conf(sdk, &target.ledger_table),
        profiles: &ember_aws::profiles::DynamoProfileStore::from_conf(sdk, &target.profiles_table),
        stream: &source,
        archive: archive
            .as_ref()
            .map(|(archive, days)| stream_failures::ArchiveSource {
                archive,
                dedup_window: chrono::Duration::days(*days),
            }),
    };
    let report = stream_failures::redrive(ports, target.dry_run).await?;
    let verb = if target.dry_run {
        "would put back"
    } else {
        "put back"
    };
    for origin in &report.put_back {
        println!("{verb:<15} {origin}");
    }
    for (what, why) in &report.kept {
        println!("{:<15} {what}: {}", "kept", redact_addresses(why));
    }
    println!(
        "{} batches settled: {} records {verb}, {} applied already, {} duplicates, {} not events; {} batches kept",
        report.batches,
        report.put_back.len(),
        report.applied,
        report.duplicates,
        report.not_events,
        report.kept.len()
    );
    Ok(())
}

fn print_report(report: &Report, verb: &str) {
    for done in &report.done {
        println!("{verb:<15} {}", redact_addresses(done));
    }
    for (what, why) in &report.kept {
        println!(
            "{:<15} {}: {}",
            "kept",
            redact_addresses(what),
            redact_addresses(why)
        );
    }
    println!(
        "{} {verb}, {} kept, {} not selected",
        report.done.len(),
        report.kept.len(),
        report.skipped
    );
}
