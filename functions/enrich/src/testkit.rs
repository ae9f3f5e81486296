//! In-memory ports for the crate's unit tests (the integration tests in `tests/` use the real
//! DynamoDB, EventBridge and SQS adapters against the emulator).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use ember_core::ports::{BusEvent, DeadLetter, DeadLetterSink, EventBus, PortError, PortResult};

/// Profiles with DynamoDB's version check; scan pages of 2 so pagination is exercised.
pub type MemoryStore = ember_core::memory::MemoryProfileStore;
pub type MemoryClaims = ember_core::memory::MemoryClaims;

pub fn memory_store() -> MemoryStore {
    MemoryStore {
        page_size: 2,
        ..Default::default()
    }
}

/// Records published events; fails every publish while `down` is set.
#[derive(Default)]
pub struct MemoryBus {
    pub published: Mutex<Vec<BusEvent>>,
    pub down: AtomicBool,
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[BusEvent]) -> Vec<PortResult<()>> {
        if self.down.load(Ordering::SeqCst) {
            return events
                .iter()
                .map(|_| {
                    Err(PortError::Transient {
                        stage: "test.bus",
                        reason: "down".into(),
                    })
                })
                .collect();
        }
        self.published
            .lock()
            .unwrap()
            .extend(events.iter().cloned());
        events.iter().map(|_| Ok(())).collect()
    }
}

/// Records dead letters; fails while `down` is set.
#[derive(Default)]
pub struct MemoryDlq {
    pub letters: Mutex<Vec<DeadLetter>>,
    pub down: AtomicBool,
}

#[async_trait]
impl DeadLetterSink for MemoryDlq {
    async fn send(&self, letters: &[DeadLetter]) -> PortResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Transient {
                stage: "test.dlq",
                reason: "down".into(),
            });
        }
        self.letters.lock().unwrap().extend(letters.iter().cloned());
        Ok(())
    }
}
