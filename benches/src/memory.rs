//! In-memory ports: a `HashMap` profile store with the same optimistic version check as the
//! DynamoDB adapter, a bus and a dead-letter sink that keep what they receive. Used to time
//! the enrich handler in-process; the integration tests use the real adapters instead.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use ember_core::ports::{
    BusEvent, DeadLetter, DeadLetterSink, EventBus, PortError, PortResult, ProfileStore,
};
use ember_core::profile::Profile;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    profiles: Mutex<HashMap<String, Profile>>,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        lock(&self.profiles).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        lock(&self.profiles).clear();
    }

    pub fn snapshot(&self) -> HashMap<String, Profile> {
        lock(&self.profiles).clone()
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn get(&self, id: &str) -> PortResult<Option<Profile>> {
        Ok(lock(&self.profiles).get(id).cloned())
    }

    async fn put(&self, profile: &Profile, expected_version: u64) -> PortResult<()> {
        let mut profiles = lock(&self.profiles);
        let stored = profiles.get(&profile.id).map_or(0, |p| p.version);
        if stored != expected_version {
            return Err(PortError::Conflict(format!(
                "{} is at version {stored}",
                profile.id
            )));
        }
        profiles.insert(profile.id.clone(), profile.clone());
        Ok(())
    }

    async fn delete(&self, id: &str) -> PortResult<bool> {
        Ok(lock(&self.profiles).remove(id).is_some())
    }
}

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
