//! Cold start of each function's release `bootstrap`: the time from spawning the process to
//! its first `GET /2018-06-01/runtime/invocation/next` on a local Lambda Runtime API, i.e.
//! after `main` has read its configuration, loaded the SDK config and built every client
//! (what Lambda bills as the init phase, minus the sandbox and download).
//!
//! Which functions and which environment come from `template.yaml` (`Metadata.BuildProperties`
//! binary, `Environment.Variables` resolved with placeholder resource names; no AWS call is
//! made during init, so the names need not exist). Usage:
//!
//! ```sh
//! cargo build --release -p ember-api -p ember-enrich -p ember-email
//! cargo run --release -p ember-benches --bin ember-cold-start -- [--runs 20] [--dir target/release]
//! ```
//!
//! `--dir` may also be cargo-lambda's output (`target/lambda`, one `<binary>/bootstrap` each);
//! arm64 binaries need an arm64 host (or qemu-user) to run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ember_local::template::{resolve_string, Context, Names, Template};

/// Resource names for an account that does not exist: init only needs well-formed values.
struct Placeholders;

impl Names for Placeholders {
    fn reference(&self, logical_id: &str) -> Option<String> {
        Some(format!("ember-bench-{logical_id}"))
    }
    fn attribute(&self, logical_id: &str, attribute: &str) -> Option<String> {
        Some(match attribute {
            "Arn" => format!("arn:aws:service:us-east-1:000000000000:ember-bench-{logical_id}"),
            "QueueUrl" => {
                format!("https://sqs.us-east-1.amazonaws.com/000000000000/ember-bench-{logical_id}")
            }
            _ => format!("ember-bench-{logical_id}"),
        })
    }
}

struct Options {
    runs: usize,
    dir: PathBuf,
    template: PathBuf,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        runs: 20,
        dir: PathBuf::from("target/release"),
        template: PathBuf::from("template.yaml"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--dir" => o.dir = value()?.into(),
            "--template" => o.template = value()?.into(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

/// The function's environment as Lambda would set it (template variables + runtime ones).
fn environment(
    template: &Template,
    logical_id: &str,
    vars: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(String, String)>, String> {
    let mut overrides = BTreeMap::new();
    for (k, v) in [
        ("SenderAddress", "Ember <hello@shop.example>"),
        ("SenderIdentity", "shop.example"),
        ("PublicBaseUrl", "https://api.shop.example"),
        // SHA-256 of "ember-bench-key".
        (
            "ApiKeyHashes",
            "02a1356f758daf1c161f38e9a905fcf33e79f6bc4131f2f310f5790f1a2ee87b",
        ),
        (
            "AdminKeyHashes",
            "02a1356f758daf1c161f38e9a905fcf33e79f6bc4131f2f310f5790f1a2ee87b",
        ),
        ("PaymentsWebhookSecrets", "whsec_bench_1"),
        ("PollsWebhookSecrets", "polls_bench_1"),
        ("UnsubscribeSecrets", "unsubscribe-bench-secret-1"),
    ] {
        overrides.insert(k.to_owned(), v.to_owned());
    }
    let ctx = Context {
        parameters: template
            .parameter_values(&overrides)
            .map_err(|e| e.to_string())?,
        conditions: template.conditions.clone(),
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        stack_name: "ember-bench".into(),
    };
    let mut env = Vec::new();
    for (k, v) in vars {
        env.push((
            k.clone(),
            resolve_string(v, &ctx, &Placeholders).map_err(|e| e.to_string())?,
        ));
    }
    for (k, v) in [
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDBENCH"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_SESSION_TOKEN", "bench"),
        ("AWS_LAMBDA_FUNCTION_NAME", logical_id),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/ember-bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("RUST_LOG", "info"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    Ok(env)
}

/// One cold start: spawn, wait for the first `/invocation/next`, kill.
fn cold_start(bootstrap: &Path, env: &[(String, String)]) -> Result<Duration, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The runtime client's first request; its answer never comes (the process is killed).
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok()
                && line.contains("/runtime/invocation/next")
            {
                let _ = tx.send(Instant::now());
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
        }
    });
    let started = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bootstrap.display()))?;
    let ready = rx.recv_timeout(Duration::from_secs(20));
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match ready {
        Ok(at) => Ok(at - started),
        Err(_) => Err(format!(
            "{} never asked for an invocation (exit {:?}): {}",
            bootstrap.display(),
            exited,
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(600)
                .collect::<String>()
        )),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let template = Template::load(&o.template)?;
    println!(
        "| function | binary | size | cold start p50 | p90 | min | runs |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for f in template.functions()? {
        let nested = o.dir.join(&f.binary).join("bootstrap");
        let bootstrap = if nested.is_file() {
            nested
        } else {
            o.dir.join(&f.binary)
        };
        let size = std::fs::metadata(&bootstrap)
            .map_err(|e| format!("{}: {e} (build it first)", bootstrap.display()))?
            .len();
        let env = environment(&template, &f.logical_id, &f.environment)?;
        let mut times = Vec::with_capacity(o.runs);
        for _ in 0..o.runs {
            times.push(cold_start(&bootstrap, &env)?);
        }
        times.sort();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {} | `{}` | {:.1} MiB | {} | {} | {} | {} |",
            f.logical_id,
            f.binary,
            size as f64 / (1024.0 * 1024.0),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.9)),
            ms(times[0]),
            o.runs
        );
    }
    Ok(())
}
