//! In-memory ports for the crate's unit tests (the integration tests in `tests/` use the real
//! DynamoDB, EventBridge and SQS adapters against the emulator).

/// Profiles with DynamoDB's version check; scan pages of 2 so pagination is exercised.
pub type MemoryStore = ember_core::memory::MemoryProfileStore;
pub type MemoryClaims = ember_core::memory::MemoryClaims;

pub fn memory_store() -> MemoryStore {
    MemoryStore {
        page_size: 2,
        ..Default::default()
    }
}

pub type MemoryBus = ember_core::memory::MemoryBus;
pub type MemoryDlq = ember_core::memory::MemoryDeadLetters;
