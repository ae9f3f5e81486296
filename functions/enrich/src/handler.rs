//! The Kinesis batch handler, generic over the ports it needs.
//!
//! Per batch:
//! 1. every record is decoded, validated and enriched (`ember_core::enrich::decode`); records
//!    that cannot be are sent to the dead-letter sink with every problem listed, and count as
//!    handled (they are not retried). If the dead-letter send fails, those records are failed.
//! 2. valid events are grouped by profile key, keeping stream order per key. Anonymous
//!    profiles are processed first (so an `identify` later in the batch merges their newest
//!    state), then identified ones; distinct keys run concurrently (bounded).
//! 3. per key: read the profile once, publish its pending outbox, fold every event
//!    (duplicates skipped), merge anonymous profiles on `identify`, evaluate segments, write
//!    ONCE with the optimistic version check (on conflict: re-read and refold, bounded), then
//!    publish the segment and cart events. Events that cannot be published are stored in the
//!    profile's outbox with a second conditional write, and the key's records are failed so
//!    Lambda retries; the retry publishes the outbox first. While the outbox still cannot be
//!    published, new events are folded anyway and queued behind it in the same single write.
//!    A replay therefore never publishes an event twice from a successful write, and nothing
//!    is lost when EventBridge fails.
//! 4. after a failure for a key, the key's later records in the batch are failed too
//!    ([`KinesisBatch`] keeps that rule); other keys are unaffected.
//!
//! Known limits: bus events are computed and written in one step and published right after;
//! if the process dies between the write and `PutEvents` (e.g. a Lambda timeout) those events
//! are not re-sent, because the replayed records are then duplicates. Keep the function's
//! timeout well above the batch latency. Events still sent with only an anonymous id after
//! that id was merged are folded into the (merged) anonymous profile.
//!
//! Segment evaluation time: the newest `occurred_at` among the key's events in the batch,
//! capped at the current time. Evaluating at event time (not at the wall clock) keeps a replay
//! of the same batch deterministic; time-driven changes (cart abandonment) are re-checked by
//! the email function's timers via `CartUpdated`; time-based segments (`churn_risk`) by the
//! scheduled re-evaluation ([`crate::reevaluate`], binary `reevaluate`).
//!
//! The write-then-publish/outbox step is [`crate::outbox`], shared with the re-evaluation.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use base64::Engine;
use chrono::{DateTime, Utc};
use ember_aws::batch::{BatchRecord, KinesisBatch};
use ember_aws::retry::Backoff;
use ember_core::enrich::{EnrichedEvent, Fact};
use ember_core::error::{describe, Problem};
use ember_core::event::ANON_PREFIX;
use ember_core::fold::{Applied, FoldConfig};
use ember_core::ports::{
    BusEvent, CartChange, DeadLetter, DeadLetterSink, EventBus, PortError, PortResult, ProfileStore,
};
use ember_core::profile::Profile;
use ember_core::schema::Registry;
/// Re-exported: the segment diff the handler publishes (`ember_core::segment::transitions`).
pub use ember_core::segment::transitions;
use ember_core::segment::RuleSet;
use ember_core::EventType;
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::outbox::{self, as_publish_failure, KeyStats, Written};

/// How many profile keys are processed at the same time.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Attempts per key when the optimistic version check fails (someone else wrote first).
pub const DEFAULT_CONFLICT_ATTEMPTS: u32 = 5;

/// Everything the handler needs, built once per process.
pub struct Enricher<S, B, D> {
    pub store: S,
    pub bus: B,
    pub dead_letters: D,
    pub registry: Registry,
    pub rules: RuleSet,
    pub fold: FoldConfig,
    pub concurrency: usize,
    /// Backoff between conflict retries of one key (attempts = `max_attempts`).
    pub conflict_backoff: Backoff,
}

/// Counters of one batch, logged at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub records: usize,
    pub users: usize,
    pub dead_letters: usize,
    pub writes: usize,
    pub published: usize,
    /// Optimistic-lock conflicts that forced a re-read and refold.
    pub conflicts: usize,
    pub failed_records: usize,
}

/// A key failed; the writes and publishes it did before failing still count.
#[derive(Debug)]
struct KeyFailure {
    error: PortError,
    stats: KeyStats,
}

