//! Structured JSON logs (metrics are `ember_core::metrics`). Level from
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
    fn unset_empty_or_unreadable_rust_log_means_info() {
        for value in [None, Some(""), Some("  "), Some("ember=loud")] {
            let f = filter(value);
            assert!(f.would_enable("ember_api", &Level::INFO), "{value:?}");
            assert!(!f.would_enable("ember_api", &Level::DEBUG), "{value:?}");
        }
    }
}
