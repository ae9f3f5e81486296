//! Test support for Ember's integration tests: emulator endpoint, unique resource names,
//! and helpers that provision the resources a test needs. Tests live in `tests/tests/`.
//!
//! # Layout
//! - [`emulator`]: env loading (`.emulator/env`), unique names, provisioning (table, stream,
//!   queue, bus + rule → SQS), the enrich handler's adapters on them, reading queues and items
//!   back.
//! - [`api_support`]: one test's API (stream, tables, bus and the handler on them), API
//!   Gateway fixtures as requests, admin calls, reading the stream back.
//! - [`faults`]: a fault-injection proxy between the SDK and the emulator.
//! - [`capacity`]: DynamoDB capacity units measured from the calls through that proxy.
//! - [`local`]: the template's local pipeline (ember-local) for end-to-end tests.

pub mod api_support;
pub mod capacity;
pub mod emulator;
pub mod faults;
pub mod local;
