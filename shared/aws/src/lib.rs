//! Ember's adapters to AWS. The domain (`ember-core`) defines ports; this crate implements
//! them with the AWS SDK and holds the utilities every function shares.
//!
//! # Layout
//! - [`config`]: one `SdkConfig` per process (rustls + ring HTTP client, endpoints only from
//!   the standard `AWS_ENDPOINT_URL*` variables) and the resource names read from env.
//! - [`telemetry`]: JSON structured logs via tracing-subscriber.
//! - [`error`]: the crate's error enum and SDK-error classification (retryable or not).

pub mod config;
pub mod error;
pub mod telemetry;

pub use config::sdk_config;
pub use error::AwsError;
