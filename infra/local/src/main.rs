//! `ember-local`: see the library docs. Subcommands: `generate`, `replay`, `serve`, `config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::ledger::DynamoLedger;
use ember_core::config::ConfigStore;
use ember_core::privacy::redact_addresses;
use ember_local::clock::SimClock;
use ember_local::generate::{generate, to_jsonl, GenerateOptions};
use ember_local::metrics_report::MetricsReport;
use ember_local::respond::Responder;
use ember_local::{config_files, dead_letters};
use ember_local::{replay, Pipeline, PipelineOptions, ReplayOptions};

#[derive(Parser)]
#[command(
    name = "ember-local",
    about = "Run Ember's pipeline locally against an AWS emulator (AWS_ENDPOINT_URL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic JSONL sample of shop traffic.
    Generate {
        #[arg(long, default_value_t = 300)]
        users: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 7)]
        days: i64,
        /// First day of the sample (UTC midnight).
        #[arg(long, default_value = "2026-11-02T00:00:00Z")]
        start: DateTime<Utc>,
        /// Malformed events mixed in.
        #[arg(long, default_value_t = 3)]
        invalid: usize,
        /// Lapsed repeat customers with history 35–60 days before the start (churn_risk).
        #[arg(long, default_value_t = 12)]
        lapsed: usize,
        /// Output file ("-" for stdout).
        #[arg(long, default_value = "events/pipeline/sample.jsonl")]
        out: String,
    },
    /// Provision the template on the emulator, run the pipeline and replay a JSONL file
    /// through the HTTP API on a clock that follows event time.
    Replay {
        input: PathBuf,
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        /// Where sent emails are written as HTML (with index.html).
        #[arg(long, default_value = "out/emails")]
        emails: PathBuf,
        /// Event-time minutes between pipeline drains and sweeper runs.
        #[arg(long, default_value_t = 30)]
        sweep_every_mins: i64,
        /// Event-time hours simulated after the last event (so due timers fire).
        #[arg(long, default_value_t = 24)]
        tail_hours: i64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Keep the emulator resources after the run (default: delete them).
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        no_progress: bool,
        /// After the replay: configuration changes to publish through the admin API (a
        /// JSON list of `{"method", "path", "body"}`), while the pipeline keeps running.
        #[arg(long)]
        publish: Option<PathBuf>,
        /// Events replayed after the publish (JSONL), to show what the change does.
        #[arg(long, requires = "publish")]
        then: Option<PathBuf>,
        /// Simulated customers answer the campaigns they are placed in: a purchase within
        /// the attribution window (and before the input's last event) with this probability
        /// for everyone (the holdout's rate) …
        #[arg(long)]
        respond_base_rate: Option<f64>,
        /// … plus this for those sent the email (the true uplift the report should find).
        #[arg(long, default_value_t = 0.22, requires = "respond_base_rate")]
        respond_uplift: f64,
    },
    /// Provision and serve the HTTP API on the wall clock until Ctrl-C.
    Serve {
        #[arg(long, default_value = "template.yaml")]
        template: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        #[arg(long, default_value = "local-demo-key")]
        api_key: String,
        #[arg(long, default_value = "local-admin-key")]
        admin_key: String,
        /// Template parameter override, `Name=Value` (repeatable), e.g. webhook secrets.
        #[arg(long = "parameter", value_parser = parse_parameter)]
        parameters: Vec<(String, String)>,
        /// Where to write the functions' environment for `cargo lambda watch --env-file`.
        #[arg(long, default_value = "out/local.env")]
        env_file: PathBuf,
    },
    /// The runtime configuration (segments, campaigns, templates, catalog) as the
    /// repository's files: validate, diff against the published version, publish, roll back.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
        /// The repository root the files are read from.
        #[arg(long, default_value = ".", global = true)]
        root: PathBuf,
        /// The ledger table the versions are in (default: $LEDGER_TABLE).
        #[arg(long, env = "LEDGER_TABLE", global = true)]
        ledger_table: Option<String>,
        /// The bus publishes are announced on (default: $EVENT_BUS_NAME).
        #[arg(long, env = "EVENT_BUS_NAME", global = true)]
        event_bus: Option<String>,
    },
    /// The dead-letter queue of records enrich refused: list them with their reasons, put
    /// selected ones back on the stream once the cause is fixed, or purge them.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// The queue (default: $DEAD_LETTER_QUEUE_URL).
        #[arg(long, env = "DEAD_LETTER_QUEUE_URL", global = true)]
        queue_url: Option<String>,
        /// Only the dead letters of this stage (`validate`, `profile.put`, …).
        #[arg(long, global = true)]
        stage: Option<String>,
        /// Only those whose reason contains this text.
        #[arg(long, global = true)]
        reason: Option<String>,
    },
    /// The email failure queue: the bus events the email functions failed on, listed, or
    /// published on the bus again once the cause is fixed (an email already sent is not sent
    /// again).
    EmailFailures {
        #[command(subcommand)]
        action: EmailFailureAction,
        /// The queue (default: $EMAIL_FAILURE_QUEUE_URL).
        #[arg(long, env = "EMAIL_FAILURE_QUEUE_URL", global = true)]
        queue_url: Option<String>,
    },
    /// The enrich mapping's on-failure destination: the Kinesis batches Lambda gave up on,
    /// listed, or read back from the stream and put back (what was applied stays applied).
    StreamFailures {
        #[command(subcommand)]
        action: StreamFailureAction,
        /// The queue (default: $STREAM_FAILURE_QUEUE_URL).
        #[arg(long, env = "STREAM_FAILURE_QUEUE_URL", global = true)]
        queue_url: Option<String>,
        /// The stream the records are read from and put back on (default: $STREAM_NAME).
        #[arg(long, env = "STREAM_NAME", global = true)]
        stream: Option<String>,
        /// The profiles table (default: $PROFILES_TABLE).
        #[arg(long, env = "PROFILES_TABLE", global = true)]
        profiles_table: Option<String>,
        /// The ledger table holding the event-id claims (default: $LEDGER_TABLE).
        #[arg(long, env = "LEDGER_TABLE", global = true)]
        ledger_table: Option<String>,
        /// The archive bucket ranges that have left the stream are read from (default:
        /// $ARCHIVE_BUCKET; without one they stay in the queue).
        #[arg(long, env = "ARCHIVE_BUCKET", global = true)]
        archive_bucket: Option<String>,
        /// Enrich's de-duplication window (DedupWindowDays): older ranges are not redriven
        /// from the archive, whose claims have expired.
        #[arg(long, default_value_t = 35, global = true)]
        dedup_window_days: i64,
    },
    /// The raw event archive on S3: count what it holds, replay a range onto the stream, or
    /// remove erased customers' events from it.
    Archive {
        #[command(subcommand)]
        action: ArchiveAction,
        /// The archive bucket (default: $ARCHIVE_BUCKET).
        #[arg(long, env = "ARCHIVE_BUCKET", global = true)]
        bucket: Option<String>,
        /// The ledger table (claims, tombstones; default: $LEDGER_TABLE).
        #[arg(long, env = "LEDGER_TABLE", global = true)]
        ledger_table: Option<String>,
    },
}

