//! In-memory ports for unit tests, benchmarks and local experiments, with the same contracts
//! as the DynamoDB adapters:
//! - [`MemoryProfileStore`]: the optimistic version check and a paginated parallel scan;
//! - [`MemoryClaims`]: event-id claims granted again to their own origin, expiring.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::{check_scan_segment, Claim, EventClaims, PortError, PortResult, ProfileStore};
use crate::profile::Profile;

/// Event-id claims in a map: `event id → (origin, expires at)`.
#[derive(Debug, Default)]
pub struct MemoryClaims {
    pub claims: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
    /// Claim calls fail as throttled while set (fault injection for tests).
    pub down: std::sync::atomic::AtomicBool,
}

impl MemoryClaims {
    fn check(&self) -> PortResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::Transient {
                stage: "memory.claim",
                reason: "throttled".into(),
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        lock(&self.claims).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EventClaims for MemoryClaims {
    async fn claim(
        &self,
        event_id: &str,
        origin: &str,
        expires_at: DateTime<Utc>,
    ) -> PortResult<Claim> {
        self.check()?;
        let mut claims = lock(&self.claims);
        match claims.get(event_id) {
            Some((holder, until)) if holder != origin && *until > Utc::now() => Ok(Claim::Held),
            _ => {
                claims.insert(event_id.to_owned(), (origin.to_owned(), expires_at));
                Ok(Claim::Granted)
            }
        }
    }

    async fn release(&self, event_id: &str, origin: &str) -> PortResult<()> {
        self.check()?;
        let mut claims = lock(&self.claims);
        if claims
            .get(event_id)
            .is_some_and(|(holder, _)| holder == origin)
        {
            claims.remove(event_id);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct MemoryProfileStore {
    pub profiles: Mutex<BTreeMap<String, Profile>>,
    /// Successful writes so far.
    pub puts: AtomicUsize,
    /// Writes of these profile ids fail as throttled (fault injection for tests).
    pub failing: Mutex<HashSet<String>>,
    /// Writes of these profile ids fail for good, as an item over DynamoDB's size limit.
    pub refusing: Mutex<HashSet<String>>,
    /// Profiles per scan page.
    pub page_size: usize,
}

impl Default for MemoryProfileStore {
    fn default() -> Self {
        MemoryProfileStore {
            profiles: Mutex::default(),
            puts: AtomicUsize::new(0),
            failing: Mutex::default(),
            refusing: Mutex::default(),
            page_size: 100,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryProfileStore {
    /// A store holding `profile`.
    pub fn with(profile: Profile) -> Self {
        let store = MemoryProfileStore::default();
        store.set(profile);
        store
    }

    /// Stores `profile` as is, bypassing the version check.
    pub fn set(&self, profile: Profile) {
        lock(&self.profiles).insert(profile.id.clone(), profile);
    }

    pub fn len(&self) -> usize {
        lock(&self.profiles).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        lock(&self.profiles).clear();
    }

    pub fn snapshot(&self) -> BTreeMap<String, Profile> {
        lock(&self.profiles).clone()
    }

    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ProfileStore for MemoryProfileStore {
    async fn get(&self, id: &str) -> PortResult<Option<Profile>> {
        Ok(lock(&self.profiles).get(id).cloned())
    }

    async fn put(&self, profile: &Profile, expected_version: u64) -> PortResult<()> {
        if lock(&self.failing).contains(&profile.id) {
            return Err(PortError::Transient {
                stage: "memory.put",
                reason: "throttled".into(),
            });
        }
        if lock(&self.refusing).contains(&profile.id) {
            return Err(PortError::Permanent {
                stage: "memory.put",
                reason: "item too large".into(),
            });
        }
        let mut map = lock(&self.profiles);
        let current = map.get(&profile.id).map_or(0, |p| p.version);
        if current != expected_version {
            return Err(PortError::Conflict(format!(
                "{} is at version {current}",
                profile.id
            )));
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        map.insert(profile.id.clone(), profile.clone());
        Ok(())
    }

    async fn delete(&self, id: &str) -> PortResult<bool> {
        Ok(lock(&self.profiles).remove(id).is_some())
    }

    /// Segment of a profile: the byte sum of its id modulo `total`; pages of `page_size`.
    async fn scan(
        &self,
        segment: u32,
        total: u32,
        start: Option<String>,
    ) -> PortResult<(Vec<Profile>, Option<String>)> {
        check_scan_segment(segment, total, "memory.scan")?;
        let map = lock(&self.profiles);
        let page: Vec<Profile> = map
            .values()
            .filter(|p| p.id.bytes().map(u32::from).sum::<u32>() % total == segment)
            .filter(|p| start.as_ref().is_none_or(|s| p.id > *s))
            .take(self.page_size.max(1))
            .cloned()
            .collect();
        let next = (page.len() == self.page_size.max(1)).then(|| page[page.len() - 1].id.clone());
        Ok((page, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The store never awaits anything, so one poll completes it.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory store never waits"),
        }
    }

    #[test]
    fn version_check_and_scan_pages_cover_every_profile_once() {
        let store = MemoryProfileStore {
            page_size: 3,
            ..Default::default()
        };
        let new = |id: String| Profile {
            version: 1,
            ..Profile::new(id)
        };
        for i in 0..20 {
            block_on(store.put(&new(format!("u-{i}")), 0)).unwrap();
        }
        assert!(matches!(
            block_on(store.put(&new("u-1".into()), 0)),
            Err(PortError::Conflict(_))
        ));
        let mut seen = Vec::new();
        for segment in 0..4 {
            let mut cursor = None;
            loop {
                let (page, next) = block_on(store.scan(segment, 4, cursor)).unwrap();
                assert!(page.len() <= 3);
                seen.extend(page.into_iter().map(|p| p.id));
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        seen.sort();
        let mut all: Vec<String> = (0..20).map(|i| format!("u-{i}")).collect();
        all.sort();
        assert_eq!(seen, all);
        assert_eq!(store.puts(), 20);
        assert!(block_on(store.scan(4, 4, None)).is_err());
    }

    #[test]
    fn claims_are_granted_to_their_origin_again_and_held_against_others() {
        let claims = MemoryClaims::default();
        let later = Utc::now() + chrono::Duration::days(1);
        assert_eq!(
            block_on(claims.claim("e1", "s:1", later)).unwrap(),
            Claim::Granted
        );
        assert_eq!(
            block_on(claims.claim("e1", "s:1", later)).unwrap(),
            Claim::Granted
        );
        assert_eq!(
            block_on(claims.claim("e1", "s:2", later)).unwrap(),
            Claim::Held
        );
        block_on(claims.release("e1", "s:2")).unwrap();
        assert_eq!(
            block_on(claims.claim("e1", "s:2", later)).unwrap(),
            Claim::Held
        );
        block_on(claims.release("e1", "s:1")).unwrap();
        assert_eq!(
            block_on(claims.claim("e1", "s:2", later)).unwrap(),
            Claim::Granted
        );
        let past = Utc::now() - chrono::Duration::seconds(1);
        block_on(claims.claim("e2", "s:1", past)).unwrap();
        assert_eq!(
            block_on(claims.claim("e2", "s:3", later)).unwrap(),
            Claim::Granted,
            "expired"
        );
    }
}
