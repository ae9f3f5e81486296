//! Business and latency metrics, written as CloudWatch Embedded Metric Format (EMF) log
//! lines: CloudWatch Logs turns each line into data points, with no API call and no agent.
//!
//! Every metric Ember writes is a constant of [`CATALOG`], with its unit and dimension keys;
//! the template's alarms and dashboard may reference only these (a test checks it). Each
//! data point carries the `Stage` dimension (the deployment's stage, so two stages in one
//! account never mix) and is also written with `Stage` alone, the total an alarm watches.
//! Dimension values are event types, reasons, segment and campaign names: never a person's
//! id or address.
//!
//! A handler collects one invocation's points in a [`Recorder`] and hands it to
//! [`Metrics::flush`], which writes one line per set of dimension values, holding every
//! metric written with them. The EMF writer
//! is these few lines rather than a crate: the ones that exist install a process-wide
//! recorder (hidden global state) or bring a metrics framework of their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// Namespace of Ember's CloudWatch metrics.
pub const NAMESPACE: &str = "Ember";

/// The dimension every data point carries.
pub const STAGE: &str = "Stage";

/// The unit of a metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// High resolution (1 s storage), for latency percentiles within the minute.
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric: its name, unit and dimension keys (besides `Stage`).
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub dimensions: &'static [&'static str],
    /// What it counts or measures, for the README and the dashboard.
    pub help: &'static str,
}

const fn count(
    name: &'static str,
    dimensions: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
        dimensions,
        help,
    }
}

/// Events the API put on the stream, by event type.
pub const EVENTS_ACCEPTED: Metric = count("EventsAccepted", &["Type"], "events accepted");
/// Events refused (API validation, scope, stream failure; enrich rejection), by type and
/// reason.
pub const EVENTS_REFUSED: Metric = count(
    "EventsRefused",
    &["Type", "Reason"],
    "events refused, by reason",
);
/// Values enrich refused (missing, malformed, or out of their plausible range, such as a
/// Scoville figure no pepper reaches), by event type and field.
pub const INVALID_VALUES: Metric = count(
    "InvalidValues",
    &["Type", "Field"],
    "values refused by enrich",
);
/// Records the stream delivered again (retries, replays, client re-sends), dropped.
pub const DUPLICATES_DROPPED: Metric = count("DuplicatesDropped", &[], "duplicates dropped");
/// Records or events sent to a dead-letter queue, by the phase that refused them
/// (`validation`, `enrich`, `profile`, `email`, …).
pub const DEAD_LETTERS: Metric = count("DeadLetters", &["Phase"], "dead letters, by phase");
/// Events enrich applied to profiles.
pub const EVENTS_APPLIED: Metric = count("EventsApplied", &[], "events applied to profiles");
/// Customers entering a segment, by segment.
pub const SEGMENT_ENTERED: Metric = count("SegmentEntered", &["Segment"], "segment entries");
/// Customers leaving a segment, by segment.
pub const SEGMENT_EXITED: Metric = count("SegmentExited", &["Segment"], "segment exits");
/// Emails SES accepted, by campaign.
pub const EMAILS_SENT: Metric = count("EmailsSent", &["Campaign"], "emails sent");
/// Customers of a campaign's holdout, recorded when the email would have gone, by campaign.
pub const EMAILS_HELD_OUT: Metric = count(
    "EmailsHeldOut",
    &["Campaign"],
    "emails held out (campaign holdouts)",
);
/// Emails not sent, by reason (consent, suppressed, caps, quiet hours deferred, …).
pub const EMAILS_SKIPPED: Metric = count("EmailsSkipped", &["Reason"], "emails skipped");
/// Sends whose outcome SES did not report (the send record says `unknown`).
pub const EMAIL_OUTCOME_UNKNOWN: Metric =
    count("EmailOutcomeUnknown", &[], "sends with an unknown outcome");
