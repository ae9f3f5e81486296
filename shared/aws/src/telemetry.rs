//! Structured JSON logs. Level from `RUST_LOG` (default `info`). Never log raw email
//! addresses or secrets: log profile ids and hashed addresses instead.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the JSON subscriber once; later calls are no-ops (handy in tests).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_target(false)
        .try_init();
}