#[derive(Subcommand)]
enum ArchiveAction {
    /// Objects and events in the archive (optionally of partition hours from/to).
    Count {
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Put archived events back on the stream, in order per customer.
    Replay {
        /// The stream (default: $STREAM_NAME).
        #[arg(long, env = "STREAM_NAME")]
        stream: Option<String>,
        /// Partition hours from (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Partition hours before (RFC 3339).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this customer (user id, or anon:<anonymous id>).
        #[arg(long)]
        customer: Option<String>,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Rebuild profiles deleted beforehand (re-applies each event once, publishes nothing).
        #[arg(long)]
        rebuild: bool,
        /// The de-duplication window (DedupWindowDays): a plain replay leaves older objects out.
        #[arg(long, default_value_t = 35)]
        dedup_window_days: i64,
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove every archived event of an erased customer (objects from `from` on) now, in one
    /// pass; the template's `archive-eraser` function does the same on its own, hourly.
    Erase {
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Subcommand)]
enum StreamFailureAction {
    /// Each failed batch: shard, sequence range, records, why Lambda gave up.
    List,
    /// Put back the records of every failed batch that were not applied.
    Redrive {
        /// Say what would be put back, put nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum EmailFailureAction {
    /// Each message: the event's type and id, or why it holds none.
    List,
    /// Publish the events on the bus again.
    Redrive {
        /// The bus (default: $EVENT_BUS_NAME).
        #[arg(long, env = "EVENT_BUS_NAME")]
        bus: Option<String>,
        /// Say what would be published, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Each dead letter: time, stage, origin, reason.
    List,
    /// Put the selected records back on the stream, oldest first, in order per customer.
    Redrive {
        /// The stream (default: $STREAM_NAME).
        #[arg(long, env = "STREAM_NAME")]
        stream: Option<String>,
        /// Say what would go back, put nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the selected dead letters for good.
    Purge,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Check the files as the functions will (exit 1 with every problem).
    Validate,
    /// What the files change against the version in force.
    Diff,
    /// Publish the files as the next version (nothing when they are what is in force).
    Publish {
        #[arg(long, default_value = "published from the repository")]
        note: String,
    },
    /// Every published version.
    Versions,
    /// Put version N's document in force again (as a new version).
    Rollback { version: u64 },
}

fn parse_parameter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected Name=Value, got {s:?}"))
}

fn main() -> std::process::ExitCode {
    if std::env::var_os("RUST_LOG").is_none() {
        // Before any thread exists: quiet logs under the progress bar unless asked.
        std::env::set_var("RUST_LOG", "warn");
    }
    ember_aws::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ember-local: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ember-local: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Generate {
            users,
            seed,
            days,
            start,
            invalid,
            lapsed,
            out,
        } => {
            let (events, personas) = generate(&GenerateOptions {
                users,
                seed,
                start,
                days,
                invalid,
                lapsed,
            });
            let text = to_jsonl(&events);
            if out == "-" {
                print!("{text}");
            } else {
                if let Some(dir) = std::path::Path::new(&out).parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&out, text)?;
                let mut counts = std::collections::BTreeMap::new();
                for (_, p) in &personas {
                    *counts.entry(p.as_str()).or_insert(0) += 1;
                }
                eprintln!(
                    "wrote {} events for {users} users to {out} (personas: {counts:?})",
                    events.len()
                );
            }
            Ok(())
        }
        Command::Replay {
            input,
            template,
            emails,
            sweep_every_mins,
            tail_hours,
            concurrency,
            keep,
            no_progress,
            publish,
            then,
            respond_base_rate,
            respond_uplift,
        } => {
            let events = ember_local::replay::read_jsonl(&input)?;
            let first = ember_local::replay::first_event_time(&events)
                .ok_or("the input has no events with occurred_at")?;
            let sdk = ember_aws::sdk_config().await;
            let clock = Arc::new(SimClock::starting_at(first));
            // Event time runs far faster than the wall clock here, so a published
            // configuration is read on every invocation rather than once a wall minute.
            let metrics = ember_core::memory::MemoryMetrics::default();
            let opts = PipelineOptions {
                template,
                parameters: [("ConfigTtlSeconds".to_owned(), "0".to_owned())].into(),
                metrics: Some(metrics.clone()),
                ..Default::default()
            };
            eprintln!(
                "provisioning template resources on {} …",
                std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".into())
            );
            let pipeline = Pipeline::start(&opts, &sdk, clock).await?;
            eprintln!(
                "pipeline up: HTTP API on {} (stage {})",
                pipeline.base_url(),
                pipeline
                    .stack
                    .ctx
                    .parameters
                    .get("Stage")
                    .map(String::as_str)
                    .unwrap_or("?")
            );
            let ropts = ReplayOptions {
                sweep_every: chrono::Duration::minutes(sweep_every_mins.max(1)),
                tail: chrono::Duration::hours(tail_hours.max(0)),
                concurrency,
                progress: !no_progress,
                responder: respond_base_rate.map(|base_rate| Responder {
                    base_rate,
                    uplift: respond_uplift,
                    ..Responder::default()
                }),
                ..Default::default()
            };
            let result = replay(&pipeline, events, &ropts, Some(&emails)).await;
            let act_two = match (&result, &publish) {
                (Ok(first), Some(changes)) => Some(
                    publish_and_replay(&pipeline, first, changes, then.as_deref(), &ropts, &emails)
                        .await,
                ),
                _ => None,
            };
            pipeline.stop(!keep).await;
            let summary = result?;
            println!("\n{summary}");
            if !summary.reports.is_empty() {
                println!("\ncampaign reports (what each campaign earned)");
                print!("{}", ember_local::report::table(&summary.reports));
            }
            if let Some(report) = act_two {
                print!("{}", report?);
            }
            let report = MetricsReport::from_documents(&metrics.documents());
            let metrics_file = emails
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("metrics.json");
            std::fs::write(
                &metrics_file,
                serde_json::to_string_pretty(&report.to_json())?,
            )?;
            println!("\n{report}");
            println!(
                "emails written to    {}",
                emails.join("index.html").display()
            );
            println!("metrics written to   {}", metrics_file.display());
            let reports = emails
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("report");
            println!(
                "reports written to   {}",
                reports.join("index.html").display()
            );
            Ok(())
        }
        Command::Config {
            action,
            root,
            ledger_table,
            event_bus,
        } => config_command(action, &root, ledger_table, event_bus).await,
        Command::DeadLetters {
            action,
            queue_url,
            stage,
            reason,
        } => {
            let queue_url = queue_url.ok_or("--queue-url or DEAD_LETTER_QUEUE_URL is needed")?;
            let action = match action {
                DeadLetterAction::List => dead_letters::Action::List,
                DeadLetterAction::Purge => dead_letters::Action::Purge,
                DeadLetterAction::Redrive { stream, dry_run } => dead_letters::Action::Redrive {
                    stream: stream.ok_or("--stream or STREAM_NAME is needed")?,
                    dry_run,
                },
            };
            let selection = ember_aws::redrive::Selection { stage, reason };
            let sdk = ember_aws::sdk_config().await;
            dead_letters::run(&sdk, &queue_url, action, &selection).await
        }
        Command::EmailFailures { action, queue_url } => {
            let queue_url = queue_url.ok_or("--queue-url or EMAIL_FAILURE_QUEUE_URL is needed")?;
            let action = match action {
                EmailFailureAction::List => dead_letters::EventAction::List,
                EmailFailureAction::Redrive { bus, dry_run } => {
                    dead_letters::EventAction::Redrive {
                        bus: bus.ok_or("--bus or EVENT_BUS_NAME is needed")?,
                        dry_run,
                    }
                }
            };
            let sdk = ember_aws::sdk_config().await;
            dead_letters::run_events(&sdk, &queue_url, action).await
        }
        Command::StreamFailures {
            action,
            queue_url,
            stream,
            profiles_table,
            ledger_table,
            archive_bucket,
            dedup_window_days,
        } => {
            let queue_url = queue_url.ok_or("--queue-url or STREAM_FAILURE_QUEUE_URL is needed")?;
            let sdk = ember_aws::sdk_config().await;
            let target = match action {
                StreamFailureAction::List => None,
                StreamFailureAction::Redrive { dry_run } => Some(dead_letters::StreamTarget {
                    stream: stream.ok_or("--stream or STREAM_NAME is needed")?,
                    profiles_table: profiles_table
                        .ok_or("--profiles-table or PROFILES_TABLE is needed")?,
                    ledger_table: ledger_table.ok_or("--ledger-table or LEDGER_TABLE is needed")?,
                    archive: archive_bucket.map(|b| (b, dedup_window_days)),
                    dry_run,
                }),
            };
            dead_letters::run_stream_failures(&sdk, &queue_url, target).await
        }
        Command::Archive {
            action,
            bucket,
            ledger_table,
        } => {
            let bucket = bucket.ok_or("--bucket or ARCHIVE_BUCKET is needed")?;
            let sdk = ember_aws::sdk_config().await;
            let archive = ember_aws::archive::Archive::from_conf(&sdk, bucket);
            let ledger =
                || -> Result<ember_aws::ledger::DynamoLedger, Box<dyn std::error::Error>> {
                    let table = ledger_table
                        .clone()
                        .ok_or("--ledger-table or LEDGER_TABLE is needed")?;
                    Ok(ember_aws::ledger::DynamoLedger::from_conf(&sdk, table))
                };
            match action {
                ArchiveAction::Count { from, to } => {
                    let (objects, events) = ember_aws::archive::count(&archive, from, to).await?;
                    println!("{events} events in {objects} objects");
                }
                ArchiveAction::Replay {
                    stream,
                    from,
                    to,
                    customer,
                    types,
                    rebuild,
                    dedup_window_days,
                    dry_run,
                } => {
                    let stream = stream.ok_or("--stream or STREAM_NAME is needed")?;
                    let stream = ember_aws::kinesis::KinesisEventStream::from_conf(&sdk, stream);
                    let filter = ember_aws::archive::ReplayFilter {
                        from,
                        to,
                        customer,
                        types,
                        rebuild,
                        dry_run,
                        dedup_window: Some(chrono::Duration::days(dedup_window_days)),
                    };
                    let report =
                        ember_aws::archive::replay(&archive, &stream, &ledger()?, &filter).await?;
                    let verb = if dry_run {
                        "would put back"
                    } else {
                        "put back"
                    };
                    for why in &report.failed {
                        println!("{:<15} {}", "not put back", redact_addresses(why));
                    }
                    println!(
                        "{} objects, {} events read, {} selected, {} {verb}",
                        report.objects, report.records, report.selected, report.put
                    );
                }
                ArchiveAction::Erase { from } => {
                    let report = ember_aws::archive::erase(&archive, &ledger()?, from).await?;
                    println!(
                        "{} objects read, {} rewritten, {} events removed",
                        report.objects, report.rewritten, report.removed
                    );
                }
            }
            Ok(())
        }
        Command::Serve {
            template,
            listen,
            api_key,
            admin_key,
            parameters,
            env_file,
        } => {
            let sdk = ember_aws::sdk_config().await;
            let clock = Arc::new(SimClock::wall());
            let opts = PipelineOptions {
                template,
                listen,
                api_key: api_key.clone(),
                admin_key,
                parameters: parameters.into_iter().collect(),
                ..Default::default()
            };
            let pipeline = Pipeline::start(&opts, &sdk, clock.clone()).await?;
            pipeline.write_env_file(&env_file)?;
            println!(
                "Ember API on {} (x-api-key: {api_key}); Ctrl-C stops and deletes the resources",
                pipeline.base_url()
            );
            println!(
                "functions' environment: {} (for cargo lambda watch --env-file)",
                env_file.display()
            );
            let period = pipeline.schedule_period().unwrap_or(60);
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(period));
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                tokio::select! {
                    _ = ticker.tick() => { pipeline.fire_schedules(clock.now()).await?; }
                    _ = tokio::signal::ctrl_c() => break,
                    _ = terminate.recv() => break,
                }
            }
            pipeline.stop(true).await;
            Ok(())
        }
    }
}