/// SES events fed back into profiles, by kind (delivery, bounce, complaint, open, click).
pub const SES_FEEDBACK: Metric = count("SesFeedback", &["Kind"], "SES feedback events");
/// From the stream's arrival time of an event to enrich applying it.
pub const INGEST_TO_ENRICH: Metric = Metric {
    name: "IngestToEnrichLatency",
    unit: Unit::Milliseconds,
    dimensions: &[],
    help: "ingest to profile update",
};
/// From the stream's arrival time of the event that caused a segment change to SES
/// accepting the email it triggered (immediate sends; timers wait on purpose).
pub const INGEST_TO_EMAIL: Metric = Metric {
    name: "IngestToEmailLatency",
    unit: Unit::Milliseconds,
    dimensions: &[],
    help: "ingest to email sent",
};

/// Every metric Ember writes.
pub const CATALOG: &[&Metric] = &[
    &EVENTS_ACCEPTED,
    &EVENTS_REFUSED,
    &INVALID_VALUES,
    &DUPLICATES_DROPPED,
    &DEAD_LETTERS,
    &EVENTS_APPLIED,
    &SEGMENT_ENTERED,
    &SEGMENT_EXITED,
    &EMAILS_SENT,
    &EMAILS_HELD_OUT,
    &EMAILS_SKIPPED,
    &EMAIL_OUTCOME_UNKNOWN,
    &SES_FEEDBACK,
    &INGEST_TO_ENRICH,
    &INGEST_TO_EMAIL,
];

/// Where EMF lines go: stdout in Lambda (its log stream), memory in tests and the local
/// runner.
pub trait MetricSink: Send + Sync {
    fn write(&self, line: String);
}

/// Lambda's log stream.
#[derive(Debug, Default)]
pub struct Stdout;

impl MetricSink for Stdout {
    fn write(&self, line: String) {
        println!("{line}");
    }
}

/// The stage dimension from `EMBER_STAGE` (`local` when unset), for `Settings::from_lookup`.
pub fn stage_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> String {
    lookup("EMBER_STAGE")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".into())
}

/// Most values one EMF line may carry for a metric.
const MAX_VALUES: usize = 100;

/// The metrics of one deployment stage, written to one sink.
#[derive(Clone)]
pub struct Metrics {
    sink: Arc<dyn MetricSink>,
    stage: Arc<str>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(sink: Arc<dyn MetricSink>, stage: impl Into<Arc<str>>) -> Metrics {
        Metrics {
            sink,
            stage: stage.into(),
        }
    }

    /// Lambda's log stream (stdout), for `stage`: what every function's `Deps::build` uses.
    pub fn stdout(stage: &str) -> Metrics {
        Metrics::new(Arc::new(Stdout), stage)
    }

    /// The same metrics written to `sink` instead (the local runner collects them).
    pub fn with_sink(&self, sink: Arc<dyn MetricSink>) -> Metrics {
        Metrics::new(sink, self.stage.clone())
    }

    /// Writes what `recorder` collected, stamped `at`.
    pub fn flush(&self, recorder: Recorder, at: DateTime<Utc>) {
        for line in recorder.lines(&self.stage, at.timestamp_millis()) {
            self.sink.write(line);
        }
    }
}

/// One invocation's data points: counts summed per metric and dimension values, values
/// (latencies) kept each.
#[derive(Default, Clone, PartialEq)]
pub struct Recorder {
    counts: BTreeMap<(&'static str, Vec<String>), (&'static Metric, f64)>,
    values: BTreeMap<&'static str, (&'static Metric, Vec<f64>)>,
}

/// `{DeadLetters[decode]: 3, IngestToEnrichLatency: 24 values}`: what a test failure or a
/// stats line needs, not the catalog entries.
impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for ((name, values), (_, n)) in &self.counts {
            map.entry(&format_args!("{name}{values:?}"), n);
        }
        for (name, (_, values)) in &self.values {
            map.entry(name, &format_args!("{} values", values.len()));
        }
        map.finish()
    }
}

impl Recorder {
    /// Adds `n` to `metric` with `dimension values` (one per key of the metric, in order).
    pub fn count(&mut self, metric: &'static Metric, values: &[&str], n: u64) {
        debug_assert_eq!(values.len(), metric.dimensions.len(), "{}", metric.name);
        if n == 0 {
            return;
        }
        let key = (
            metric.name,
            values.iter().map(|v| (*v).to_owned()).collect(),
        );
        self.counts.entry(key).or_insert((metric, 0.0)).1 += n as f64;
    }

