//! Ember's adapters to AWS. The domain (`ember-core`) defines ports; this crate implements
//! them with the AWS SDK and holds the utilities every function shares.
//!
//! # Layout
//! - [`config`]: one `SdkConfig` per process (rustls + ring HTTP client, endpoints only from
//!   the standard `AWS_ENDPOINT_URL*` variables) and the resource names read from env.
//! - [`telemetry`]: JSON structured logs via tracing-subscriber.
//! - [`kinesis`]: the event stream (`PutRecords` in chunks of ≤500, failed records retried).
//! - [`error`]: the crate's error enum and SDK-error classification (retryable or not).
//! - [`retry`]: bounded exponential backoff with jitter, and `classify` (SDK error → transient
//!   or permanent `PortError`, naming the stage).
//! - [`profiles`]: DynamoDB `ProfileStore` (optimistic version check).
//! - [`eventbridge`]: EventBridge `EventBus` (per-entry failures retried).
//! - [`sqs`]: SQS `DeadLetterSink` (per-entry failures retried).
//! - [`batch`]: Kinesis partial-batch-failure utility (ordered per key).

pub mod batch;
pub mod config;
pub mod error;
pub mod eventbridge;
pub mod kinesis;
pub mod ledger;
pub mod profiles;
pub mod retry;
pub mod sesv2;
pub mod sqs;
pub mod telemetry;

pub use config::sdk_config;
pub use error::AwsError;
