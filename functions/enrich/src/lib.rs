//! The enrich function: Kinesis batches of Ember events → validated, enriched, folded into
//! DynamoDB profiles → segment and cart events on the EventBridge bus, with partial batch
//! failures (`ReportBatchItemFailures`).
//!
//! # Layout
//! - [`handler`]: the batch handler, generic over the `ProfileStore`, `EventBus` and
//!   `DeadLetterSink` ports (tests pass the real adapters against the emulator).
//! - [`config`]: configuration from the environment and the production dependencies
//!   ([`Deps`]: DynamoDB, EventBridge and SQS adapters built once per process).
//! - `main.rs`: initialisation only (telemetry, config, clients), then `lambda_runtime::run`.

pub mod config;
pub mod handler;

pub use config::{Config, Deps, EnrichError};
pub use handler::{BatchStats, Enricher};
