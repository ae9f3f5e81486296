//! Replays a JSONL file of events through the local HTTP API on the simulated clock, then
//! reports what the pipeline did.
//!
//! Events are posted in `occurred_at` order, window by window (`sweep_every` of event time):
//! inside a window, each person's events go in order, as a client SDK flushes them: events
//! less than [`FLUSH_GAP`] apart in one `/v1/events/batch` request, requests in order (so a
//! cart precedes its purchase on the stream; a refused batch is re-posted event by event to
//! `/v1/events` so each refusal is reported), different people in parallel. Between windows the pipeline is
//! drained, the clock moves to the next tick, and the scheduled functions (the sweeper) fire
//! at that simulated time. After the last event the clock keeps ticking for `tail` so due
//! timers (cart abandonment) fire.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::activity::{quantile, Activity};
use crate::error::{sdk, LocalError};
use crate::mail::{self, SentEmail};
use crate::pipeline::Pipeline;
use crate::respond::{Assignment, Responder};
use ember_core::report::CampaignReport;

/// Events of one person closer than this (event time) go in one batch request.
pub const FLUSH_GAP: chrono::Duration = chrono::Duration::seconds(10);

/// A person's events (in order), split where `FLUSH_GAP` or more of event time passes.
fn flushes<'e>(events: &[&'e Value]) -> Vec<Vec<&'e Value>> {
    let mut out: Vec<Vec<&Value>> = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for e in events {
        let at = occurred_at(e);
        let gap = match (last, at) {
            (Some(l), Some(a)) => a - l >= FLUSH_GAP,
            _ => false,
        };
        if gap || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(batch) = out.last_mut() {
            batch.push(e);
        }
        last = at.or(last);
    }
    out
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Event-time window between drains and schedule ticks.
    pub sweep_every: chrono::Duration,
    /// Event time simulated after the last event.
    pub tail: chrono::Duration,
    /// People posted in parallel.
    pub concurrency: usize,
    pub progress: bool,
    /// Upper bound for one drain.
    pub drain_timeout: Duration,
    /// Simulated customers answering the campaigns they are assigned to (`None`: nobody
    /// answers; the input file is all there is).
    pub responder: Option<Responder>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            sweep_every: chrono::Duration::minutes(30),
            tail: chrono::Duration::hours(24),
            concurrency: 8,
            progress: true,
            drain_timeout: Duration::from_secs(60),
            responder: None,
        }
    }
}

/// One event the API refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub event_id: String,
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    pub events: usize,
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
    pub first_event: Option<DateTime<Utc>>,
    pub last_event: Option<DateTime<Utc>>,
    pub simulated_end: Option<DateTime<Utc>>,
    pub profiles: usize,
    /// Bus events by `detail-type` (and segment for segment transitions).
    pub bus_events: BTreeMap<String, u64>,
    pub emails: Vec<SentEmail>,
    /// Purchases the simulated customers made in answer to campaigns.
    pub responses: usize,
    /// How the simulated customers answered (the true effect the report should find).
    pub responder: Option<Responder>,
    /// Every configured campaign's report at the end of the run.
    pub reports: Vec<CampaignReport>,
    /// Messages waiting in each queue of the template, by logical id.
    pub queues: BTreeMap<String, u64>,
    /// Events in the archive bucket when the run ended.
    pub archived: Option<usize>,
    pub kinesis_records: u64,
    /// Of those, `campaign_assigned` records written by the email function.
    pub kinesis_assignments: u64,
    pub kinesis_batches: u64,
    pub kinesis_retries: u64,
    pub kinesis_bisections: u64,
    pub kinesis_on_failure: u64,
    pub rule_deliveries: u64,
    /// Scheduled invocations by function.
    pub scheduled_runs: BTreeMap<String, u64>,
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub latency_samples: usize,
    pub wall: Duration,
    pub drained: bool,
}

