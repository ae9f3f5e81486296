//! Scheduled segment re-evaluation: time-based segments (`churn_risk`: "last seen more than 30
//! days ago") change without any new event, so an EventBridge schedule (binary `reevaluate`)
//! re-evaluates every profile at the schedule's time.
//!
//! Per run (one `Scheduled Event`, evaluation time = its `time`):
//! - a FULL PASS over the profiles table with a DynamoDB parallel Scan: `total_segments`
//!   segments (`SCAN_TOTAL_SEGMENTS`, default 4) scanned concurrently, each paginated to its
//!   end. No cursor is kept between runs: every run is independent and stateless, so
//!   overlapping runs (a retried invocation, two regions, a manual invoke) are safe — the
//!   conditional writes and deterministic bus event ids make the work idempotent. The cost is
//!   one read of the table per run; keep the schedule rate and the function timeout in step
//!   with the table size (a 1 MB page holds a few hundred profiles).
//! - merged anonymous profiles (`merged_into` set) are skipped.
//! - each profile's segments are evaluated at `max(time, last_seen)` (never before the
//!   profile's own newest event, so a late schedule cannot undo an event-time evaluation).
//!   Only profiles whose membership changed (or whose outbox is marked unpublished) are
//!   written: version bumped, conditional write on the scanned version, then the transitions
//!   are published through [`crate::outbox`] — the same write-then-publish/outbox path as the
//!   Kinesis handler. A version conflict means an event (or another run) wrote first: the
//!   profile is skipped, that writer evaluated it, or the next run will.
//! - per-profile failures are logged and counted; the run goes on. A scan that keeps failing
//!   fails the invocation (the next run starts over).

use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use ember_aws::retry::Backoff;
use ember_core::config::ConfigSource;
use ember_core::metrics::{Metrics, Recorder};
use ember_core::ports::Decided;
use ember_core::ports::{EventBus, PortError, PortResult, ProfileStore};
use ember_core::profile::Profile;
use ember_core::segment::{transitions, RuleSet};
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::handler::count_transitions;
use crate::outbox::{self, as_publish_failure, KeyStats};

/// Default number of parallel scan segments per run.
pub const DEFAULT_TOTAL_SEGMENTS: u32 = 4;
/// Profiles re-evaluated at the same time within one scan page.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Counters of one run, logged at the end (and the binary's response), and its metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunStats {
    pub scanned: usize,
    /// Merged anonymous profiles, not evaluated.
    pub skipped_merged: usize,
    /// Profiles whose membership changed (written).
    pub changed: usize,
    pub writes: usize,
    pub published: usize,
    /// Profiles skipped because someone else wrote first.
    pub conflicts: usize,
    /// Profiles whose write or publish failed (retried by the next run or event).
    pub failed: usize,
    /// Segment entries and exits.
    #[serde(skip)]
    pub metrics: Recorder,
}

impl RunStats {
    fn add(&mut self, o: RunStats) {
        self.metrics.absorb(o.metrics);
        self.scanned += o.scanned;
        self.skipped_merged += o.skipped_merged;
        self.changed += o.changed;
        self.writes += o.writes;
        self.published += o.published;
        self.conflicts += o.conflicts;
        self.failed += o.failed;
    }
}

/// The re-evaluation, generic over the profile store and the bus.
pub struct Reevaluator<S, B> {
    pub store: S,
    pub bus: B,
    /// The segment rules in force (the built-in ones until a configuration is published).
    pub rules: ConfigSource<RuleSet>,
    /// Parallel scan segments per run (≥ 1).
    pub total_segments: u32,
    pub concurrency: usize,
    /// Retries of a failing scan page, and of the outbox write after a publish failure.
    pub backoff: Backoff,
    /// Where each run's metrics are written.
    pub metrics: Metrics,
}

/// Detail type of the bus event a configuration publish sends: its re-evaluation is a
/// backfill.
pub const CONFIG_PUBLISHED: &str = "ConfigPublished";

/// One pass over the table: when, with which rules, and what decided its changes.
struct Pass<'a> {
    at: DateTime<Utc>,
    rules: &'a RuleSet,
    decided: Decided,
}

/// What re-evaluating one profile did.
enum Outcome {
    Unchanged,
    /// Written, with the segment entries and exits it published.
    Written(KeyStats, Recorder),
}

