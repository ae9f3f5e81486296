//! `ember-local dead-letters`: what the operator does with the dead-letter queue, on the
//! emulator or on AWS alike (endpoints from `AWS_ENDPOINT_URL*`, credentials as the SDK finds
//! them). The work is `ember_aws::redrive`; this prints it.

use ember_aws::redrive::{self, DeadLetterQueue, Report, Selection};

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
                            l.reason
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

fn print_report(report: &Report, verb: &str) {
    for origin in &report.done {
        println!("{verb:<15} {origin}");
    }
    for (origin, why) in &report.kept {
        println!("{:<15} {origin}: {why}", "kept");
    }
    println!(
        "{} {verb}, {} kept, {} not selected",
        report.done.len(),
        report.kept.len(),
        report.skipped
    );
}
