//! In-memory ports: ember-core's memory profile store (the same optimistic version check as
//! the DynamoDB adapter), a bus and a dead-letter sink that keep what they receive. Used to time
//! the enrich handler in-process; the integration tests use the real adapters instead.

use std::sync::Mutex;

use async_trait::async_trait;
use ember_core::fold::FoldConfig;
use ember_core::ports::{BusEvent, DeadLetter, DeadLetterSink, EventBus, PortResult};
use ember_enrich::Enricher;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub type MemoryStore = ember_core::memory::MemoryProfileStore;
pub type MemoryClaims = ember_core::memory::MemoryClaims;

#[derive(Debug, Default)]
pub struct MemoryBus {
    pub events: Mutex<Vec<BusEvent>>,
}

impl MemoryBus {
    pub fn take(&self) -> Vec<BusEvent> {
        std::mem::take(&mut *lock(&self.events))
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[BusEvent]) -> Vec<PortResult<()>> {
        lock(&self.events).extend_from_slice(events);
        vec![Ok(()); events.len()]
    }
}

#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    pub letters: Mutex<Vec<DeadLetter>>,
}

#[async_trait]
impl DeadLetterSink for MemoryDeadLetters {
    async fn send(&self, letters: &[DeadLetter]) -> PortResult<()> {
        lock(&self.letters).extend_from_slice(letters);
        Ok(())
    }
}

impl MemoryDeadLetters {
    pub fn len(&self) -> usize {
        lock(&self.letters).len()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.letters).is_empty()
    }
}

/// The enrich handler over the in-memory ports, with the embedded schemas and rules and the
/// default fold settings: what the benchmarks, the peak-memory run and the PGO training run
/// time.
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
