//! Ember's adapters to AWS. The domain (`ember-core`) defines ports; this crate implements
//! them with the AWS SDK and holds the utilities every function shares.
//!
//! # Layout
//! - [`config`]: one `SdkConfig` per process (rustls + ring HTTP client, endpoints only from
//!   the standard `AWS_ENDPOINT_URL*` variables) and the resource names read from env.
//! - [`telemetry`]: JSON structured logs via tracing-subscriber.
//! - [`kinesis`]: the event stream (`PutRecords` in waves of one record per partition key, so
//!   a retried failure never reorders a customer's events).
//! - [`error`]: the crate's error enum.
//! - [`retry`]: bounded exponential backoff with jitter, and `classify` (SDK error → transient
//!   or permanent `PortError`, naming the stage): the one place errors are classified.
//! - [`profiles`]: DynamoDB `ProfileStore` (optimistic version check), the item form, its
//!   billed size, and reading legacy items.
//! - [`ledger`]: DynamoDB `Ledger` (small keyed records with expiry: send claims, caps,
//!   suppressions, timers).
//! - [`claims`]: DynamoDB `EventClaims` in the ledger table (event ids, with their origin).
//! - [`sesv2`]: SESv2 `Mailer`.
//! - [`eventbridge`]: EventBridge `EventBus` (per-entry failures retried).
//! - [`sqs`]: SQS `DeadLetterSink` (per-entry failures retried).
//! - [`redrive`]: the operator's dead-letter queue: list, put back on the stream, purge.
//! - [`stream_failures`]: the enrich mapping's on-failure destination: read the failed
//!   ranges back from the stream and put back what was not applied.
//! - [`archive`]: the raw event archive on S3 (Firehose's layout): read, replay, erase.
//! - [`archive_erasure`]: the scheduled erasure passes over the archive (cursor in the ledger).
//! - [`batch`]: Kinesis partial-batch-failure utility (ordered per key).

pub mod archive;
pub mod archive_erasure;
pub mod batch;
pub mod claims;
pub mod config;
pub mod error;
pub mod eventbridge;
pub mod kinesis;
pub mod ledger;
pub mod profiles;
pub mod redrive;
pub mod retry;
pub mod sesv2;
pub mod sqs;
pub mod stream_failures;
pub mod telemetry;

pub use config::sdk_config;
pub use error::AwsError;
