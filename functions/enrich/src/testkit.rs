//! In-memory ports for the crate's unit tests (the integration tests in `tests/` use the real
//! DynamoDB, EventBridge and SQS adapters against the emulator).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use ember_core::ports::{
    BusEvent, DeadLetter, DeadLetterSink, EventBus, PortError, PortResult, ProfileStore,
};
use ember_core::profile::Profile;

/// Profiles with DynamoDB's version check; a paginating parallel scan (pages of 2, segments
/// by the id's byte sum) so pagination is exercised.
#[derive(Default)]
pub struct MemoryStore {
    pub profiles: Mutex<BTreeMap<String, Profile>>,
    pub puts: AtomicUsize,
    /// Writes of these profile ids fail (throttled).
    pub failing: Mutex<HashSet<String>>,
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn get(&self, id: &str) -> PortResult<Option<Profile>> {
        Ok(self.profiles.lock().unwrap().get(id).cloned())
    }
    async fn put(&self, profile: &Profile, expected_version: u64) -> PortResult<()> {
        if self.failing.lock().unwrap().contains(&profile.id) {
            return Err(PortError::Transient {
                stage: "test.put",
                reason: "throttled".into(),
            });
        }
        let mut map = self.profiles.lock().unwrap();
        let current = map.get(&profile.id).map_or(0, |p| p.version);
        if current != expected_version {
            return Err(PortError::Conflict(format!("{} at {current}", profile.id)));
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        map.insert(profile.id.clone(), profile.clone());
        Ok(())
    }
    async fn delete(&self, id: &str) -> PortResult<bool> {
        Ok(self.profiles.lock().unwrap().remove(id).is_some())
    }
    async fn scan(
        &self,
        segment: u32,
        total: u32,
        start: Option<String>,
    ) -> PortResult<(Vec<Profile>, Option<String>)> {
        let map = self.profiles.lock().unwrap();
        let mine: Vec<Profile> = map
            .values()
            .filter(|p| p.id.bytes().map(u32::from).sum::<u32>() % total == segment)
            .filter(|p| start.as_ref().is_none_or(|s| p.id > *s))
            .take(2)
            .cloned()
            .collect();
        let next = (mine.len() == 2).then(|| mine[1].id.clone());
        Ok((mine, next))
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