impl<S: ProfileStore, B: EventBus> Reevaluator<S, B> {
    /// Builds the re-evaluation with the embedded rules.
    pub fn new(store: S, bus: B, total_segments: u32) -> Result<Self, ember_core::CoreError> {
        Ok(Reevaluator {
            store,
            bus,
            rules: ConfigSource::fixed(RuleSet::embedded()?),
            total_segments: total_segments.max(1),
            concurrency: DEFAULT_CONCURRENCY,
            backoff: Backoff::new(5, Duration::from_millis(50), Duration::from_secs(2)),
            metrics: Metrics::stdout("local"),
        })
    }

    /// Handles one `Scheduled Event`: a full pass at the event's `time` (the current time if
    /// the event carries none).
    pub async fn handle(
        &self,
        event: &EventBridgeEvent<serde_json::Value>,
        request_id: &str,
    ) -> PortResult<RunStats> {
        // A publish's backfill evaluates at the publish time it carries (the publisher's
        // clock, which the local runner simulates), the schedule at the event's time.
        let published_at = (event.detail_type == CONFIG_PUBLISHED)
            .then(|| event.detail["at"].as_str())
            .flatten()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let at = published_at.or(event.time).unwrap_or_else(Utc::now);
        let span = tracing::info_span!("reevaluate", request_id, at = %at.to_rfc3339());
        let started = std::time::Instant::now();
        let backfill = event.detail_type == CONFIG_PUBLISHED;
        // The version announced, even if this sandbox's cache still holds an older one.
        let version = event.detail["version"].as_u64().filter(|_| backfill);
        let mut result = self
            .pass(at, backfill, version.unwrap_or(0))
            .instrument(span.clone())
            .await;
        if let Ok(s) = &mut result {
            self.metrics
                .flush(std::mem::take(&mut s.metrics), Utc::now());
        }
        let _entered = span.enter();
        match &result {
            Ok(s) => tracing::info!(
                scanned = s.scanned,
                skipped_merged = s.skipped_merged,
                changed = s.changed,
                writes = s.writes,
                published = s.published,
                conflicts = s.conflicts,
                failed = s.failed,
                latency_ms = started.elapsed().as_millis() as u64,
                "re-evaluation done"
            ),
            Err(e) => tracing::error!(stage = "profile.scan", error = %e, "re-evaluation failed"),
        }
        result
    }

    /// One scheduled pass over the table at `at`.
    pub async fn run(&self, at: DateTime<Utc>) -> PortResult<RunStats> {
        self.pass(at, false, 0).await
    }

