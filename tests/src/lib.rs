//! Test support for Ember's integration tests: emulator endpoint, unique resource names,
//! and helpers that provision the resources a test needs. Tests live in `tests/tests/`.
