//! In-memory ports: ember-core's memory profile store (the same optimistic version check as
//! the DynamoDB adapter), a bus and a dead-letter sink that keep what they receive. Used to time
//! the enrich handler in-process; the integration tests use the real adapters instead.

use ember_core::fold::FoldConfig;
use ember_enrich::Enricher;

pub type MemoryStore = ember_core::memory::MemoryProfileStore;
pub type MemoryClaims = ember_core::memory::MemoryClaims;

pub type MemoryBus = ember_core::memory::MemoryBus;
pub type MemoryDeadLetters = ember_core::memory::MemoryDeadLetters;

pub type MemoryEnricher = Enricher<MemoryStore, MemoryClaims, MemoryBus, MemoryDeadLetters>;

pub fn memory_enricher() -> Result<MemoryEnricher, ember_core::CoreError> {
    Enricher::new(
        MemoryStore::default(),
        MemoryClaims::default(),
        MemoryBus::default(),
        MemoryDeadLetters::default(),
        FoldConfig::default(),
    )
}
