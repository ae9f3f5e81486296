//! The email function's error enum; each variant says whether Lambda should retry the event.

use ember_core::ports::PortError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EmailError {
    /// Campaigns, templates, catalog or environment are wrong: fix the deployment.
    #[error("configuration: {0}")]
    Config(String),
    /// The incoming event cannot be understood; retrying the same event cannot help.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A template failed to render (strict undefined): a template bug.
    #[error("rendering {template} failed: {reason}")]
    Render { template: String, reason: String },
    /// A port (DynamoDB, SES, Kinesis) failed; `stage` says where in the email flow.
    #[error("{stage}: {source}")]
    Port {
        stage: &'static str,
        #[source]
        source: PortError,
    },
}

impl EmailError {
    pub fn port(stage: &'static str) -> impl FnOnce(PortError) -> EmailError {
        move |source| EmailError::Port { stage, source }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            EmailError::Port { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}
