//! The enrich function: Kinesis batches of Ember events → validated, enriched, folded into
//! DynamoDB profiles → segment and cart events on the EventBridge bus, with partial batch
//! failures (`ReportBatchItemFailures`).
//!
//! # Layout
//! - [`handler`]: the batch handler, generic over the `ProfileStore`, `EventBus` and
//!   `DeadLetterSink` ports (tests pass the real adapters against the emulator).
//! - [`outbox`]: write-then-publish with the profile outbox, shared by both entry points.
//! - [`reevaluate`]: the scheduled re-evaluation of time-based segments (binary `reevaluate`):
//!   a parallel scan of the profiles table, rewriting only profiles whose membership changed.
//! - [`config`]: [`Settings::from_lookup`] (the environment) and [`Deps::build`], the one
//!   production wiring (DynamoDB, EventBridge and SQS adapters, built once per process), used
//!   by `main.rs` and by the local runner alike; the same pair for `reevaluate`.
//! - `bin/reevaluate.rs`: the `reevaluate` binary's initialisation (EventBridge schedule).
//! - `main.rs`: initialisation only (telemetry, config, clients), then `lambda_runtime::run`.

pub mod config;
pub mod handler;
pub mod outbox;
pub mod reevaluate;
#[cfg(test)]
mod testkit;

pub use config::{Deps, EnrichError, ReevaluateDeps, ReevaluateSettings, Settings};
pub use handler::{BatchStats, Enricher};
pub use reevaluate::{Reevaluator, RunStats};
