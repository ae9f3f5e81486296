//! Ember's domain: everything that decides *what* happens to an event, and nothing that
//! talks to AWS. This crate never imports `aws_sdk_*`; adapters live in `ember-aws`.
//!
//! # Layout
//! - [`event`] — the versioned event envelope and the list of event types.
//! - [`schema`] — JSON Schema files (in `schemas/`, embedded at build) and validation that
//!   reports every problem with its field path; `schema/checker.rs` compiles the draft 2020-12
//!   subset the files use and refuses any other keyword.
//! - [`enrich`] — normalisation (heat → Scoville units, money → minor units, UTM, device class)
//!   turning a validated envelope into a typed [`enrich::EnrichedEvent`]; one file per concern.
//! - [`consent`] — consent channels and suppression reasons.
//! - [`profile`] — the customer profile (the stored DynamoDB item's shape) and its bounds.
//! - [`stamped`] — last-writer-wins values (a value and the time it was stated).
//! - [`daily`] — per-day counters of the last 30 days, stored as columns, for the rolling
//!   7/30-day windows.
//! - [`watermark`] — the per-shard stream position a profile has applied (redelivered records
//!   change nothing).
//! - [`outbox`] — the bus events of a profile's last write, kept compactly in the profile
//!   until they are known to be published.
//! - [`fold`] — the pure fold of enriched events into a profile (counters, decayed heat,
//!   cart, consent, attribution, anonymous merges).
//! - [`attribution`] — campaign exposures (a customer in a variant or the holdout), purchases
//!   and refunds attributed to them, and the report counters each fold adds.
//! - [`report`] — a campaign's report from its counters: rates, revenue per recipient, uplift
//!   over the holdout with 95 % intervals.
//! - [`segment`] — declarative segment rules (in `rules/`, embedded as JSON by `build.rs`),
//!   evaluation and entered/exited diffs.
//!   The rule language and the trait names are documented there; the heat mapping (stated
//!   preference → Scoville units) is documented in [`enrich`].
//! - [`ports`] — the narrow traits the functions need (profile store, event-id claims, event
//!   bus, dead letters, event stream, mailer) with domain types only.
//! - [`memory`] — in-memory profile store and event-id claims with the same contracts (tests,
//!   benchmarks).
//! - [`config`] — runtime configuration (rules, campaigns, templates, catalog) as numbered
//!   versions in the ledger table, and the per-function cache that compiles the current one.
//! - [`metrics`] — the metrics Ember writes (CloudWatch Embedded Metric Format lines) and
//!   the per-invocation recorder.
//! - [`trace`] — the W3C trace context an event carries from the API to the email, and its
//!   X-Ray form.
//! - [`clock`] — the injected "now" (system clock in production, fixed or simulated in tests
//!   and the local runner).
//! - [`error`] — the crate's error enum, each variant retryable or not.
//! - [`privacy`] — what may be logged about a person: masked profile ids, redacted addresses.

pub mod attribution;
pub mod clock;
pub mod config;
pub mod consent;
pub mod daily;
pub mod enrich;
pub mod error;
pub mod event;
pub mod fold;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod ports;
pub mod privacy;
pub mod profile;
pub mod report;
pub mod schema;
pub mod segment;
pub mod stamped;
pub mod trace;
pub mod unsubscribe;
pub mod watermark;

pub use error::CoreError;
pub use event::{Envelope, EventHeader, EventType};
