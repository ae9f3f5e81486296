//! Support for Ember's benchmarks and for the call-count comparison in the integration tests.
//!
//! # Layout
//! - [`workload`]: deterministic, realistic Ember events (the storefront mix: page and product
//!   views with user agents and UTM links, carts, checkouts, purchases, heat preferences) for
//!   N records over U users, as raw JSON lines or as a Lambda `KinesisEvent`.
//! - [`memory`]: in-memory implementations of the ports, so the enrich handler can be timed
//!   in-process without the network.
//! - [`naive`]: the straightforward per-record implementation (one GetItem + PutItem per
//!   record, one PutEvents per segment change), the baseline Ember is compared against.
//! - [`alloc`]: a counting global allocator for peak-memory measurements.
//! - `benches/enrich.rs`: the criterion benchmarks; `src/bin/peak_memory.rs`: peak memory of
//!   one 10,000-record batch; `src/bin/cold_start.rs`: each release bootstrap's time to its
//!   first runtime-API poll. See `BENCHMARKS.md` at the repository root.

pub mod alloc;
pub mod memory;
pub mod naive;
pub mod workload;