    /// Records one value of `metric` (a latency).
    pub fn value(&mut self, metric: &'static Metric, value: f64) {
        self.values
            .entry(metric.name)
            .or_insert((metric, Vec::new()))
            .1
            .push(value);
    }

    /// Records the milliseconds from `since` to `now` (0 if `since` is later: clocks of
    /// two machines).
    pub fn latency(&mut self, metric: &'static Metric, since: DateTime<Utc>, now: DateTime<Utc>) {
        let ms = (now - since).num_milliseconds().max(0);
        self.value(metric, ms as f64);
    }

    /// Adds everything `other` collected.
    pub fn absorb(&mut self, other: Recorder) {
        for (key, (metric, n)) in other.counts {
            self.counts.entry(key).or_insert((metric, 0.0)).1 += n;
        }
        for (name, (metric, values)) in other.values {
            self.values
                .entry(name)
                .or_insert((metric, Vec::new()))
                .1
                .extend(values);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.values.is_empty()
    }

    /// The EMF documents: one per dimension keys and values, holding every metric written
    /// with them (EMF allows several per document, and the `_aws` header is most of a line's
    /// bytes, which CloudWatch Logs bills); values in lines of at most 100 per metric.
    pub fn lines(&self, stage: &str, at_ms: i64) -> Vec<String> {
        type Points<'a> = Vec<(&'a Metric, Value)>;
        let mut groups: BTreeMap<(&[&str], &[String]), Points> = BTreeMap::new();
        for ((_, values), (metric, n)) in &self.counts {
            groups
                .entry((metric.dimensions, values.as_slice()))
                .or_default()
                .push((metric, json!(n)));
        }
        let mut more = Vec::new();
        for (metric, values) in self.values.values() {
            let mut chunks = values.chunks(MAX_VALUES);
            if let Some(first) = chunks.next() {
                groups
                    .entry((metric.dimensions, &[]))
                    .or_default()
                    .push((metric, json!(first)));
            }
            for chunk in chunks {
                let points = [(*metric, json!(chunk))];
                more.push(document(stage, metric.dimensions, &[], &points, at_ms));
            }
        }
        groups
            .iter()
            .map(|((keys, values), points)| document(stage, keys, values, points, at_ms))
            .chain(more)
            .collect()
    }
}

