//! In-memory ports for unit tests, benchmarks and local experiments, with the same contracts
//! as the DynamoDB adapters:
//! - [`MemoryProfileStore`]: the optimistic version check and a paginated parallel scan;
//! - [`MemoryClaims`]: event-id claims granted again to their own origin, expiring;
//! - [`MemoryLedger`]: keyed records with conditional create, compare-and-set, counters
//!   (expiry is stored, not simulated: handlers under test run on fixed clocks);
//! - [`MemoryBus`], [`MemoryDeadLetters`]: keep what they receive; fail while `down` is set;
//! - [`MemoryMetrics`]: keeps the EMF lines written, and reads them back;
//! - [`environment`]: variables for `Settings::from_lookup`, without touching the process's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::attribution::{add_to_record, report_pk};
use crate::metrics::{MetricSink, Metrics};
use crate::ports::{
    check_scan_segment, BusEvent, Claim, DeadLetter, DeadLetterSink, Erasures, EventBus,
    EventClaims, Ledger, PortError, PortResult, ProfileStore,
};
use crate::profile::{Profile, Tally};

/// An environment holding `pairs`, read like `std::env::var` (what every function's
/// `Settings::from_lookup` takes).
pub fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// The bus: records what is published (clones share it); every publish fails while `down`.
#[derive(Debug, Default, Clone)]
pub struct MemoryBus {
    pub published: Arc<Mutex<Vec<BusEvent>>>,
    pub down: Arc<AtomicBool>,
}

impl MemoryBus {
    /// What was published since the last take.
    pub fn take(&self) -> Vec<BusEvent> {
        std::mem::take(&mut *lock(&self.published))
    }
}

fn down(flag: &AtomicBool, stage: &'static str) -> PortResult<()> {
    if flag.load(Ordering::SeqCst) {
        return Err(PortError::Transient {
            stage,
            reason: "down".into(),
        });
    }
    Ok(())
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[BusEvent]) -> Vec<PortResult<()>> {
        if let Err(e) = down(&self.down, "memory.bus") {
            return vec![Err(e); events.len()];
        }
        lock(&self.published).extend_from_slice(events);
        vec![Ok(()); events.len()]
    }
}

/// The dead-letter sink: keeps the letters; every send fails while `down`.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    pub letters: Mutex<Vec<DeadLetter>>,
    pub down: AtomicBool,
}

impl MemoryDeadLetters {
    pub fn len(&self) -> usize {
        lock(&self.letters).len()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.letters).is_empty()
    }
}

#[async_trait]
impl DeadLetterSink for MemoryDeadLetters {
    async fn send(&self, letters: &[DeadLetter]) -> PortResult<()> {
        down(&self.down, "memory.dead_letters")?;
        lock(&self.letters).extend_from_slice(letters);
        Ok(())
    }
}

/// The metric sink: keeps every EMF line (clones share them).
#[derive(Debug, Default, Clone)]
pub struct MemoryMetrics {
    lines: Arc<Mutex<Vec<String>>>,
}

impl MetricSink for MemoryMetrics {
    fn write(&self, line: String) {
        lock(&self.lines).push(line);
    }
}

impl MemoryMetrics {
    /// `Metrics` of stage `test` written here.
    pub fn metrics(&self) -> Metrics {
        Metrics::new(Arc::new(self.clone()), "test")
    }

    /// Every line written, parsed.
    pub fn documents(&self) -> Vec<serde_json::Value> {
        lock(&self.lines)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    /// The sum of `name`'s values over the lines whose dimensions include `dims`.
    pub fn sum(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        self.matching(name, dims).iter().sum()
    }

    /// Every value of `name` (each element of a values array), over lines with `dims`.
    pub fn values(&self, name: &str) -> Vec<f64> {
        self.matching(name, &[])
    }

    fn matching(&self, name: &str, dims: &[(&str, &str)]) -> Vec<f64> {
        let mut out = Vec::new();
        for doc in self.documents() {
            if dims.iter().any(|(k, v)| doc[*k] != *v) {
                continue;
            }
            match &doc[name] {
                serde_json::Value::Array(values) => {
                    out.extend(values.iter().filter_map(serde_json::Value::as_f64));
                }
                v => out.extend(v.as_f64()),
            }
        }
        out
    }
}

/// Event-id claims in a map: `event id → (origin, expires at)`, and erased profile ids.
#[derive(Debug, Default)]
pub struct MemoryClaims {
    pub claims: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
    pub erased: Mutex<HashSet<String>>,
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