impl ReplaySummary {
    pub fn segment_transitions(&self) -> u64 {
        self.bus_events
            .iter()
            .filter(|(k, _)| k.starts_with("SegmentEntered") || k.starts_with("SegmentExited"))
            .map(|(_, v)| v)
            .sum()
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |d: Option<DateTime<Utc>>| {
            d.map_or("-".to_owned(), |d| d.format("%Y-%m-%d %H:%M").to_string())
        };
        writeln!(
            f,
            "events posted        {} ({} accepted, {} refused by the API)",
            self.events,
            self.accepted,
            self.rejected.len()
        )?;
        writeln!(
            f,
            "event time           {} .. {} (clock ran to {})",
            t(self.first_event),
            t(self.last_event),
            t(self.simulated_end)
        )?;
        writeln!(
            f,
            "stream               {} records ({} campaign assignments) in {} batches ({} retries, {} bisections, {} sent to on-failure)",
            self.kinesis_records, self.kinesis_assignments, self.kinesis_batches, self.kinesis_retries, self.kinesis_bisections, self.kinesis_on_failure
        )?;
        if let Some(n) = self.archived {
            writeln!(f, "archived on S3       {n} events (raw, for replay)")?;
        }
        writeln!(f, "profiles written     {}", self.profiles)?;
        writeln!(f, "segment transitions  {}", self.segment_transitions())?;
        for (k, v) in &self.bus_events {
            writeln!(f, "  {k:<38} {v}")?;
        }
        writeln!(f, "emails sent          {}", self.emails.len())?;
        if self.responses > 0 {
            writeln!(
                f,
                "answers to campaigns {} purchases by simulated customers",
                self.responses
            )?;
        }
        if let Some(r) = &self.responder {
            writeln!(
                f,
                "  true effect: {:.0} % buy within the window anyway, {:.0} % of those emailed (uplift {:+.0} pp)",
                r.base_rate * 100.0,
                (r.base_rate + r.uplift) * 100.0,
                r.uplift * 100.0
            )?;
        }
        let dead = self.queues.get("DeadLetterQueue").copied().unwrap_or(0);
        writeln!(f, "dead letters         {dead}")?;
        for (k, v) in self
            .queues
            .iter()
            .filter(|(k, _)| k.as_str() != "DeadLetterQueue")
        {
            writeln!(f, "  {k:<38} {v}")?;
        }
        let runs: Vec<String> = self
            .scheduled_runs
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "scheduled runs       {} ({})",
            self.scheduled_runs.values().sum::<u64>(),
            runs.join(", ")
        )?;
        match (self.latency_p50_ms, self.latency_p99_ms) {
            (Some(p50), Some(p99)) => writeln!(
                f,
                "ingest -> email      p50 {p50} ms, p99 {p99} ms (wall clock, post -> email function done, {} bus events)",
                self.latency_samples
            )?,
            _ => writeln!(f, "ingest -> email      no samples")?,
        }
        for r in self.rejected.iter().take(5) {
            writeln!(
                f,
                "refused {}: HTTP {} {}",
                r.event_id,
                r.status,
                r.body.chars().take(160).collect::<String>()
            )?;
        }
        write!(
            f,
            "wall time            {:.1} s{}",
            self.wall.as_secs_f64(),
            if self.drained {
                ""
            } else {
                " (pipeline did not drain in time)"
            }
        )
    }
}

/// Reads a JSONL file (blank lines and `#` comments skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>, LocalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LocalError::io(format!("reading {}", path.display()), e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| LocalError::Input {
            what: format!("{}:{}", path.display(), i + 1),
            reason: e.to_string(),
        })?;
        out.push(v);
    }
    Ok(out)
}

