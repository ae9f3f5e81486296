//! One error enum for the domain crate. Every variant says whether retrying can help.

use thiserror::Error;

/// A field-level problem found while decoding, validating or enriching an event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// JSON pointer-ish path of the offending field, e.g. `/payload/items/0/price`.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// Joins problems into one human-readable reason (used for dead letters and 400 bodies).
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Error)]
pub enum CoreError {
    /// The input is not an acceptable event; retrying the same bytes cannot help.
    #[error("invalid event: {}", describe(.0))]
    Invalid(Vec<Problem>),
    /// Configuration shipped with or given to Ember (schemas, rules, campaigns) is wrong.
    #[error("invalid configuration in {what}: {reason}")]
    Config { what: String, reason: String },
}

impl CoreError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}