    /// One full pass over the table at `at` with the rules in force (version `at_least` or
    /// newer), the scan segments concurrently; `backfill` marks its transitions (a
    /// configuration publish started it).
    pub async fn pass(
        &self,
        at: DateTime<Utc>,
        backfill: bool,
        at_least: u64,
    ) -> PortResult<RunStats> {
        let active = self.rules.at_least(at_least).await?;
        let pass = Pass {
            at,
            rules: &active.config,
            decided: Decided {
                config_version: active.version,
                backfill,
            },
        };
        let total = self.total_segments.max(1);
        let results: Vec<PortResult<RunStats>> = stream::iter(0..total)
            .map(|segment| self.run_segment(segment, total, &pass))
            .buffer_unordered(total as usize)
            .collect()
            .await;
        let mut stats = RunStats::default();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(s) => stats.add(s),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Scans segment `segment` of `total` to its end, re-evaluating each page.
    async fn run_segment(&self, segment: u32, total: u32, pass: &Pass<'_>) -> PortResult<RunStats> {
        let mut stats = RunStats::default();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self.scan_page(segment, total, cursor.clone()).await?;
            stats.scanned += page.len();
            let (merged, live): (Vec<Profile>, Vec<Profile>) =
                page.into_iter().partition(|p| p.merged_into.is_some());
            stats.skipped_merged += merged.len();
            let outcomes: Vec<(String, PortResult<Outcome>)> = stream::iter(live)
                .map(|p| async move {
                    let id = p.id.clone();
                    (id, self.reevaluate(p, pass).await)
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            for (id, outcome) in outcomes {
                match outcome {
                    Ok(Outcome::Unchanged) => {}
                    Ok(Outcome::Written(s, counted)) => {
                        stats.metrics.absorb(counted);
                        stats.changed += 1;
                        stats.writes += s.writes;
                        stats.published += s.published;
                    }
                    Err(PortError::Conflict(_)) => {
                        tracing::debug!(profile = %ember_core::privacy::masked(&id), "written meanwhile, skipped");
                        stats.conflicts += 1;
                    }
                    Err(e) => {
                        tracing::warn!(profile = %ember_core::privacy::masked(&id), error = %e, "re-evaluation of the profile failed");
                        stats.failed += 1;
                    }
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(stats),
            }
        }
    }

    /// One scan page, retrying transient failures with backoff.
    async fn scan_page(
        &self,
        segment: u32,
        total: u32,
        cursor: Option<String>,
    ) -> PortResult<(Vec<Profile>, Option<String>)> {
        let mut attempt = 0;
        loop {
            match self.store.scan(segment, total, cursor.clone()).await {
                Err(e) if e.is_retryable() && self.backoff.can_retry(attempt) => {
                    tracing::warn!(segment, total, attempt, error = %e, "scan page failed, retrying");
                    self.backoff.wait(attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Re-evaluates one scanned profile at `at`; writes and publishes only on a change.
    async fn reevaluate(&self, mut profile: Profile, pass: &Pass<'_>) -> PortResult<Outcome> {
        if profile.segments_version > pass.decided.config_version {
            // A newer version's pass (or enrich) set these segments: not evaluated backwards.
            return Ok(Outcome::Unchanged);
        }
        let at = profile.last_seen.map_or(pass.at, |seen| pass.at.max(seen));
        let segments = pass.rules.evaluate(&profile, at);
        // Changes held for the stream are the Kinesis handler's to settle.
        if segments == profile.segments && !profile.outbox.has_unpublished() {
            return Ok(Outcome::Unchanged);
        }
        let mut stats = KeyStats::default();
        let expected = profile.version;
        let pending = profile.outbox.len();
        let settled = outbox::settle(&self.bus, &mut profile, None, &mut stats).await;
        if segments == profile.segments && profile.outbox.len() == pending {
            // Only an outbox, and the bus still fails: nothing to write.
            return match settled.error {
                None => Ok(Outcome::Unchanged),
                Some(e) => Err(as_publish_failure(e)),
            };
        }
        let version = expected + 1;
        profile.version = version;
        profile.segments_version = pass.decided.config_version;
        let publish = transitions(
            &profile.id,
            &profile.segments,
            &segments,
            at,
            version,
            None,
            pass.decided,
        );
        profile.segments = segments;
        let mut counted = Recorder::default();
        count_transitions(&mut counted, &publish);
        outbox::write_then_publish(
            outbox::Ports {
                store: &self.store,
                bus: &self.bus,
                backoff: &self.backoff,
            },
            profile,
            expected,
            publish,
            settled.error,
            &mut stats,
        )
        .await?;
        Ok(Outcome::Written(stats, counted))
    }
}

#[cfg(test)]
mod tests {
    //! The re-evaluation against in-memory ports with a paginating parallel scan (the
    //! integration test in `tests/tests/reevaluate.rs` uses DynamoDB and EventBridge).

    use std::sync::atomic::Ordering;

    use async_trait::async_trait;
    use chrono::TimeZone;
    use ember_core::ports::BusEvent;

    use super::*;

    use crate::testkit::{memory_store, MemoryBus, MemoryStore};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn repeat_buyer(id: &str, days_ago: i64) -> Profile {
        let mut p = Profile::new(id);
        p.version = 3;
        p.purchase_count = 2;
        p.last_seen = Some(now() - chrono::Duration::days(days_ago));
        p.last_purchase_at = p.last_seen;
        p
    }

    fn reevaluator(profiles: Vec<Profile>) -> Reevaluator<MemoryStore, MemoryBus> {
        let store = memory_store();
        for p in profiles {
            store.profiles.lock().unwrap().insert(p.id.clone(), p);
        }
        let mut r = Reevaluator::new(store, MemoryBus::default(), 3).unwrap();
        r.backoff = Backoff::new(2, Duration::from_millis(1), Duration::from_millis(2));
        r
    }

    fn stored(r: &Reevaluator<MemoryStore, MemoryBus>, id: &str) -> Profile {
        r.store.profiles.lock().unwrap()[id].clone()
    }

    #[tokio::test]
    async fn churners_enter_churn_risk_once_and_unchanged_profiles_are_not_rewritten() {
        let mut profiles: Vec<Profile> = (0..7)
            .map(|i| repeat_buyer(&format!("churner-{i}"), 40))
            .collect();
        profiles.push(repeat_buyer("recent", 3));
        let mut merged = repeat_buyer("anon:merged", 40);
        merged.merged_into = Some("someone".into());
        profiles.push(merged);
        let r = reevaluator(profiles);

        let stats = r.run(now()).await.unwrap();
        assert_eq!(stats.scanned, 9);
        assert_eq!(stats.skipped_merged, 1);
        assert_eq!(stats.changed, 7);
        assert_eq!(stats.published, 7);
        // Two writes per changed profile: the transitions are stored with it, then cleared
        // once published (a crash in between leaves them for the next run to publish).
        assert_eq!(r.store.puts.load(Ordering::SeqCst), 14);
        for i in 0..7 {
            let p = stored(&r, &format!("churner-{i}"));
            assert!(p.segments.contains("churn_risk"), "{:?}", p.segments);
            assert!(p.outbox.is_empty());
            assert_eq!(p.version, 5);
        }
        assert_eq!(stored(&r, "recent").version, 3, "unchanged: not rewritten");
        assert!(stored(&r, "anon:merged").segments.is_empty());
        let published = r.bus.published.lock().unwrap().clone();
        let BusEvent::SegmentEntered(c) = &published[0] else {
            panic!("{published:?}")
        };
        assert_eq!(c.segment, "churn_risk");
        assert_eq!(c.at, now());
        assert_eq!(c.id, format!("{}:churn_risk:entered:4", c.profile_id));

        // A second run at the same time changes and publishes nothing.
        let again = r.run(now()).await.unwrap();
        assert_eq!((again.changed, again.published, again.writes), (0, 0, 0));
        assert_eq!(r.store.puts.load(Ordering::SeqCst), 14);
    }

    #[tokio::test]
    async fn a_publish_backfills_with_the_announced_version_and_older_rules_never_undo_it() {
        use ember_core::config::{ConfigDoc, ConfigSource, ConfigStore};
        use ember_core::memory::MemoryLedger;
        let ledger = MemoryLedger::default();
        let store = ConfigStore::new(std::sync::Arc::new(ledger.clone()));
        let mut r = reevaluator(vec![repeat_buyer("fan", 3)]);
        // Cached for an hour: only the announcement makes this sandbox read the new version.
        r.rules = ConfigSource::stored(
            store.clone(),
            Duration::from_secs(3600),
            RuleSet::embedded().unwrap(),
            Box::new(|doc: &ConfigDoc| RuleSet::from_doc(&doc.segments)),
        );
        assert_eq!(r.run(now()).await.unwrap().changed, 0, "version 0 caches");
        let doc = ConfigDoc {
            segments: serde_json::json!({"segments": [
                {"name": "buyers", "when": {"trait": "purchase_count", "gte": 2}}]}),
            campaigns: serde_json::Value::Null,
            templates: Default::default(),
            catalog: serde_json::Value::Null,
        };
        store.publish(&doc, 0, "", now()).await.unwrap();
        let announced: EventBridgeEvent<serde_json::Value> =
            serde_json::from_value(serde_json::json!({
            "version": "0", "id": "e-1", "detail-type": CONFIG_PUBLISHED, "source": "ember.api",
            "account": "1", "time": now(), "region": "us-east-1", "resources": [],
            "detail": {"id": "config:1", "version": 1, "based_on": 0, "at": now()}}))
            .unwrap();
        let stats = r.handle(&announced, "req").await.unwrap();
        assert_eq!(stats.changed, 1);
        let fan = stored(&r, "fan");
        assert_eq!((fan.segments_version, fan.segments.len()), (1, 1));
        let published = r.bus.take();
        let [BusEvent::SegmentEntered(c)] = &published[..] else {
            panic!("{published:?}")
        };
        assert_eq!(
            (c.segment.as_str(), c.config_version, c.backfill),
            ("buyers", 1, true)
        );

        // A sandbox still on the built-in rules leaves the backfilled segments alone.
        let old = reevaluator(vec![fan]);
        let stats = old.run(now()).await.unwrap();
        assert_eq!(stats.changed, 0);
        assert!(stored(&old, "fan").segments.contains("buyers"));
        assert!(old.bus.take().is_empty());
    }

    #[tokio::test]
    async fn leaving_a_segment_by_time_publishes_the_exit() {
        // In churn_risk, then "seen" again by an event whose evaluation kept the stale set.
        let mut p = repeat_buyer("back", 2);
        p.segments.insert("churn_risk".into());
        let r = reevaluator(vec![p]);
        let stats = r.run(now()).await.unwrap();
        assert_eq!(stats.changed, 1);
        assert!(!stored(&r, "back").segments.contains("churn_risk"));
        let published = r.bus.published.lock().unwrap().clone();
        assert!(published
            .iter()
            .any(|e| matches!(e, BusEvent::SegmentExited(c) if c.segment == "churn_risk")));
    }

    #[tokio::test]
    async fn a_failing_bus_keeps_the_transitions_in_the_outbox_for_the_next_run() {
        let r = reevaluator(vec![repeat_buyer("c", 40)]);
        r.bus.down.store(true, Ordering::SeqCst);
        let stats = r.run(now()).await.unwrap();
        assert_eq!(stats.failed, 1);
        let p = stored(&r, "c");
        assert!(p.segments.contains("churn_risk"));
        assert_eq!(p.outbox.len(), 1, "kept for the next run");

        r.bus.down.store(false, Ordering::SeqCst);
        let stats = r.run(now()).await.unwrap();
        assert_eq!((stats.changed, stats.published), (1, 1));
        let p = stored(&r, "c");
        assert!(p.outbox.is_empty());
        let published = r.bus.published.lock().unwrap().clone();
        assert_eq!(published.len(), 1);
        let again = r.run(now()).await.unwrap();
        assert_eq!((again.changed, again.published), (0, 0));
    }

    #[tokio::test]
    async fn changes_held_for_the_stream_are_neither_republished_nor_dropped() {
        use ember_core::profile::{Changes, Outbox};
        let mut p = repeat_buyer("c", 40);
        let stream = ember_core::segment::transitions(
            "c",
            &Default::default(),
            &["vip".into()].into(),
            now(),
            3,
            Some("e-1"),
            Decided::default(),
        );
        p.outbox = Outbox {
            changes: Changes::of(&stream, 3),
            events: Vec::new(),
            by_stream: true,
        };
        let held = p.outbox.clone();
        let r = reevaluator(vec![p]);

        // The bus fails: the schedule's entry waits beside the held changes.
        r.bus.down.store(true, Ordering::SeqCst);
        assert_eq!(r.run(now()).await.unwrap().failed, 1);
        let p = stored(&r, "c");
        assert_eq!(p.outbox.changes, held.changes);
        assert!(p.outbox.by_stream);
        assert_eq!(p.outbox.events.len(), 1);

        r.bus.down.store(false, Ordering::SeqCst);
        let stats = r.run(now()).await.unwrap();
        assert_eq!((stats.changed, stats.published), (1, 1));
        let published = r.bus.published.lock().unwrap().clone();
        assert!(
            matches!(&published[..], [BusEvent::SegmentEntered(c)] if c.segment == "churn_risk"),
            "{published:?}"
        );
        let p = stored(&r, "c");
        assert_eq!(p.outbox, held, "only the stream settles its changes");
    }

    #[tokio::test]
    async fn a_concurrent_write_wins_and_the_profile_is_skipped() {
        struct Racing(MemoryStore);
        #[async_trait]
        impl ProfileStore for Racing {
            async fn get(&self, id: &str) -> PortResult<Option<Profile>> {
                self.0.get(id).await
            }
            async fn put(&self, _: &Profile, _: u64) -> PortResult<()> {
                Err(PortError::Conflict("an event wrote first".into()))
            }
            async fn put_tallied(
                &self,
                p: &Profile,
                v: u64,
                _: &[ember_core::profile::Tally],
            ) -> PortResult<()> {
                self.put(p, v).await
            }
            async fn delete(&self, id: &str) -> PortResult<bool> {
                self.0.delete(id).await
            }
            async fn scan(
                &self,
                s: u32,
                t: u32,
                c: Option<String>,
            ) -> PortResult<(Vec<Profile>, Option<String>)> {
                self.0.scan(s, t, c).await
            }
        }
        let inner = memory_store();
        inner
            .profiles
            .lock()
            .unwrap()
            .insert("c".into(), repeat_buyer("c", 40));
        let r = Reevaluator::new(Racing(inner), MemoryBus::default(), 1).unwrap();
        let stats = r.run(now()).await.unwrap();
        assert_eq!((stats.conflicts, stats.failed, stats.published), (1, 0, 0));
        assert!(r.bus.published.lock().unwrap().is_empty());
    }
}
