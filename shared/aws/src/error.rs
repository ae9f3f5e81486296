//! The adapters' error enum, and the mapping of SDK errors to retryable or not.

use ember_core::ports::PortError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AwsError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

impl AwsError {
    pub fn is_retryable(&self) -> bool {
        match self {
            AwsError::Config(_) => false,
            AwsError::Port(p) => p.is_retryable(),
        }
    }
}
