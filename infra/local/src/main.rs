//! `ember-local`: see the library docs. Subcommands: `generate`, `replay`, `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use ember_local::clock::SimClock;
use ember_local::generate::{generate, to_jsonl, GenerateOptions};
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
        } => {
            let events = ember_local::replay::read_jsonl(&input)?;
            let first = ember_local::replay::first_event_time(&events)
                .ok_or("the input has no events with occurred_at")?;
            let sdk = ember_aws::sdk_config().await;
            let clock = Arc::new(SimClock::starting_at(first));
            let opts = PipelineOptions {
                template,
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
                ..Default::default()
            };
            let result = replay(&pipeline, events, &ropts, Some(&emails)).await;
            pipeline.stop(!keep).await;
            let summary = result?;
            println!("\n{summary}");
            println!(
                "emails written to    {}",
                emails.join("index.html").display()
            );
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
