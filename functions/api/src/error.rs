//! The api crate's error enum. Every variant maps to one HTTP status and one stable `error`
//! code; the body is always JSON `{"error": code, "message": …}` plus variant details.

use ember_core::error::Problem;
use ember_core::ports::PortError;
use lambda_http::http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use thiserror::Error;

/// A validation problem of one entry of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexedProblem {
    /// Position of the entry in the batch (0 for a single event).
    pub index: usize,
    /// JSON pointer of the field inside that entry, e.g. `/payload/price`.
    pub path: String,
    pub message: String,
}

impl IndexedProblem {
    pub fn new(index: usize, problem: Problem) -> Self {
        IndexedProblem {
            index,
            path: problem.path,
            message: problem.message,
        }
    }
}

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {method} is not allowed here; allowed: {}", .allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        allowed: Vec<&'static str>,
    },
    #[error("content-type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    #[error("request body is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("request body is not valid JSON: {message}")]
    MalformedJson {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{} problem(s) found; nothing was accepted", .0.len())]
    ValidationFailed(Vec<IndexedProblem>),
    #[error("missing API key: send it as x-api-key or Authorization: Bearer")]
    MissingCredentials,
    #[error("the API key is not valid for this endpoint")]
    InvalidCredentials,
    #[error("{} event(s) need a server key; a browser key sends behavioural events only", .0.len())]
    InsufficientScope(Vec<IndexedProblem>),
    #[error("unknown webhook provider {0:?}")]
    UnknownProvider(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    StaleTimestamp(String),
    #[error("{0}")]
    InvalidToken(String),
    #[error("no profile {0:?}")]
    ProfileNotFound(String),
    #[error("{} problem(s) in the configuration; nothing was published", .0.len())]
    InvalidConfig(Vec<Problem>),
    #[error(
        "configuration version {0} was published meanwhile; read it and apply the change again"
    )]
    ConfigConflict(u64),
    #[error("no {0} in the configuration")]
    ConfigItemNotFound(String),
    /// A dependency failed; `stage` names which (e.g. `ledger.claim`).
    #[error("{stage} failed: {source}")]
    Dependency {
        stage: &'static str,
        source: PortError,
    },
}

/// Every `error` code the API can answer with (the OpenAPI document must list exactly these,
/// plus the partial-batch codes of [`crate::events`]).
pub const ERROR_CODES: &[&str] = &[
    "not_found",
    "method_not_allowed",
    "unsupported_media_type",
    "payload_too_large",
    "malformed_json",
    "invalid_request",
    "validation_failed",
    "missing_credentials",
    "invalid_credentials",
    "insufficient_scope",
    "unknown_provider",
    "invalid_signature",
    "stale_timestamp",
    "invalid_token",
    "profile_not_found",
    "invalid_config",
    "config_conflict",
    "config_item_not_found",
    "unavailable",
    "internal",
    "partially_accepted",
];

impl ApiError {
    pub fn dependency(stage: &'static str, source: PortError) -> Self {
        ApiError::Dependency { stage, source }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_)
            | ApiError::UnknownProvider(_)
            | ApiError::ProfileNotFound(_)
            | ApiError::ConfigItemNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::ConfigConflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MalformedJson { .. }
            | ApiError::InvalidRequest(_)
            | ApiError::ValidationFailed(_)
            | ApiError::InvalidConfig(_)
            | ApiError::InvalidToken(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingCredentials
            | ApiError::InvalidSignature(_)
            | ApiError::StaleTimestamp(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidCredentials | ApiError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            ApiError::Dependency { source, .. } if source.is_retryable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Dependency { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::ValidationFailed(_) => "validation_failed",
            ApiError::MissingCredentials => "missing_credentials",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::UnknownProvider(_) => "unknown_provider",
            ApiError::InvalidSignature(_) => "invalid_signature",
            ApiError::StaleTimestamp(_) => "stale_timestamp",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::ProfileNotFound(_) => "profile_not_found",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::ConfigConflict(_) => "config_conflict",
            ApiError::ConfigItemNotFound(_) => "config_item_not_found",
            ApiError::Dependency { source, .. } if source.is_retryable() => "unavailable",
            ApiError::Dependency { .. } => "internal",
        }
    }

    /// Whether the client may send the same request again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Dependency { source, .. } if source.is_retryable())
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match self {
            ApiError::MalformedJson { line, column, .. } => {
                body["line"] = json!(line);
                body["column"] = json!(column);
            }
            ApiError::ValidationFailed(problems) | ApiError::InsufficientScope(problems) => {
                body["problems"] = json!(problems)
            }
            ApiError::InvalidConfig(problems) => body["problems"] = json!(problems),
            ApiError::PayloadTooLarge { limit, .. } => body["limit_bytes"] = json!(limit),
            ApiError::MethodNotAllowed { allowed, .. } => body["allowed"] = json!(allowed),
            ApiError::Dependency { .. } => body["retryable"] = json!(self.is_retryable()),
            _ => {}
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed() {
        let samples = [
            ApiError::NotFound("/x".into()),
            ApiError::MethodNotAllowed {
                method: "PUT".into(),
                allowed: vec!["POST"],
            },
            ApiError::UnsupportedMediaType("text/plain".into()),
            ApiError::PayloadTooLarge { size: 2, limit: 1 },
            ApiError::MalformedJson {
                message: "x".into(),
                line: 1,
                column: 1,
            },
            ApiError::InvalidRequest("x".into()),
            ApiError::ValidationFailed(vec![]),
            ApiError::MissingCredentials,
            ApiError::InvalidCredentials,
            ApiError::InsufficientScope(vec![]),
            ApiError::UnknownProvider("x".into()),
            ApiError::InvalidSignature("x".into()),
            ApiError::StaleTimestamp("x".into()),
            ApiError::InvalidToken("x".into()),
            ApiError::ProfileNotFound("x".into()),
            ApiError::InvalidConfig(vec![]),
            ApiError::ConfigConflict(2),
            ApiError::ConfigItemNotFound("segments/x".into()),
            ApiError::dependency(
                "s",
                PortError::Transient {
                    stage: "s",
                    reason: "r".into(),
                },
            ),
            ApiError::dependency(
                "s",
                PortError::Permanent {
                    stage: "s",
                    reason: "r".into(),
                },
            ),
        ];
        for e in samples {
            assert!(ERROR_CODES.contains(&e.code()), "{} not listed", e.code());
            assert_eq!(e.body()["error"], e.code());
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
    }

    #[test]
    fn dependency_errors_tell_retryable_from_not() {
        let t = ApiError::dependency(
            "kinesis",
            PortError::Transient {
                stage: "k",
                reason: "slow".into(),
            },
        );
        assert_eq!(t.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(t.body()["retryable"], true);
        let p = ApiError::dependency(
            "kinesis",
            PortError::Permanent {
                stage: "k",
                reason: "gone".into(),
            },
        );
        assert_eq!(p.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
