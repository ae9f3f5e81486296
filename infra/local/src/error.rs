//! The local runner's error enum. Each variant names the stage that failed.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LocalError {
    /// template.yaml is unreadable or uses something the local runner cannot model.
    #[error("template: {0}")]
    Template(String),
    /// Creating or deleting a resource on the emulator failed.
    #[error("provisioning {resource}: {reason}")]
    Provision { resource: String, reason: String },
    /// A poller, the HTTP server or a handler failed while running the pipeline.
    #[error("pipeline stage {stage}: {reason}")]
    Pipeline { stage: &'static str, reason: String },
    /// Reading or writing local files (samples, emails).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The repository's configuration files, or publishing them.
    #[error("configuration: {0}")]
    Config(String),
    /// The JSONL sample or a generated event is malformed.
    #[error("input {what}: {reason}")]
    Input { what: String, reason: String },
}

impl LocalError {
    pub fn pipeline(stage: &'static str, reason: impl std::fmt::Display) -> Self {
        LocalError::Pipeline {
            stage,
            reason: reason.to_string(),
        }
    }

    pub fn provision(resource: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        LocalError::Provision {
            resource: resource.into(),
            reason: reason.to_string(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LocalError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Formats an SDK error with its service error details (code and message).
pub fn sdk<E: std::error::Error>(e: E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