fn occurred_at(e: &Value) -> Option<DateTime<Utc>> {
    e.get("occurred_at")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The earliest `occurred_at` of `events`: where a simulated clock for their replay starts
/// (it never goes back, so a later start would skip the schedules of earlier events).
pub fn first_event_time(events: &[Value]) -> Option<DateTime<Utc>> {
    events.iter().filter_map(occurred_at).min()
}

/// Which person an event belongs to: the user id, or the user an anonymous id is later
/// identified as, or the anonymous id.
fn person_key(e: &Value, anon_to_user: &HashMap<String, String>) -> String {
    if let Some(u) = e.get("user_id").and_then(Value::as_str) {
        return u.to_owned();
    }
    if let Some(a) = e.get("anonymous_id").and_then(Value::as_str) {
        return anon_to_user
            .get(a)
            .cloned()
            .unwrap_or_else(|| format!("anon:{a}"));
    }
    String::new()
}

/// The profile an event lands in (`ember_core`'s rule: user id, else `anon:<id>`).
fn profile_key(e: &Value) -> Option<String> {
    match (
        e.get("user_id").and_then(Value::as_str),
        e.get("anonymous_id").and_then(Value::as_str),
    ) {
        (Some(u), _) if !u.is_empty() => Some(u.to_owned()),
        (_, Some(a)) if !a.is_empty() => Some(format!("{}{a}", ember_core::event::ANON_PREFIX)),
        _ => None,
    }
}

/// An event id and what posting it returned (status and body, or the transport error).
type Posted = (String, Result<(u16, String), String>);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new trace for one request, as a traced client sends it (sampled).
fn new_traceparent() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{id}-{span}-01")
}