impl<S, B, D> Enricher<S, B, D>
where
    S: ProfileStore,
    B: EventBus,
    D: DeadLetterSink,
{
    /// Builds the handler with the embedded schemas and rules.
    pub fn new(
        store: S,
        bus: B,
        dead_letters: D,
        fold: FoldConfig,
    ) -> Result<Self, ember_core::CoreError> {
        Ok(Enricher {
            store,
            bus,
            dead_letters,
            registry: Registry::embedded()?,
            rules: RuleSet::embedded()?,
            fold,
            concurrency: DEFAULT_CONCURRENCY,
            conflict_backoff: Backoff::new(
                DEFAULT_CONFLICT_ATTEMPTS,
                Duration::from_millis(20),
                Duration::from_millis(500),
            ),
        })
    }

    /// Handles one Kinesis batch; returns the partial batch failures.
    pub async fn handle(&self, event: &KinesisEvent, request_id: &str) -> KinesisEventResponse {
        let span = tracing::info_span!("enrich", request_id);
        let (response, stats, elapsed) = self.process(event).instrument(span.clone()).await;
        let _entered = span.enter();
        tracing::info!(
            records = stats.records,
            users = stats.users,
            dead_letters = stats.dead_letters,
            writes = stats.writes,
            published = stats.published,
            conflicts = stats.conflicts,
            failed_records = stats.failed_records,
            latency_ms = elapsed.as_millis() as u64,
            "batch processed"
        );
        response
    }

    /// Like [`Self::handle`], also returning the counters and the time taken.
    pub async fn process(
        &self,
        event: &KinesisEvent,
    ) -> (KinesisEventResponse, BatchStats, Duration) {
        let started = Instant::now();
        let mut batch = KinesisBatch::new(event);
        let mut stats = BatchStats {
            records: batch.len(),
            ..BatchStats::default()
        };

        // 1. Decode; collect dead letters.
        let mut letters: Vec<(usize, DeadLetter)> = Vec::new();
        let mut groups: Vec<(String, Vec<(usize, EnrichedEvent)>)> = Vec::new();
        // Keyed by the profile key as decoded (borrowed from the record where it can be).
        let mut group_of: foldhash::HashMap<Cow<'_, str>, usize> = Default::default();
        for (record, decoded) in batch.decode(|r| decode(r, &self.registry)) {
            match decoded {
                Ok((key, event)) => {
                    let g = *group_of.entry(key).or_insert_with_key(|key| {
                        groups.push((key.to_string(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push((record.index, event));
                }
                Err(problems) => letters.push((record.index, dead_letter(&record, &problems))),
            }
        }
        for (key, events) in &groups {
            let name: Arc<str> = Arc::from(key.as_str());
            for (index, _) in events {
                batch.set_group(*index, Arc::clone(&name));
            }
        }
        if !letters.is_empty() {
            for (index, letter) in &letters {
                tracing::warn!(origin = %letter.origin, stage = %letter.stage, index, "record dead-lettered");
            }
            let only: Vec<DeadLetter> = letters.iter().map(|(_, l)| l.clone()).collect();
            match self.dead_letters.send(&only).await {
                Ok(()) => {
                    stats.dead_letters = letters.len();
                    for (index, _) in &letters {
                        batch.handled(*index);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, count = letters.len(), "dead-letter send failed");
                    for (index, _) in &letters {
                        batch.fail(*index, format!("dead-letter send failed: {e}"));
                    }
                }
            }
        }

        // 2. Anonymous profiles first, then identified ones; keys concurrently.
        stats.users = groups.len();
        let (anon, known): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .partition(|(key, _)| key.starts_with(ANON_PREFIX));
        let mut failed_anon: HashSet<String> = HashSet::new();
        // Written profiles whose bus events are published together after both phases.
        let mut written: Vec<(String, Vec<usize>, Written)> = Vec::new();
        for (n, phase) in [anon, known].into_iter().enumerate() {
            let (phase, blocked): (Vec<_>, Vec<_>) = phase.into_iter().partition(|(_, events)| {
                n == 0
                    || !events
                        .iter()
                        .any(|(_, e)| identifies_one_of(e, &failed_anon))
            });
            // An identify must not merge an anonymous profile whose own records of this batch
            // failed: they would be folded after the merge and never reach the user.
            for (key, events) in blocked {
                tracing::warn!(profile_id = %key, "identify waits for its anonymous profile");
                for (index, _) in &events {
                    batch.fail(
                        *index,
                        "the anonymous profile it identifies failed in this batch",
                    );
                }
            }
            // The stream runs over indices into `phase`: a closure taking the groups
            // themselves, whose events borrow from the batch, trips rustc's check that the
            // handler's future is `Send` (see `send_check`).
            let results: Vec<_> = stream::iter(0..phase.len())
                .map(|i| {
                    let (key, events) = &phase[i];
                    async move { (i, self.process_key(key, events).await) }
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            for (i, result) in results {
                let (key, events) = &phase[i];
                match result {
                    Ok((s, w)) => {
                        stats.writes += s.writes;
                        stats.published += s.published;
                        stats.conflicts += s.conflicts;
                        let indices = events.iter().map(|(index, _)| *index);
                        match w {
                            Some(w) if !w.events.is_empty() => {
                                written.push((key.clone(), indices.collect(), w));
                            }
                            _ => indices.for_each(|index| batch.succeed(index)),
                        }
                    }
                    Err(KeyFailure { error, stats: s }) => {
                        stats.writes += s.writes;
                        stats.published += s.published;
                        stats.conflicts += s.conflicts;
                        tracing::warn!(profile_id = %key, error = %error, records = events.len(), "profile processing failed");
                        if n == 0 {
                            failed_anon.insert(key.clone());
                        }
                        for (index, _) in events {
                            batch.fail(*index, error.to_string());
                        }
                    }
                }
            }
        }

        // 3. One publish for the whole batch (≤10 entries per PutEvents call).
        let (owners, profiles): (Vec<_>, Vec<_>) = written
            .into_iter()
            .map(|(key, indices, w)| ((key, indices), w))
            .unzip();
        let ports = outbox::Ports {
            store: &self.store,
            bus: &self.bus,
            backoff: &self.conflict_backoff,
        };
        let published = outbox::publish_written(ports, profiles, self.concurrency).await;
        for ((key, indices), (result, s)) in owners.into_iter().zip(published) {
            stats.writes += s.writes;
            stats.published += s.published;
            match result {
                Ok(()) => indices.into_iter().for_each(|index| batch.succeed(index)),
                Err(error) => {
                    tracing::warn!(profile_id = %key, error = %error, records = indices.len(), "bus events kept in the outbox; records retried");
                    for index in indices {
                        batch.fail(index, error.to_string());
                    }
                }
            }
        }

        let response = batch.response();
        stats.failed_records = response.batch_item_failures.len();
        (response, stats, started.elapsed())
    }

    /// Processes one key's events, retrying the whole read-fold-write on version conflicts.
    async fn process_key(
        &self,
        key: &str,
        events: &[(usize, EnrichedEvent<'_>)],
    ) -> Result<(KeyStats, Option<Written>), KeyFailure> {
        let mut total = KeyStats::default();
        let mut attempt = 0;
        loop {
            match self.try_key(key, events, &mut total).await {
                Ok(written) => return Ok((total, written)),
                Err(PortError::Conflict(reason)) if self.conflict_backoff.can_retry(attempt) => {
                    tracing::debug!(profile_id = %key, attempt, %reason, "version conflict, refolding");
                    total.conflicts += 1;
                    self.conflict_backoff.wait(attempt).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(KeyFailure {
                        error,
                        stats: total,
                    })
                }
            }
        }
    }

    /// One read-fold-write round for a key; returns the written profile with the bus events
    /// still to publish (none for a pure replay). `Conflict` means "re-read and retry".
    async fn try_key(
        &self,
        key: &str,
        events: &[(usize, EnrichedEvent<'_>)],
        stats: &mut KeyStats,
    ) -> PortResult<Option<Written>> {
        let stored = self.store.get(key).await?;
        let expected = stored.as_ref().map_or(0, |p| p.version);
        let mut profile = stored.unwrap_or_else(|| Profile::new(key));
        let before_segments = profile.segments.clone();
        let before_cart = profile.cart.clone();

        // Events a previous attempt stored but could not publish go out first. Those that
        // still fail stay in the outbox, ahead of anything this batch adds.
        let pending = profile.outbox.len();
        let outbox_error = outbox::publish_pending(&self.bus, &mut profile, stats).await;

        let mut changed = false;
        let mut last_event_id: Option<&str> = None;
        for (_, event) in events {
            let applied = profile.apply(event, &self.fold);
            if applied == Applied::Duplicate {
                continue;
            }
            changed = true;
            last_event_id = Some(event.header.event_id.as_ref());
            if event.header.event_type == EventType::Identify {
                if let Some(anon_id) = identify_anonymous_id(event) {
                    self.merge_anonymous(&mut profile, anon_id, stats).await?;
                }
            }
        }
        let outbox_unchanged = profile.outbox.len() == pending;
        if !changed && outbox_unchanged {
            // A pure replay (nothing to write), or the bus still fails (outbox kept as is).
            return match outbox_error {
                None => Ok(None),
                Some(e) => Err(as_publish_failure(e)),
            };
        }

        let version = expected + 1;
        profile.version = version;
        let mut publish = Vec::new();
        if changed {
            let at = evaluation_time(events, Utc::now());
            let segments = self.rules.evaluate(&profile, at);
            publish = transitions(
                &profile.id,
                &before_segments,
                &segments,
                at,
                version,
                last_event_id,
            );
            profile.segments = segments;
            if profile.cart != before_cart {
                publish.push(cart_updated(&profile, at));
            }
        }
        outbox::write(&self.store, profile, expected, publish, outbox_error, stats)
            .await
            .map(Some)
    }

    /// Merges `anon:<anon_id>` into `profile` and marks the anonymous profile merged. The mark
    /// is written before the user profile, so a failure in between only repeats the merge.
    async fn merge_anonymous(
        &self,
        profile: &mut Profile,
        anon_id: &str,
        stats: &mut KeyStats,
    ) -> PortResult<()> {
        let anon_key = format!("{ANON_PREFIX}{anon_id}");
        let Some(mut anon) = self.store.get(&anon_key).await? else {
            profile.anonymous_ids.insert(anon_key);
            return Ok(());
        };
        match anon.merged_into.as_deref() {
            Some(into) if into != profile.id => {
                tracing::warn!(profile_id = %profile.id, anonymous = %anon_key, merged_into = %into, "anonymous profile already merged elsewhere");
                profile.anonymous_ids.insert(anon_key);
                Ok(())
            }
            Some(_) => {
                profile.merge_anonymous(&anon);
                Ok(())
            }
            None => {
                profile.merge_anonymous(&anon);
                let expected = anon.version;
                anon.merged_into = Some(profile.id.clone());
                anon.version = expected + 1;
                self.store.put(&anon, expected).await?;
                stats.writes += 1;
                Ok(())
            }
        }
    }
}

/// Decodes one record into its profile key and enriched event, both borrowing from it.
fn decode<'a>(
    record: &BatchRecord<'a>,
    registry: &Registry,
) -> Result<(Cow<'a, str>, EnrichedEvent<'a>), Vec<Problem>> {
    let event = ember_core::enrich::decode(record.data, registry)?;
    let key = event.header.profile_key_ref().ok_or_else(|| {
        vec![Problem::new(
            "/user_id",
            "either user_id or anonymous_id is required",
        )]
    })?;
    Ok((key, event))
}

fn dead_letter(record: &BatchRecord<'_>, problems: &[Problem]) -> DeadLetter {
    let parse_failure = problems
        .iter()
        .any(|p| p.message.contains("not valid JSON"));
    DeadLetter {
        origin: record.origin(),
        stage: if parse_failure { "decode" } else { "validate" }.to_owned(),
        reason: describe(problems),
        raw_base64: base64::engine::general_purpose::STANDARD.encode(record.data),
        at: Utc::now(),
    }
}

/// The anonymous id an `identify` event links (from the enriched fact, else the envelope).
fn identify_anonymous_id<'e>(event: &'e EnrichedEvent<'_>) -> Option<&'e str> {
    match &event.fact {
        Fact::Identify { anonymous_id, .. } => Some(anonymous_id.as_ref()),
        _ => event.header.anonymous_id.as_deref(),
    }
    .filter(|a| !a.is_empty())
}

/// Whether `event` is an `identify` of one of the anonymous profile keys in `keys`.
fn identifies_one_of(event: &EnrichedEvent<'_>, keys: &HashSet<String>) -> bool {
    event.header.event_type == EventType::Identify
        && identify_anonymous_id(event).is_some_and(|a| keys.contains(&format!("{ANON_PREFIX}{a}")))
}

/// The newest `occurred_at` of the key's events, capped at `now`.
pub fn evaluation_time(events: &[(usize, EnrichedEvent<'_>)], now: DateTime<Utc>) -> DateTime<Utc> {
    events
        .iter()
        .map(|(_, e)| e.header.occurred_at)
        .max()
        .map_or(now, |t| t.min(now))
}

/// `CartUpdated` with the deterministic id `<profile id>:cart:<profile version>`.
pub fn cart_updated(profile: &Profile, at: DateTime<Utc>) -> BusEvent {
    BusEvent::CartUpdated(CartChange {
        id: format!("{}:cart:{}", profile.id, profile.version),
        profile_id: profile.id.clone(),
        updated_at: profile.cart.updated_at.unwrap_or(at),
        item_count: profile.cart.items.values().map(|i| i.quantity).sum(),
        value_minor: profile.cart_value_minor(),
        currency: profile.cart.currency.clone(),
        profile_version: profile.version,
    })
}

#[cfg(test)]
mod tests {
    //! The handler against in-memory ports (the integration tests in `tests/` use the real
    //! adapters against the emulator), fed with the fixtures in `events/kinesis/`.

    use std::sync::atomic::Ordering;

    use super::*;

    use crate::testkit::{MemoryBus, MemoryDlq, MemoryStore};

    type TestEnricher = Enricher<MemoryStore, MemoryBus, MemoryDlq>;

    fn enricher() -> TestEnricher {
        Enricher::new(
            MemoryStore::default(),
            MemoryBus::default(),
            MemoryDlq::default(),
            FoldConfig::default(),
        )
        .expect("embedded schemas and rules load")
    }

    fn fixture(name: &str) -> KinesisEvent {
        let path = format!("{}/../../events/kinesis/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn failed(r: &KinesisEventResponse) -> Vec<String> {
        r.batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.clone())
            .collect()
    }

    fn profile(e: &TestEnricher, id: &str) -> Profile {
        e.store
            .profiles
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no profile {id}"))
    }

    #[tokio::test]
    async fn a_batch_writes_each_profile_once_and_a_replay_changes_nothing() {
        let e = enricher();
        let event = fixture("several-users.json");
        let (response, stats, _) = e.process(&event).await;
        assert!(failed(&response).is_empty(), "{:?}", failed(&response));
        assert_eq!(stats.records, 13);
        assert_eq!(stats.users, 3);
        assert_eq!(stats.writes, 3, "one write per profile");
        assert_eq!(stats.dead_letters, 0);

        let alice = profile(&e, "u-1001");
        assert_eq!(alice.version, 1);
        assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
        assert!(alice.has_consent("email"));
        assert_eq!(alice.cart_value_minor(), 2500);
        assert_eq!(alice.heat_shu(), Some(50_000.0));
        let bob = profile(&e, "u-1002");
        assert_eq!(bob.purchase_count, 1);
        assert_eq!(bob.purchase_total_minor, 2380);
        assert!(!bob.has_consent("email"));
        assert_eq!(
            profile(&e, "anon:a-77").counts.get("product_view"),
            Some(&1)
        );

        let published = e.bus.published.lock().unwrap().len();
        let carts = e
            .bus
            .published
            .lock()
            .unwrap()
            .iter()
            .filter(|b| matches!(b, BusEvent::CartUpdated(_)))
            .count();
        assert!(carts >= 1, "alice's cart changed");
        assert_eq!(stats.published, published);

        for _ in 0..2 {
            let (response, stats, _) = e.process(&event).await;
            assert!(failed(&response).is_empty());
            assert_eq!(
                (stats.writes, stats.published),
                (0, 0),
                "a replay is a no-op"
            );
        }
        assert_eq!(profile(&e, "u-1001"), alice);
        assert_eq!(e.bus.published.lock().unwrap().len(), published);
    }

    #[tokio::test]
    async fn poison_records_are_dead_lettered_with_every_problem_and_not_failed() {
        let e = enricher();
        let event = fixture("poison.json");
        let (response, stats, _) = e.process(&event).await;
        assert!(failed(&response).is_empty(), "{:?}", failed(&response));
        assert_eq!(stats.dead_letters, 2);
        let letters = e.dead_letters.letters.lock().unwrap().clone();
        let seq = |i: usize| event.records[i].kinesis.sequence_number.clone();
        assert_eq!(
            letters[0].origin,
            format!("kinesis:shardId-000000000001:{}", seq(1))
        );
        assert_eq!(letters[0].stage, "decode");
        assert!(
            letters[0].reason.contains("not valid JSON"),
            "{}",
            letters[0].reason
        );
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&letters[0].raw_base64)
            .unwrap();
        assert_eq!(raw, event.records[1].kinesis.data.0);
        assert_eq!(
            letters[1].origin,
            format!("kinesis:shardId-000000000001:{}", seq(2))
        );
        assert_eq!(letters[1].stage, "validate");
        for field in ["/payload/currency", "price", "quantity", "name"] {
            assert!(
                letters[1].reason.contains(field),
                "{field} missing in: {}",
                letters[1].reason
            );
        }
        // The valid records around the poison were applied.
        let u = profile(&e, "u-2001");
        assert_eq!(u.counts.get("page_view"), Some(&1));
        assert_eq!(u.counts.get("add_to_cart"), Some(&1));
        assert_eq!(profile(&e, "u-2002").counts.get("page_view"), Some(&1));
    }

    #[tokio::test]
    async fn a_failed_dead_letter_send_fails_exactly_those_records() {
        let e = enricher();
        e.dead_letters.down.store(true, Ordering::SeqCst);
        let event = fixture("poison.json");
        let (response, _, _) = e.process(&event).await;
        let seq = |i: usize| event.records[i].kinesis.sequence_number.clone();
        // The poison records fail, and so does u-2001's later record (same partition key:
        // order is kept); u-2002 is unaffected. The retry finds index 3 already applied.
        assert_eq!(failed(&response), vec![seq(1), seq(2), seq(3)]);
        assert_eq!(profile(&e, "u-2001").counts.get("add_to_cart"), Some(&1));
    }

    #[tokio::test]
    async fn unpublished_events_wait_in_the_outbox_and_go_out_exactly_once() {
        let e = enricher();
        e.bus.down.store(true, Ordering::SeqCst);
        let event = fixture("several-users.json");
        let (response, _, _) = e.process(&event).await;
        // Alice's cart changed, so she has bus events: all her records are failed.
        let alice_seqs: Vec<String> = event
            .records
            .iter()
            .filter(|r| r.kinesis.partition_key == "u-1001")
            .map(|r| r.kinesis.sequence_number.clone())
            .collect();
        let failures = failed(&response);
        for s in &alice_seqs {
            assert!(failures.contains(s), "alice's record {s} must be retried");
        }
        let alice = profile(&e, "u-1001");
        assert!(!alice.outbox.is_empty());
        assert_eq!(alice.version, 2, "fold write + outbox write");
        let outbox = alice.outbox.clone();

        e.bus.down.store(false, Ordering::SeqCst);
        let (response, stats, _) = e.process(&event).await;
        assert!(failed(&response).is_empty());
        let published = e.bus.published.lock().unwrap().clone();
        for ev in &outbox {
            assert_eq!(
                published.iter().filter(|p| *p == ev).count(),
                1,
                "{ev:?} published once"
            );
        }
        assert!(stats.published >= outbox.len());
        let alice = profile(&e, "u-1001");
        assert!(alice.outbox.is_empty());
        assert_eq!(alice.version, 3);

        let before = e.bus.published.lock().unwrap().len();
        let (_, stats, _) = e.process(&event).await;
        assert_eq!((stats.writes, stats.published), (0, 0));
        assert_eq!(e.bus.published.lock().unwrap().len(), before);
    }

    #[tokio::test]
    async fn identify_merges_the_anonymous_profile_and_marks_it() {
        let e = enricher();
        let (response, stats, _) = e.process(&fixture("identify.json")).await;
        assert!(failed(&response).is_empty());
        assert_eq!(stats.users, 2);
        assert_eq!(
            stats.writes, 3,
            "anon profile, its merge mark, the user profile"
        );
        let anon = profile(&e, "anon:a-900");
        assert_eq!(anon.merged_into.as_deref(), Some("u-3001"));
        let user = profile(&e, "u-3001");
        assert!(user.anonymous_ids.contains("anon:a-900") || user.anonymous_ids.contains("a-900"));
        assert_eq!(
            user.cart.items.get("HS-GHO-03").map(|i| i.quantity),
            Some(1)
        );
    }

    /// A one-record batch with `envelope` on shard 9.
    fn single(envelope: serde_json::Value, seq: u32) -> KinesisEvent {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(envelope.to_string());
        let key = envelope["user_id"].as_str().unwrap_or_default().to_owned();
        serde_json::from_value(serde_json::json!({"Records": [{
            "kinesis": {"partitionKey": key, "sequenceNumber": seq.to_string(), "data": data,
                        "approximateArrivalTimestamp": 1.0},
            "eventID": format!("shardId-000000000009:{seq}")
        }]}))
        .unwrap()
    }

    #[tokio::test]
    async fn while_the_bus_is_down_new_events_are_folded_and_queued_behind_the_outbox() {
        let e = enricher();
        e.bus.down.store(true, Ordering::SeqCst);
        let first = fixture("several-users.json");
        e.process(&first).await;
        let old_outbox = profile(&e, "u-1001").outbox;
        assert!(!old_outbox.is_empty());

        // Still down: a new add_to_cart for alice is folded (one write) and its CartUpdated
        // queued after the old events; the record is failed for retry.
        let next = single(
            serde_json::json!({"event_id": "evt-1001-99", "type": "add_to_cart", "version": 1,
                "user_id": "u-1001", "occurred_at": "2026-11-20T09:30:00Z", "source": "web",
                "payload": {"sku": "HS-GHO-03", "name": "Ghost Pepper", "price": "15.90",
                            "currency": "EUR", "quantity": 1}}),
            7,
        );
        let (response, stats, _) = e.process(&next).await;
        assert_eq!(failed(&response), vec!["7"]);
        assert_eq!(stats.writes, 1);
        let alice = profile(&e, "u-1001");
        assert_eq!(alice.counts.get("add_to_cart"), Some(&2));
        assert_eq!(&alice.outbox[..old_outbox.len()], &old_outbox[..]);
        assert!(matches!(alice.outbox.last(), Some(BusEvent::CartUpdated(c)) if c.item_count == 3));

        // Back up: the retry publishes everything once, in order, and empties the outbox.
        e.bus.down.store(false, Ordering::SeqCst);
        let queued = alice.outbox.clone();
        let (response, _, _) = e.process(&next).await;
        assert!(failed(&response).is_empty());
        assert_eq!(*e.bus.published.lock().unwrap(), queued);
        assert!(profile(&e, "u-1001").outbox.is_empty());
        let (_, stats, _) = e.process(&next).await;
        assert_eq!((stats.writes, stats.published), (0, 0));
    }

    #[tokio::test]
    async fn identify_waits_when_its_anonymous_profile_failed() {
        let e = enricher();
        e.store.failing.lock().unwrap().insert("anon:a-900".into());
        let event = fixture("identify.json");
        let (response, _, _) = e.process(&event).await;
        let all: Vec<String> = event
            .records
            .iter()
            .map(|r| r.kinesis.sequence_number.clone())
            .collect();
        assert_eq!(
            failed(&response),
            all,
            "anon records failed, so the identify waits too"
        );
        assert!(e.store.profiles.lock().unwrap().is_empty());

        e.store.failing.lock().unwrap().clear();
        let (response, _, _) = e.process(&event).await;
        assert!(failed(&response).is_empty());
        assert_eq!(
            profile(&e, "anon:a-900").merged_into.as_deref(),
            Some("u-3001")
        );
        assert!(profile(&e, "u-3001").cart.items.contains_key("HS-GHO-03"));
    }

    #[test]
    fn evaluation_time_is_the_newest_event_capped_at_now() {
        let e = enricher();
        let event = fixture("several-users.json");
        let batch = KinesisBatch::new(&event);
        let events: Vec<(usize, EnrichedEvent)> = batch
            .records()
            .iter()
            .filter_map(|r| decode(r, &e.registry).ok().map(|(_, ev)| (r.index, ev)))
            .collect();
        let newest = "2026-11-20T09:13:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(evaluation_time(&events, Utc::now()), newest);
        let earlier = "2026-11-20T09:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(evaluation_time(&events, earlier), earlier);
    }
}

#[cfg(test)]
mod send_check {
    //! The handler's future must be `Send` (runtimes and the local runner spawn it).
    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn handle_is_send(deps: &crate::Deps, event: &aws_lambda_events::event::kinesis::KinesisEvent) {
        let fut = deps.handle(event, "r");
        assert_send(&fut);
    }
}
