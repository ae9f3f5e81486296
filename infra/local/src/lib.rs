//! `ember-local`: Ember's whole pipeline on a laptop, against an AWS emulator (moto,
//! LocalStack, fakecloud — anything `AWS_ENDPOINT_URL` points at), wired from
//! `template.yaml` so the local run and the deployed stack cannot drift apart.
//!
//! What it does, in order:
//! 1. reads the SAM template ([`template`]) and provisions its tables, stream, bus, queues
//!    and SES configuration on the emulator, with names made unique per run through the
//!    template's own `Stage` parameter ([`provision`]);
//! 2. builds each function's real handler from its crate with the environment the template
//!    gives it ([`functions`]);
//! 3. runs the event sources the template declares, in-process: the HTTP API routes
//!    ([`http`]), the Kinesis event source mapping with partial failures, bisection, retries
//!    and the on-failure destination, the EventBridge rules through SQS target queues, and
//!    the schedules ([`kinesis_mapping`], [`rule_delivery`], [`pipeline`]);
//! 4. replays sample traffic on a clock that follows event time ([`clock`], [`replay`]) and
//!    reports profiles, segment transitions, emails (read back from the emulator and written
//!    as HTML by [`mail`]), dead letters and latency, and the metrics the functions wrote
//!    ([`metrics_report`]).
//!
//! # Layout
//! - [`template`]: YAML with CloudFormation short tags -> JSON; intrinsic resolution;
//!   function specs and event sources.
//! - [`provision`]: creating (and deleting) the template's resources on the emulator.
//! - [`functions`]: binary name -> in-process handler.
//! - [`http`]: the API Gateway HTTP API (payload 2.0) stand-in.
//! - [`kinesis_mapping`]: Lambda's Kinesis event source mapping (batches, partial failures,
//!   bisection, retries, on-failure destination).
//! - [`archive_delivery`]: Firehose's delivery from the stream to the archive bucket.
//! - [`rule_delivery`]: EventBridge rules (through their SQS targets) and schedules.
//! - [`activity`]: counters and the drain handshake.
//! - [`clock`]: the event-time clock.
//! - [`pipeline`]: starting and stopping everything.
//! - [`replay`]: JSONL replay and the summary. [`generate`]: the deterministic sample.
//!   [`respond`]: simulated customers answering campaigns with a known true uplift.
//! - [`report`]: the campaign reports after a run (summary table, `out/report/index.html`).
//! - [`mail`]: reading sent mail from moto / LocalStack / fakecloud; HTML output.
//! - [`metrics_report`]: the run's metrics from the functions' EMF lines (`out/metrics.json`).
//! - [`config_files`]: the configuration as repository files and the `config` command
//!   (validate, diff, publish, versions, rollback).
//! - [`dead_letters`]: the `dead-letters` command (list, redrive, purge), for the emulator
//!   or a deployed stack.
//! - [`error`]: the crate's error enum.

pub mod activity;
pub mod archive_delivery;
pub mod clock;
pub mod config_files;
pub mod dead_letters;
pub mod error;
pub mod functions;
pub mod generate;
pub mod http;
pub mod kinesis_mapping;
pub mod mail;
pub mod metrics_report;
pub mod pipeline;
pub mod provision;
pub mod replay;
pub mod report;
pub mod respond;
pub mod rule_delivery;
pub mod template;

pub use error::LocalError;
pub use pipeline::{Pipeline, PipelineOptions};
pub use replay::{replay, ReplayOptions, ReplaySummary};