async fn post(
    client: &HttpClient,
    url: &str,
    api_key: &str,
    event: &Value,
    trace: &str,
) -> Result<(u16, String), String> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("x-api-key", api_key)
        .header("traceparent", trace)
        .body(Full::new(Bytes::from(event.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Replays `events` through `p` and summarises; writes the sent emails into `emails_dir`.
pub async fn replay(
    p: &Pipeline,
    mut events: Vec<Value>,
    opts: &ReplayOptions,
    emails_dir: Option<&Path>,
) -> Result<ReplaySummary, LocalError> {
    let started = Instant::now();
    events.sort_by_key(|e| occurred_at(e).unwrap_or(DateTime::<Utc>::MIN_UTC));
    let mut summary = ReplaySummary {
        events: events.len(),
        responder: opts.responder,
        ..Default::default()
    };
    summary.first_event = events.iter().find_map(occurred_at);
    summary.last_event = events.iter().rev().find_map(occurred_at);
    let anon_to_user: HashMap<String, String> = events
        .iter()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("identify"))
        .filter_map(|e| {
            let user = e
                .get("user_id")
                .or_else(|| e.pointer("/payload/user_id"))?
                .as_str()?;
            let anon = e
                .get("anonymous_id")
                .or_else(|| e.pointer("/payload/anonymous_id"))?
                .as_str()?;
            Some((anon.to_owned(), user.to_owned()))
        })
        .collect();

    let bar = if opts.progress {
        ProgressBar::new(events.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/v1/events", p.base_url());
    let batch_url = format!("{}/v1/events/batch", p.base_url());
    let step = opts.sweep_every.max(chrono::Duration::seconds(
        p.schedule_period().unwrap_or(60) as i64
    ));
    let align = |t: DateTime<Utc>| {
        let s = step.num_seconds().max(1);
        DateTime::<Utc>::from_timestamp(t.timestamp().div_euclid(s) * s, 0).unwrap_or(t)
    };
    let mut rejected = Vec::new();
    let mut accepted = 0usize;
    let mut i = 0;
    let mut drained = true;
    let mut next_tick = summary.first_event.map(|t| align(t) + step);
    let mut answered = std::collections::HashSet::new();
    while i < events.len() {
        // The window: every event before the next tick.
        let mut j = i;
        while j < events.len()
            && match (occurred_at(&events[j]), next_tick) {
                (Some(t), Some(tick)) => t < tick,
                _ => true,
            }
        {
            j += 1;
        }
        if j == i {
            // The next event is at/after the tick: drain, move the clock, fire schedules.
            if let (Some(t), Some(tick)) = (occurred_at(&events[i]), next_tick) {
                drained &= p.drain(opts.drain_timeout).await;
                // The clock never goes back (a second replay of the same file runs its
                // schedules at the time reached so far, as real schedules would).
                let at = align(t).max(tick);
                p.clock.advance_to(at);
                p.fire_schedules(p.clock.now()).await?;
                if let Some(r) = &opts.responder {
                    // Answers stay inside the input's time range: the run's clock ends
                    // where the input's events do, as it would without them.
                    let answers: Vec<Value> = answer(p, r, &mut answered)
                        .into_iter()
                        .filter(|e| occurred_at(e) <= summary.last_event)
                        .collect();
                    summary.responses += answers.len();
                    summary.events += answers.len();
                    bar.inc_length(answers.len() as u64);
                    for e in answers {
                        let t = occurred_at(&e);
                        let at = i + events[i..].partition_point(|x| occurred_at(x) <= t);
                        events.insert(at, e);
                    }
                }
                next_tick = Some(at + step);
                bar.set_message(format!("event time {}", at.format("%a %d %b %H:%M")));
            }
            continue;
        }
        let window = &events[i..j];
        if let Some(max) = window.iter().filter_map(occurred_at).max() {
            p.clock.advance_to(max);
        }
        let mut people: Vec<(String, Vec<&Value>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for e in window {
            let k = person_key(e, &anon_to_user);
            let slot = *index.entry(k.clone()).or_insert_with(|| {
                people.push((k, Vec::new()));
                people.len() - 1
            });
            people[slot].1.push(e);
        }
        let results: Vec<Vec<Posted>> = stream::iter(people)
            .map(|(_, evs)| {
                let client = client.clone();
                let url = url.clone();
                let batch_url = batch_url.clone();
                let bar = bar.clone();
                let activity = &p.activity;
                let key = p.api_key.clone();
                async move {
                    let mark = |e: &Value, trace: &str| {
                        let now = Instant::now();
                        if let Some(id) = e.get("event_id").and_then(Value::as_str) {
                            if let Ok(mut m) = activity.posted_at.lock() {
                                m.insert(id.to_owned(), now);
                            }
                            if let Ok(mut m) = activity.posted_trace.lock() {
                                m.insert(id.to_owned(), trace.to_owned());
                            }
                        }
                        if let Some(k) = profile_key(e) {
                            if let Ok(mut m) = activity.posted_by_profile.lock() {
                                m.insert(k, now);
                            }
                        }
                    };
                    let id_of = |e: &Value| {
                        e.get("event_id")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_owned()
                    };
                    // A person's events go out as a client SDK flushes them: the events
                    // within FLUSH_GAP of each other in one batch request, batches in order.
                    // The batch endpoint is all-or-nothing, so a refused batch is re-sent
                    // event by event to tell exactly which event was refused and why.
                    let mut out = Vec::new();
                    for flush in flushes(&evs) {
                        if flush.len() > 1 {
                            let trace = new_traceparent();
                            flush.iter().for_each(|e| mark(e, &trace));
                            let body = serde_json::json!({ "events": flush });
                            if let Ok((status, text)) =
                                post(&client, &batch_url, &key, &body, &trace).await
                            {
                                if (200..300).contains(&status) {
                                    bar.inc(flush.len() as u64);
                                    out.extend(
                                        flush
                                            .iter()
                                            .map(|e| (id_of(e), Ok((status, text.clone())))),
                                    );
                                    continue;
                                }
                            }
                        }
                        for e in flush {
                            let trace = new_traceparent();
                            mark(e, &trace);
                            out.push((id_of(e), post(&client, &url, &key, e, &trace).await));
                            bar.inc(1);
                        }
                    }
                    out
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        for (id, r) in results.into_iter().flatten() {
            match r {
                Ok((s, _)) if (200..300).contains(&s) => accepted += 1,
                Ok((status, body)) => rejected.push(Rejected {
                    event_id: id,
                    status,
                    body,
                }),
                Err(e) => return Err(LocalError::pipeline("replay post", format!("{id}: {e}"))),
            }
        }
        i = j;
    }
    // Tail: keep the clock ticking so due timers fire.
    if let (Some(last), Some(mut tick)) = (summary.last_event, next_tick) {
        let end = last + opts.tail;
        while tick <= end {
            drained &= p.drain(opts.drain_timeout).await;
            p.clock.advance_to(tick);
            p.fire_schedules(p.clock.now()).await?;
            bar.set_message(format!("event time {}", tick.format("%a %d %b %H:%M")));
            tick += step;
        }
    }
    drained &= p.drain(opts.drain_timeout).await;
    bar.finish_with_message("replayed");
    summary.simulated_end = Some(p.clock.now());
    summary.accepted = accepted;
    summary.rejected = rejected;
    summary.drained = drained;
    collect(p, &mut summary).await?;
    if let Some(dir) = emails_dir {
        mail::write_emails(dir, &summary.emails)?;
        let reports = dir.parent().unwrap_or(Path::new(".")).join("report");
        crate::report::write_html(&reports, &summary.reports)?;
    }
    summary.wall = started.elapsed();
    Ok(summary)
}

/// Fills the counters, queue depths, profile count, bus events and sent emails.
pub async fn collect(p: &Pipeline, s: &mut ReplaySummary) -> Result<(), LocalError> {
    let a = &p.activity;
    s.kinesis_records = Activity::get(&a.kinesis_records);
    s.kinesis_assignments = Activity::get(&a.kinesis_assignments);
    s.kinesis_batches = Activity::get(&a.kinesis_batches);
    s.kinesis_retries = Activity::get(&a.kinesis_batch_retries);
    s.kinesis_bisections = Activity::get(&a.kinesis_bisections);
    s.kinesis_on_failure = Activity::get(&a.kinesis_on_failure);
    s.rule_deliveries = Activity::get(&a.rule_events);
    s.scheduled_runs = a
        .scheduled_runs
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let lat = a
        .ingest_to_email_ms
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    s.latency_samples = lat.len();
    s.latency_p50_ms = quantile(&lat, 0.5);
    s.latency_p99_ms = quantile(&lat, 0.99);
    if let Ok(events) = p.bus_events.lock() {
        for e in events.iter() {
            let dt = e.get("detail-type").and_then(Value::as_str).unwrap_or("?");
            let key = match e.pointer("/detail/segment").and_then(Value::as_str) {
                Some(seg) => format!("{dt} {seg}"),
                None => dt.to_owned(),
            };
            *s.bus_events.entry(key).or_insert(0) += 1;
        }
    }
    for (id, phys) in p.stack.physical_of_kind("AWS::SQS::Queue") {
        let Some(url) = &phys.url else { continue };
        let out = p
            .stack
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| LocalError::pipeline("queue depth", sdk(e)))?;
        let n = out
            .attributes()
            .and_then(|m| {
                m.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        s.queues.insert(id.clone(), n);
    }
    if let Some(table) = p.name_of("ProfilesTable") {
        s.profiles = count_items(p, &table).await?;
    }
    if let Some(archive) = p.archive() {
        let (_, events) = ember_aws::archive::count(&archive, None, None)
            .await
            .map_err(|e| LocalError::pipeline("archive", e))?;
        s.archived = Some(events);
    }
    if let Some(endpoint) = mail::ses_endpoint() {
        s.emails = mail::from_sender(mail::sent_emails(&endpoint).await?, p.sender_address());
    }
    s.reports = crate::report::collect(p).await?;
    Ok(())
}

/// The purchases answering the assignments seen since the last call (each assignment once,
/// whatever its redeliveries), none before the clock.
fn answer(
    p: &Pipeline,
    r: &Responder,
    answered: &mut std::collections::HashSet<String>,
) -> Vec<Value> {
    let seen = p
        .activity
        .assignments
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    seen.iter()
        .filter_map(Assignment::from_event)
        .filter(|a| answered.insert(a.event_id.clone()))
        .filter_map(|a| r.respond(&a))
        .collect()
}

async fn count_items(p: &Pipeline, table: &str) -> Result<usize, LocalError> {
    let mut total = 0usize;
    let mut start = None;
    loop {
        let out = p
            .stack
            .clients
            .dynamodb
            .scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| LocalError::pipeline("profile count", sdk(e)))?;
        total += out.count() as usize;
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(total);
        }
    }
}
