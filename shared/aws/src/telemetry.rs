//! Structured JSON logs, and CloudWatch metrics as Embedded Metric Format lines. Level from
//! `RUST_LOG` (default `info`). Never log raw email addresses or secrets: log masked profile
//! ids (`ember_core::privacy`) and hashed addresses instead.
//!
//! `RUST_LOG` takes a level and per-target levels (`info`, `warn,ember_enrich=debug`): the
//! `Targets` filter, not `EnvFilter`, whose span/field matching would pull a regex engine
//! into every bootstrap.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The log filter for a `RUST_LOG` value; `info` when unset or unreadable.
pub fn filter(rust_log: Option<&str>) -> Targets {
    rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// Installs the JSON subscriber once; later calls are no-ops (handy in tests).
pub fn init() {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let layer = fmt::layer()
        .json()
        .with_current_span(true)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// Namespace of Ember's CloudWatch metrics.
pub const NAMESPACE: &str = "Ember";

/// One Embedded Metric Format document: CloudWatch turns this log line into a data point of
/// each metric, in [`NAMESPACE`], with `dimensions` (keep them few: each combination is a
/// billed metric). Metric values are counts.
pub fn emf_line(dimensions: &[(&str, &str)], counts: &[(&str, f64)], at_ms: i64) -> String {
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": counts
                    .iter()
                    .map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"}))
                    .collect::<Vec<_>>(),
            }]
        }
    });
    for (k, v) in dimensions {
        doc[*k] = (*v).into();
    }
    for (name, value) in counts {
        doc[*name] = (*value).into();
    }
    doc.to_string()
}

/// Writes a count metric (Embedded Metric Format on stdout, where Lambda's log stream picks
/// it up).
pub fn count(dimensions: &[(&str, &str)], name: &str, value: f64) {
    let at_ms = chrono::Utc::now().timestamp_millis();
    println!("{}", emf_line(dimensions, &[(name, value)], at_ms));
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn rust_log_sets_the_default_and_per_target_levels() {
        let f = filter(Some("warn,ember_enrich=debug"));
        assert!(f.would_enable("ember_enrich::handler", &Level::DEBUG));
        assert!(!f.would_enable("ember_enrich::handler", &Level::TRACE));
        assert!(f.would_enable("aws_smithy_runtime", &Level::WARN));
        assert!(!f.would_enable("aws_smithy_runtime", &Level::INFO));
    }

    #[test]
    fn an_emf_line_declares_its_metrics_and_carries_their_values() {
        let line = emf_line(
            &[("function", "email")],
            &[("EmailOutcomeUnknown", 1.0)],
            1_795_168_805_000,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let meta = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Namespace"], "Ember");
        assert_eq!(meta["Dimensions"], serde_json::json!([["function"]]));
        assert_eq!(meta["Metrics"][0]["Name"], "EmailOutcomeUnknown");
        assert_eq!(v["_aws"]["Timestamp"], 1_795_168_805_000i64);
        assert_eq!(
            (v["function"].as_str(), v["EmailOutcomeUnknown"].as_f64()),
            (Some("email"), Some(1.0))
        );
    }

    #[test]
    fn unset_empty_or_unreadable_rust_log_means_info() {
        for value in [None, Some(""), Some("  "), Some("ember=loud")] {
            let f = filter(value);
            assert!(f.would_enable("ember_api", &Level::INFO), "{value:?}");
            assert!(!f.would_enable("ember_api", &Level::DEBUG), "{value:?}");
        }
    }
}
