//! Test support for Ember's integration tests: emulator endpoint, unique resource names,
//! and helpers that provision the resources a test needs. Tests live in `tests/tests/`.
//!
//! # Layout
//! - [`emulator`]: env loading (`.emulator/env`), unique names, provisioning (table, stream,
//!   queue, bus + rule → SQS), reading queues and items back, Kinesis event builders.
//! - [`faults`]: a fault-injection proxy between the SDK and the emulator.

pub mod api_support;
pub mod emulator;
pub mod faults;