    async fn holder(&self, event_id: &str) -> PortResult<Option<String>> {
        self.check()?;
        Ok(lock(&self.claims)
            .get(event_id)
            .filter(|(_, until)| *until > Utc::now())
            .map(|(holder, _)| holder.clone()))
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
    /// Where `put_tallied` adds the campaign report counters (share a ledger's clone).
    pub report: MemoryLedger,
}

impl Default for MemoryProfileStore {
    fn default() -> Self {
        MemoryProfileStore {
            profiles: Mutex::default(),
            puts: AtomicUsize::new(0),
            failing: Mutex::default(),
            refusing: Mutex::default(),
            page_size: 100,
            report: MemoryLedger::default(),
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
        self.put_tallied(profile, expected_version, &[]).await
    }

    async fn put_tallied(
        &self,
        profile: &Profile,
        expected_version: u64,
        tallies: &[Tally],
    ) -> PortResult<()> {
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
        let mut records = lock(&self.report.records);
        for t in tallies {
            let key = (report_pk(&t.campaign), t.group.clone());
            let entry = records.entry(key).or_insert((serde_json::json!({}), None));
            add_to_record(&mut entry.0, t);
        }
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

#[async_trait]
impl Erasures for MemoryClaims {
    async fn is_erased(&self, profile_id: &str) -> PortResult<bool> {
        Ok(lock(&self.erased).contains(profile_id))
    }

    async fn mark_erased(&self, profile_id: &str, _: DateTime<Utc>) -> PortResult<()> {
        lock(&self.erased).insert(profile_id.to_owned());
        Ok(())
    }
}

/// `(pk, sk)` → `(attributes, expiry)`.
type Records = BTreeMap<(String, String), (serde_json::Value, Option<DateTime<Utc>>)>;

/// Ledger records in a map.
/// Clones share their records, so a test keeps a handle on the ledger a handler uses.
#[derive(Debug, Default, Clone)]
pub struct MemoryLedger {
    pub records: std::sync::Arc<Mutex<Records>>,
}

impl MemoryLedger {
    /// Keys of the records whose partition key starts with `pk_prefix`.
    pub fn keys(&self, pk_prefix: &str) -> Vec<(String, String)> {
        lock(&self.records)
            .keys()
            .filter(|k| k.0.starts_with(pk_prefix))
            .cloned()
            .collect()
    }
}

/// Whether `record` holds every attribute of `wanted` with its value.
fn holds(record: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    wanted
        .as_object()
        .is_some_and(|w| w.iter().all(|(k, v)| record.get(k) == Some(v)))
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn claim(
        &self,
        pk: &str,
        sk: &str,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut map = lock(&self.records);
        let key = (pk.to_owned(), sk.to_owned());
        if map.contains_key(&key) {
            return Ok(false);
        }
        map.insert(key, (attrs.clone(), expires_at));
        Ok(true)
    }

    async fn get(&self, pk: &str, sk: &str) -> PortResult<Option<serde_json::Value>> {
        Ok(lock(&self.records)
            .get(&(pk.to_owned(), sk.to_owned()))
            .map(|v| v.0.clone()))
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
    ) -> PortResult<Vec<(String, serde_json::Value)>> {
        Ok(lock(&self.records)
            .iter()
            .filter(|(k, _)| k.0 == pk && k.1.starts_with(sk_prefix))
            .map(|(k, v)| (k.1.clone(), v.0.clone()))
            .collect())
    }

    async fn increment_below(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut map = lock(&self.records);
        let entry = map
            .entry((pk.to_owned(), sk.to_owned()))
            .or_insert((serde_json::json!({"count": 0}), expires_at));
        let count = entry.0["count"].as_u64().unwrap_or(0);
        if count >= limit {
            return Ok(false);
        }
        entry.0["count"] = (count + 1).into();
        Ok(true)
    }

    async fn delete(&self, pk: &str, sk: &str) -> PortResult<()> {
        lock(&self.records).remove(&(pk.to_owned(), sk.to_owned()));
        Ok(())
    }

    async fn replace_if(
        &self,
        pk: &str,
        sk: &str,
        expected: &serde_json::Value,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut map = lock(&self.records);
        match map.get_mut(&(pk.to_owned(), sk.to_owned())) {
            Some(record) if holds(&record.0, expected) || holds(&record.0, attrs) => {
                *record = (attrs.clone(), expires_at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Runs a future over the in-memory ports to completion: they never await anything, so one
/// poll completes it (tests of this crate have no runtime).
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the memory ports never wait"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn compare_and_set_replaces_only_the_expected_record_and_accepts_its_own_retry() {
        let l = MemoryLedger::default();
        let v = |s: &str| serde_json::json!({"state": s, "owner": "a"});
        assert!(
            !block_on(l.replace_if("p", "s", &v("x"), &v("y"), None)).unwrap(),
            "absent"
        );
        assert!(block_on(l.claim("p", "s", &v("x"), None)).unwrap());
        assert!(!block_on(l.claim("p", "s", &v("x"), None)).unwrap());
        assert!(!block_on(l.replace_if("p", "s", &v("z"), &v("y"), None)).unwrap());
        assert!(block_on(l.replace_if("p", "s", &v("x"), &v("y"), None)).unwrap());
        assert!(
            block_on(l.replace_if("p", "s", &v("x"), &v("y"), None)).unwrap(),
            "a retry"
        );
        assert_eq!(block_on(l.get("p", "s")).unwrap(), Some(v("y")));
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