/// One EMF document: `points` (metric and value, a number or an array of numbers) that share
/// the dimension `keys` and their `values`.
fn document(
    stage: &str,
    keys: &[&str],
    values: &[String],
    points: &[(&Metric, Value)],
    at_ms: i64,
) -> String {
    let mut all_keys = vec![STAGE];
    all_keys.extend(keys.iter().copied());
    let mut sets = vec![all_keys];
    if !keys.is_empty() {
        sets.push(vec![STAGE]);
    }
    let definitions: Vec<Value> = points
        .iter()
        .map(|(metric, _)| {
            let mut definition = json!({"Name": metric.name, "Unit": metric.unit.as_str()});
            if metric.unit == Unit::Milliseconds {
                definition["StorageResolution"] = json!(1);
            }
            definition
        })
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": sets,
                "Metrics": definitions,
            }]
        }),
    );
    doc.insert(STAGE.into(), json!(stage));
    for (key, v) in keys.iter().zip(values) {
        doc.insert((*key).into(), json!(v));
    }
    for (metric, value) in points {
        doc.insert(metric.name.into(), value.clone());
    }
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_written_with_its_dimensions_and_the_stage_total() {
        let mut r = Recorder::default();
        r.count(&EMAILS_SKIPPED, &["consent"], 2);
        r.count(&EMAILS_SKIPPED, &["consent"], 1);
        r.count(&EMAILS_SKIPPED, &["quiet_hours"], 0);
        let lines = r.lines("prod", 1_795_168_805_000);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        let meta = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Namespace"], "Ember");
        assert_eq!(meta["Dimensions"], json!([["Stage", "Reason"], ["Stage"]]));
        assert_eq!(
            meta["Metrics"],
            json!([{"Name": "EmailsSkipped", "Unit": "Count"}])
        );
        assert_eq!(v["_aws"]["Timestamp"], 1_795_168_805_000i64);
        assert_eq!(
            (v["Stage"].as_str(), v["Reason"].as_str()),
            (Some("prod"), Some("consent"))
        );
        assert_eq!(v["EmailsSkipped"], 3.0);
    }

    #[test]
    fn latencies_are_high_resolution_values_in_lines_of_at_most_100() {
        let mut r = Recorder::default();
        let t0: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
        for i in 0..150 {
            r.latency(&INGEST_TO_EMAIL, t0, t0 + chrono::Duration::milliseconds(i));
        }
        r.latency(&INGEST_TO_EMAIL, t0, t0 - chrono::Duration::seconds(1));
        let lines = r.lines("prod", 0);
        assert_eq!(lines.len(), 2);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        let meta = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Dimensions"], json!([["Stage"]]));
        assert_eq!(
            meta["Metrics"],
            json!([{"Name": "IngestToEmailLatency", "Unit": "Milliseconds", "StorageResolution": 1}])
        );
        assert_eq!(first["IngestToEmailLatency"].as_array().unwrap().len(), 100);
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["IngestToEmailLatency"].as_array().unwrap().len(), 51);
        assert_eq!(
            second["IngestToEmailLatency"][50], 0.0,
            "clock skew reads 0"
        );
    }

    #[test]
    fn absorbing_sums_counts_and_keeps_values() {
        let mut a = Recorder::default();
        a.count(&SEGMENT_ENTERED, &["vip"], 1);
        a.value(&INGEST_TO_ENRICH, 5.0);
        let mut b = Recorder::default();
        b.count(&SEGMENT_ENTERED, &["vip"], 2);
        b.value(&INGEST_TO_ENRICH, 7.0);
        a.absorb(b);
        let docs: Vec<Value> = a
            .lines("s", 0)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(docs[0]["IngestToEnrichLatency"], json!([5.0, 7.0]));
        assert_eq!(docs[1]["SegmentEntered"], 3.0);
    }

    #[test]
    fn metrics_with_the_same_dimension_values_share_one_line() {
        let mut r = Recorder::default();
        r.count(&EVENTS_APPLIED, &[], 4);
        r.count(&DUPLICATES_DROPPED, &[], 1);
        r.value(&INGEST_TO_ENRICH, 12.0);
        r.count(&EMAILS_SKIPPED, &["consent"], 1);
        r.count(&EMAILS_SKIPPED, &["quiet_hours"], 2);
        r.count(&DEAD_LETTERS, &["consent"], 1);
        let docs: Vec<Value> = r
            .lines("prod", 0)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Stage alone; Phase=consent; Reason=consent; Reason=quiet_hours.
        assert_eq!(docs.len(), 4, "{docs:?}");
        let stage_only = &docs[0];
        let meta = &stage_only["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Dimensions"], json!([["Stage"]]));
        let names: Vec<&str> = meta["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "DuplicatesDropped",
                "EventsApplied",
                "IngestToEnrichLatency"
            ]
        );
        assert_eq!(meta["Metrics"][2]["StorageResolution"], 1);
        assert_eq!(meta["Metrics"][0].get("StorageResolution"), None);
        assert_eq!(
            (
                &stage_only["EventsApplied"],
                &stage_only["DuplicatesDropped"]
            ),
            (&json!(4.0), &json!(1.0))
        );
        assert_eq!(stage_only["IngestToEnrichLatency"], json!([12.0]));
        // The same value under two different keys is two lines.
        let phase = &docs[1];
        assert_eq!(
            (&phase["Phase"], &phase["DeadLetters"]),
            (&json!("consent"), &json!(1.0))
        );
        assert_eq!(phase.get("EmailsSkipped"), None);
        assert_eq!(docs[2]["Reason"], "consent");
        assert_eq!(docs[3]["EmailsSkipped"], 2.0);
    }

    #[test]
    fn catalog_names_are_unique() {
        let mut names: Vec<&str> = CATALOG.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
    }
}
