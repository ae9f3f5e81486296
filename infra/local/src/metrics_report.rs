//! What a run's functions measured, read back from the Embedded Metric Format lines they
//! wrote (the same lines CloudWatch turns into metrics): totals per metric and dimension
//! values, latency percentiles. Printed after a replay and written to `out/metrics.json`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

/// Totals and latencies of a run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MetricsReport {
    /// metric → (dimension values, e.g. `Campaign=churn_winback`, or `total`) → sum.
    pub counts: BTreeMap<String, BTreeMap<String, f64>>,
    /// metric → every value (milliseconds).
    pub latencies: BTreeMap<String, Vec<f64>>,
    /// How many EMF lines the functions wrote, and their bytes: what CloudWatch Logs bills.
    pub lines: usize,
    pub bytes: usize,
}

impl MetricsReport {
    /// Reads EMF documents; a line that is not one is skipped.
    pub fn from_documents(docs: &[Value]) -> MetricsReport {
        let mut report = MetricsReport::default();
        for doc in docs {
            report.lines += 1;
            report.bytes += doc.to_string().len() + 1;
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            let keys: Vec<&str> = directive["Dimensions"][0]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let names = directive["Metrics"].as_array().into_iter().flatten();
            for name in names.filter_map(|m| m["Name"].as_str()) {
                match &doc[name] {
                    Value::Array(values) => report
                        .latencies
                        .entry(name.to_owned())
                        .or_default()
                        .extend(values.iter().filter_map(Value::as_f64)),
                    value => {
                        let Some(n) = value.as_f64() else { continue };
                        let label: Vec<String> = keys
                            .iter()
                            .filter(|k| **k != ember_core::metrics::STAGE)
                            .map(|k| format!("{k}={}", doc[*k].as_str().unwrap_or("?")))
                            .collect();
                        let by = report.counts.entry(name.to_owned()).or_default();
                        *by.entry("total".into()).or_default() += n;
                        if !label.is_empty() {
                            *by.entry(label.join(",")).or_default() += n;
                        }
                    }
                }
            }
        }
        report
    }

    /// The total of `metric` (0 if it was never written).
    pub fn total(&self, metric: &str) -> f64 {
        self.counts
            .get(metric)
            .and_then(|by| by.get("total"))
            .copied()
            .unwrap_or(0.0)
    }

    /// EMF bytes per accepted event (what metrics add to the log bill per event).
    pub fn bytes_per_event(&self) -> Option<f64> {
        let events = self.total("EventsAccepted");
        (events > 0.0).then(|| self.bytes as f64 / events)
    }

    /// The `q` quantile (0–1, nearest rank) of a latency metric.
    pub fn quantile(&self, metric: &str, q: f64) -> Option<f64> {
        let mut values = self.latencies.get(metric)?.clone();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        Some(values[rank - 1])
    }

    pub fn to_json(&self) -> Value {
        let latencies: BTreeMap<&String, Value> = self
            .latencies
            .iter()
            .map(|(name, values)| {
                let q = |q| self.quantile(name, q);
                let stats = json!({"count": values.len(), "p50": q(0.5), "p90": q(0.9),
                                   "p99": q(0.99), "max": q(1.0)});
                (name, stats)
            })
            .collect();
        json!({"counts": self.counts, "latency_ms": latencies,
               "emf": {"lines": self.lines, "bytes": self.bytes,
                       "bytes_per_accepted_event": self.bytes_per_event()}})
    }
}

/// `Type=page_view,Reason=invalid` → `page_view/invalid`.
fn values_of(label: &str) -> String {
    label
        .split(',')
        .map(|kv| kv.split_once('=').map_or(kv, |(_, v)| v))
        .collect::<Vec<_>>()
        .join("/")
}

/// One line per metric: its total and its largest dimension values.
impl fmt::Display for MetricsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "metrics written by the functions (EMF, as CloudWatch reads them):"
        )?;
        for (name, by) in &self.counts {
            let mut parts: Vec<(&String, &f64)> =
                by.iter().filter(|(k, _)| *k != "total").collect();
            parts.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
            let shown: Vec<String> = parts
                .iter()
                .take(4)
                .map(|(k, v)| format!("{} {v}", values_of(k)))
                .collect();
            let more = parts.len().saturating_sub(4);
            let tail = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            writeln!(
                f,
                "  {name:<22} {:>7}  {}{tail}",
                self.total(name),
                shown.join(" · ")
            )?;
        }
        for (name, values) in &self.latencies {
            let q = |q| self.quantile(name, q).unwrap_or(0.0);
            writeln!(
                f,
                "  {name:<22} p50 {:.0} ms · p99 {:.0} ms · max {:.0} ms ({} values)",
                q(0.5),
                q(0.99),
                q(1.0),
                values.len()
            )?;
        }
        if let Some(per_event) = self.bytes_per_event() {
            writeln!(
                f,
                "  {:<22} {} lines, {} KB: {per_event:.0} bytes per accepted event",
                "(EMF log lines)",
                self.lines,
                self.bytes / 1024
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ember_core::memory::MemoryMetrics;
    use ember_core::metrics::{self, Recorder};

    use super::*;

    #[test]
    fn totals_and_quantiles_come_from_the_emf_lines() {
        let sink = MemoryMetrics::default();
        let mut r = Recorder::default();
        r.count(&metrics::EMAILS_SENT, &["churn_winback"], 3);
        r.count(&metrics::EMAILS_SENT, &["heat_match"], 1);
        r.count(&metrics::EVENTS_ACCEPTED, &["purchase"], 2);
        for ms in 1..=100 {
            r.value(&metrics::INGEST_TO_EMAIL, f64::from(ms));
        }
        sink.metrics().flush(r, chrono::Utc::now());
        let report = MetricsReport::from_documents(&sink.documents());
        assert_eq!(report.total("EmailsSent"), 4.0);
        assert_eq!(report.counts["EmailsSent"]["Campaign=churn_winback"], 3.0);
        assert_eq!(report.quantile("IngestToEmailLatency", 0.99), Some(99.0));
        assert_eq!(report.quantile("IngestToEmailLatency", 0.5), Some(50.0));
        let j = report.to_json();
        assert_eq!(j["latency_ms"]["IngestToEmailLatency"]["count"], 100);
        assert_eq!(j["counts"]["EmailsSent"]["total"], 4.0);
        let text = report.to_string();
        assert!(text.contains("EmailsSent"), "{text}");
        assert!(text.contains("p99 99 ms"), "{text}");
        // One line per campaign, one for the event type, one for the latencies.
        assert_eq!(report.lines, 4);
        let written: usize = sink
            .documents()
            .iter()
            .map(|d| d.to_string().len() + 1)
            .sum();
        assert_eq!(report.bytes, written);
        assert_eq!(report.bytes_per_event(), Some(written as f64 / 2.0));
        assert!(text.contains("4 lines"), "{text}");
    }
}