async fn config_command(
    action: ConfigAction,
    root: &std::path::Path,
    ledger_table: Option<String>,
    event_bus: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let local = config_files::load(root)?;
    if let ConfigAction::Validate = action {
        // Publishing checks the files itself (the admin API's path); only this shows them.
        let problems = config_files::validate(&local);
        if problems.is_empty() {
            println!("configuration files are valid");
            return Ok(());
        }
        return Err(format!(
            "{} problem(s):\n{}",
            problems.len(),
            config_files::report(&problems)
        )
        .into());
    }
    let sdk = ember_aws::sdk_config().await;
    let table = ledger_table.ok_or("set --ledger-table or LEDGER_TABLE")?;
    let store = ConfigStore::new(Arc::new(DynamoLedger::from_conf(&sdk, table)));
    let bus = || -> Result<EventBridgeBus, String> {
        let name = event_bus
            .clone()
            .ok_or("set --event-bus or EVENT_BUS_NAME")?;
        Ok(EventBridgeBus::new(
            aws_sdk_eventbridge::Client::new(&sdk),
            name,
        ))
    };
    match action {
        ConfigAction::Validate => Ok(()),
        ConfigAction::Diff => {
            let base = ember_api::admin::current(&store).await?;
            let lines = config_files::diff(&base.doc, &local);
            println!("version in force: {}", base.version);
            if lines.is_empty() {
                println!("the files are what is in force");
            }
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
        ConfigAction::Publish { note } => {
            let (version, changed) = config_files::publish(&store, &bus()?, &local, &note).await?;
            println!("version in force: {version} ({} change(s))", changed.len());
            for line in changed {
                println!("{line}");
            }
            Ok(())
        }
        ConfigAction::Versions => {
            let current = store.current_version().await?;
            for v in store.versions().await?.iter().rev() {
                let mark = if v.version == current { "*" } else { " " };
                println!(
                    "{mark} {:>4}  {}  {}",
                    v.version,
                    v.published_at.to_rfc3339(),
                    v.note
                );
            }
            Ok(())
        }
        ConfigAction::Rollback { version } => {
            let doc = store
                .get(version)
                .await?
                .ok_or_else(|| format!("version {version} was never published"))?
                .doc;
            let note = format!("rollback to {version}");
            let (now, _) = config_files::publish(&store, &bus()?, &doc, &note).await?;
            println!("version in force: {now} (the document of version {version})");
            Ok(())
        }
    }
}

/// Publishes the changes in `changes` through the pipeline's admin API, replays `then`, and
/// reports the versions published and the emails sent after them.
async fn publish_and_replay(
    pipeline: &Pipeline,
    before: &ember_local::ReplaySummary,
    changes: &std::path::Path,
    then: Option<&std::path::Path>,
    ropts: &ReplayOptions,
    emails: &std::path::Path,
) -> Result<String, Box<dyn std::error::Error>> {
    use std::fmt::Write as _;
    let mut out = String::from("\nconfiguration published while the pipeline runs:\n");
    let admin_key = PipelineOptions::default().admin_key;
    for change in config_files::read_changes(changes)? {
        let (status, body) = config_files::admin_call(
            &pipeline.base_url(),
            &admin_key,
            &change.method,
            &change.path,
            change.body.as_ref(),
        )
        .await?;
        if status != 200 {
            return Err(format!("{} {}: {status} {body}", change.method, change.path).into());
        }
        let _ = writeln!(
            out,
            "  {} {:<40} -> version {}",
            change.method, change.path, body["version"]
        );
    }
    let Some(then) = then else {
        return Ok(out);
    };
    let events = ember_local::replay::read_jsonl(then)?;
    let after = replay(pipeline, events, ropts, Some(emails)).await?;
    let mut new: Vec<_> = after
        .emails
        .iter()
        .filter(|e| !before.emails.iter().any(|b| b.id == e.id))
        .collect();
    new.sort_by(|a, b| a.to.cmp(&b.to));
    let _ = writeln!(
        out,
        "emails after it      {} (from {}):",
        new.len(),
        then.display()
    );
    for e in new {
        let _ = writeln!(out, "  {:<28} {}", e.to.join(", "), e.subject);
    }
    Ok(out)
}
