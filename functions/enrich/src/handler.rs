//! The Kinesis batch handler, generic over the ports it needs.
//!
//! Per batch:
//! 1. every record is decoded, validated and enriched (`ember_core::enrich::decode`); records
//!    that cannot be are sent to the dead-letter sink with every problem listed, and count as
//!    handled (they are not retried). If the dead-letter send fails, those records are failed.
//! 2. valid events are grouped by profile key, keeping stream order per key. Anonymous
//!    profiles are processed first (so an `identify` later in the batch merges their newest
//!    state), then identified ones; distinct keys run concurrently (bounded).
//! 3. per key ([`Enricher::process_key`]): read the profile once, then decide which events are
//!    new, exactly once:
//!    - a record at or below the profile's stream watermark was applied already (a retried,
//!      bisected or replayed batch): skipped without any call;
//!    - every other event's id is claimed ([`EventClaims`], one conditional put each, granted
//!      again to the same record): an id another record holds is a duplicate (a re-sent
//!      event, a redelivered webhook, a `PutRecords` the SDK retried after a lost answer).
//!
//!    The events of an anonymous profile already merged into a user (they arrived after the
//!    `identify`: another shard, a later visit) are folded into that user instead, and
//!    recognised there by its `absorbed` watermark of the anonymous id; an `identify` that
//!    comes first leaves a merged placeholder for the visitor.
//!
//!    Then: settle the stored outbox ([`crate::outbox`]), fold the new events, merge anonymous
//!    profiles on `identify`, evaluate segments, advance the watermark, and write ONCE with
//!    the optimistic version check (on conflict: re-read and refold, bounded), the new bus
//!    events stored in the same write.
//! 4. the bus events of every written profile are published together. A key whose write or
//!    publish fails has its records failed (later records of the key too: order is kept);
//!    a key that can never be written (the stored item does not decode, the item would be over
//!    DynamoDB's limit, any other permanent error) has its records dead-lettered with the
//!    cause and its claims released, so one poison profile never blocks the shard.
//!
//! Segment evaluation time: the newest `occurred_at` among the key's events in the batch,
//! capped at the current time. Evaluating at event time (not at the wall clock) keeps a replay
//! of the same batch deterministic; time-driven changes (cart abandonment) are re-checked by
//! the email function's timers via `CartUpdated`; time-based segments (`churn_risk`) by the
//! scheduled re-evaluation ([`crate::reevaluate`], binary `reevaluate`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use base64::Engine;
use chrono::{DateTime, Utc};
use ember_aws::batch::{BatchRecord, KinesisBatch};
use ember_aws::retry::Backoff;
use ember_core::config::{Active, ConfigSource};
use ember_core::enrich::{EnrichedEvent, Fact};
use ember_core::error::{describe, Problem};
use ember_core::event::ANON_PREFIX;
use ember_core::fold::FoldConfig;
use ember_core::metrics::{self, Metrics, Recorder};
use ember_core::outbox::cart_event;
use ember_core::ports::{BusEvent, Decided};
use ember_core::ports::{
    Claim, DeadLetter, DeadLetterSink, Erasures, EventBus, EventClaims, PortError, PortResult,
    ProfileStore,
};
use ember_core::profile::Profile;
use ember_core::schema::Registry;
/// Re-exported: the segment diff the handler publishes (`ember_core::segment::transitions`).
pub use ember_core::segment::transitions;
use ember_core::segment::RuleSet;
use ember_core::watermark::{merge_target, Applied, Position, Watermark};
use ember_core::EventType;
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::outbox::{self, as_publish_failure, KeyStats, Written};

/// How many profile keys are processed at the same time.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Attempts per key when the optimistic version check fails (someone else wrote first).
pub const DEFAULT_CONFLICT_ATTEMPTS: u32 = 5;
/// How long an event id is remembered after it was processed (`DEDUP_WINDOW_DAYS`).
pub const DEFAULT_DEDUP_WINDOW_DAYS: i64 = 35;

/// Everything the handler needs, built once per process.
pub struct Enricher<S, C, B, D> {
    pub store: S,
    pub claims: C,
    pub bus: B,
    pub dead_letters: D,
    pub registry: Registry,
    /// The segment rules in force (the built-in ones until a configuration is published).
    pub rules: ConfigSource<RuleSet>,
    pub fold: FoldConfig,
    /// How long claims on event ids last: a re-sent id within it is a duplicate.
    pub dedup_window: chrono::Duration,
    pub concurrency: usize,
    /// Backoff between conflict retries of one key (attempts = `max_attempts`).
    pub conflict_backoff: Backoff,
    /// Where each batch's metrics are written (stdout unless the wiring says otherwise).
    pub metrics: Metrics,
}

/// Counters of one batch, logged at the end, and its metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchStats {
    pub records: usize,
    pub users: usize,
    pub dead_letters: usize,
    pub writes: usize,
    pub published: usize,
    /// Records skipped: at or below the watermark, or an event id another record holds.
    pub duplicates: usize,
    /// Event-id claims made.
    pub claims: usize,
    /// Records of erased profiles, dropped.
    pub erased: usize,
    /// Optimistic-lock conflicts that forced a re-read and refold.
    pub conflicts: usize,
    pub failed_records: usize,
    /// Dead letters by phase, refused values, events applied and their ingest latency,
    /// segment entries and exits.
    pub metrics: Recorder,
}

/// One event of a key's group, with the record it came in.
struct Keyed<'a> {
    index: usize,
    position: Position<'a>,
    event: EnrichedEvent<'a>,
    /// When the stream received the record: where the ingest latency starts.
    arrived_at: DateTime<Utc>,
}

/// A key failed; the writes and publishes it did before failing still count.
#[derive(Debug)]
struct KeyFailure {
    error: PortError,
    stats: KeyStats,
}

/// What processing one key did.
#[derive(Debug, Default)]
struct KeyDone {
    stats: KeyStats,
    /// Events applied, their ingest latency, segment changes: counted once the write landed.
    metrics: Recorder,
    written: Option<Written>,
    duplicates: usize,
    claims: usize,
    /// Records dropped because their profile was erased.
    erased: usize,
    /// The key's records from this one on (index into its group) were not processed: a claim
    /// failed. They are failed so Lambda retries them, in order.
    failed_from: Option<(usize, PortError)>,
}

impl<S, C, B, D> Enricher<S, C, B, D>
where
    S: ProfileStore,
    C: EventClaims + Erasures,
    B: EventBus,
    D: DeadLetterSink,
{
    /// Builds the handler with the embedded schemas and rules.
    pub fn new(
        store: S,
        claims: C,
        bus: B,
        dead_letters: D,
        fold: FoldConfig,
    ) -> Result<Self, ember_core::CoreError> {
        Ok(Enricher {
            store,
            claims,
            bus,
            dead_letters,
            registry: Registry::embedded()?,
            rules: ConfigSource::fixed(RuleSet::embedded()?),
            fold,
            dedup_window: chrono::Duration::days(DEFAULT_DEDUP_WINDOW_DAYS),
            concurrency: DEFAULT_CONCURRENCY,
            conflict_backoff: Backoff::new(
                DEFAULT_CONFLICT_ATTEMPTS,
                Duration::from_millis(20),
                Duration::from_millis(500),
            ),
            metrics: Metrics::stdout("local"),
        })
    }

    /// Handles one Kinesis batch; returns the partial batch failures.
    pub async fn handle(&self, event: &KinesisEvent, request_id: &str) -> KinesisEventResponse {
        let span = tracing::info_span!("enrich", request_id);
        let (response, mut stats, elapsed) = self.process(event).instrument(span.clone()).await;
        stats
            .metrics
            .count(&metrics::DUPLICATES_DROPPED, &[], stats.duplicates as u64);
        self.metrics
            .flush(std::mem::take(&mut stats.metrics), Utc::now());
        let _entered = span.enter();
        tracing::info!(
            records = stats.records,
            users = stats.users,
            dead_letters = stats.dead_letters,
            writes = stats.writes,
            published = stats.published,
            duplicates = stats.duplicates,
            claims = stats.claims,
            erased = stats.erased,
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
        // One configuration version for the whole batch. Unreadable: every record is retried.
        let rules = match self.rules.active().await {
            Ok(rules) => rules,
            Err(error) => {
                tracing::warn!(%error, "configuration unavailable; the batch is retried");
                for index in 0..batch.len() {
                    batch.fail(index, error.to_string());
                }
                let response = batch.response();
                stats.failed_records = response.batch_item_failures.len();
                return (response, stats, started.elapsed());
            }
        };
        let rules = &*rules;

        // 1. Decode; collect dead letters.
        let mut letters: Vec<(usize, DeadLetter)> = Vec::new();
        let mut groups: Vec<(String, Vec<Keyed<'_>>)> = Vec::new();
        // Keyed by the profile key as decoded.
        let mut group_of: foldhash::HashMap<Cow<'_, str>, usize> = Default::default();
        for (record, decoded) in batch.decode(|r| decode(r, &self.registry)) {
            match decoded {
                Ok((key, event)) => {
                    let g = *group_of.entry(key).or_insert_with_key(|key| {
                        groups.push((key.to_string(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(Keyed {
                        index: record.index,
                        position: Position::new(record.shard_id, record.sequence_number),
                        event,
                        arrived_at: record.arrived_at,
                    });
                }
                Err(problems) => {
                    count_refused(&mut stats.metrics, record.data, &problems);
                    letters.push((
                        record.index,
                        dead_letter(&record, stage_of(&problems), &describe(&problems)),
                    ));
                }
            }
        }
        for (key, events) in &groups {
            let name: Arc<str> = Arc::from(key.as_str());
            for e in events {
                batch.set_group(e.index, Arc::clone(&name));
            }
        }
        stats.dead_letters += self
            .send_dead_letters(&mut batch, letters, &mut stats.metrics)
            .await;

        // 2. Anonymous profiles first, then identified ones; keys concurrently.
        stats.users = groups.len();
        let (anon, known): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .partition(|(key, _)| key.starts_with(ANON_PREFIX));
        let mut failed_anon: HashSet<String> = HashSet::new();
        // Written profiles whose bus events are published together after both phases.
        let mut written: Vec<(String, Vec<usize>, Written)> = Vec::new();
        let mut poisoned: Vec<(usize, DeadLetter)> = Vec::new();
        for (n, phase) in [anon, known].into_iter().enumerate() {
            let (phase, blocked): (Vec<_>, Vec<_>) = phase.into_iter().partition(|(_, events)| {
                n == 0
                    || !events
                        .iter()
                        .any(|e| identifies_one_of(&e.event, &failed_anon))
            });
            // An identify must not merge an anonymous profile whose own records of this batch
            // failed: they would be folded after the merge and never reach the user.
            for (_, events) in blocked {
                tracing::warn!(
                    records = events.len(),
                    "identify waits for its anonymous profile"
                );
                for e in &events {
                    batch.fail(
                        e.index,
                        "the anonymous profile it identifies failed in this batch",
                    );
                }
            }
            // The stream runs over indices into `phase`: a closure taking the groups
            // themselves, whose stream positions borrow from the batch, trips rustc's check that the
            // handler's future is `Send` (see `send_check`).
            let results: Vec<_> = stream::iter(0..phase.len())
                .map(|i| {
                    let (key, events) = &phase[i];
                    async move { (i, self.process_key(key, events, rules).await) }
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            for (i, result) in results {
                let (key, events) = &phase[i];
                match result {
                    Ok(done) => {
                        add_key_stats(&mut stats, &done.stats);
                        stats.metrics.absorb(done.metrics);
                        stats.duplicates += done.duplicates;
                        stats.claims += done.claims;
                        stats.erased += done.erased;
                        let end = match &done.failed_from {
                            Some((end, error)) => {
                                tracing::warn!(error = %error, records = events.len() - end, "claims failed; the key's later records are retried");
                                for e in &events[*end..] {
                                    batch.fail(e.index, error.to_string());
                                }
                                self.release_unapplied(key, &events[*end..]).await;
                                *end
                            }
                            None => events.len(),
                        };
                        let indices = events[..end].iter().map(|e| e.index);
                        match done.written {
                            Some(w) if !w.events.is_empty() => {
                                written.push((key.clone(), indices.collect(), w));
                            }
                            _ => indices.for_each(|index| batch.succeed(index)),
                        }
                    }
                    Err(KeyFailure {
                        error: error @ PortError::Permanent { .. },
                        stats: s,
                    }) => {
                        add_key_stats(&mut stats, &s);
                        tracing::error!(error = %error, records = events.len(), "profile cannot be written; its records are dead-lettered");
                        self.release_claims(events.iter()).await;
                        let (stage, reason) = match &error {
                            PortError::Permanent { stage, reason } => (*stage, reason.as_str()),
                            _ => ("profile", ""),
                        };
                        for e in events {
                            let record = batch.records()[e.index];
                            poisoned.push((e.index, dead_letter(&record, stage, reason)));
                        }
                        if n == 0 {
                            failed_anon.insert(key.clone());
                        }
                    }
                    Err(KeyFailure { error, stats: s }) => {
                        add_key_stats(&mut stats, &s);
                        tracing::warn!(error = %error, records = events.len(), "profile processing failed; records retried");
                        if n == 0 {
                            failed_anon.insert(key.clone());
                        }
                        for e in events {
                            batch.fail(e.index, error.to_string());
                        }
                        self.release_unapplied(key, events).await;
                    }
                }
            }
        }
        stats.dead_letters += self
            .send_dead_letters(&mut batch, poisoned, &mut stats.metrics)
            .await;

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
        for ((_, indices), (result, s)) in owners.into_iter().zip(published) {
            add_key_stats(&mut stats, &s);
            match result {
                Ok(()) => indices.into_iter().for_each(|index| batch.succeed(index)),
                Err(error) => {
                    tracing::warn!(error = %error, records = indices.len(), "bus events kept in the outbox; records retried");
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

    /// Sends dead letters; their records count as handled, or fail if the send fails.
    async fn send_dead_letters(
        &self,
        batch: &mut KinesisBatch<'_>,
        letters: Vec<(usize, DeadLetter)>,
        recorder: &mut Recorder,
    ) -> usize {
        if letters.is_empty() {
            return 0;
        }
        for (index, letter) in &letters {
            tracing::warn!(origin = %letter.origin, stage = %letter.stage, index, "record dead-lettered");
            recorder.count(&metrics::DEAD_LETTERS, &[phase_of(&letter.stage)], 1);
        }
        let only: Vec<DeadLetter> = letters.iter().map(|(_, l)| l.clone()).collect();
        match self.dead_letters.send(&only).await {
            Ok(()) => {
                for (index, _) in &letters {
                    batch.handled(*index);
                }
                letters.len()
            }
            Err(e) => {
                tracing::error!(error = %e, count = letters.len(), "dead-letter send failed");
                for (index, _) in &letters {
                    batch.fail(*index, format!("dead-letter send failed: {e}"));
                }
                0
            }
        }
    }

    /// Releases the claims a dead-lettered key's records hold, so a redrive applies them.
    async fn release_claims<'k, 'e: 'k>(&self, events: impl Iterator<Item = &'k Keyed<'e>>) {
        for e in events {
            let origin = e.position.to_string();
            if let Err(error) = self.claims.release(&e.event.header.event_id, &origin).await {
                tracing::warn!(%error, origin, "claim not released; a redrive of the record needs it released first");
            }
        }
    }

    /// Releases the claims of failed records that were not applied, so that if Lambda gives
    /// up on them a redrive applies them (the redrive puts them back as new records). Applied
    /// ones (their write landed, the publish failed) are at or below the watermark and keep
    /// their claims; if the profile cannot be read, nothing is released and the redrive
    /// decides (`ember_aws::stream_failures`).
    async fn release_unapplied(&self, key: &str, events: &[Keyed<'_>]) {
        let applied = match Applied::read(&self.store, key).await {
            Ok(applied) => applied,
            Err(error) => {
                tracing::warn!(%error, "claims of failed records kept: the profile cannot be read");
                return;
            }
        };
        let unapplied = events.iter().filter(|e| !applied.covers(&e.position));
        self.release_claims(unapplied).await;
    }

    /// Processes one key's events, retrying the whole read-fold-write on version conflicts.
    async fn process_key(
        &self,
        key: &str,
        events: &[Keyed<'_>],
        rules: &Active<RuleSet>,
    ) -> Result<KeyDone, KeyFailure> {
        let mut done = KeyDone::default();
        // Claim answers are kept across conflict retries: a claim is asked once per record.
        let mut claimed: HashMap<usize, Claim> = HashMap::new();
        let mut attempt = 0;
        loop {
            match self
                .try_key(key, events, rules, &mut claimed, &mut done)
                .await
            {
                Ok(written) => {
                    done.written = written;
                    return Ok(done);
                }
                Err(PortError::Conflict(reason)) if self.conflict_backoff.can_retry(attempt) => {
                    tracing::debug!(attempt, %reason, "version conflict, refolding");
                    done.stats.conflicts += 1;
                    self.conflict_backoff.wait(attempt).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(KeyFailure {
                        error,
                        stats: done.stats,
                    })
                }
            }
        }
    }

    /// Which of `events` are new to `profile`: not at or below its watermark, not a repeat of
    /// an earlier record of this batch, and with a granted claim on their event id. Claims
    /// already answered (an earlier round of this key) are not asked again.
    async fn new_events(
        &self,
        target: &Target<'_>,
        profile: &Profile,
        events: &[Keyed<'_>],
        claimed: &mut HashMap<usize, Claim>,
        done: &mut KeyDone,
    ) -> (Vec<usize>, Option<(usize, PortError)>) {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut candidates = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if target.has_applied(profile, &e.position) || !seen.insert(&e.event.header.event_id) {
                continue;
            }
            candidates.push(i);
        }
        let expires_at = Utc::now() + self.dedup_window;
        let asks: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| !claimed.contains_key(&events[*i].index))
            .collect();
        let answers = futures::future::join_all(asks.iter().map(|i| {
            let e = &events[*i];
            let origin = e.position.to_string();
            async move {
                self.claims
                    .claim(&e.event.header.event_id, &origin, expires_at)
                    .await
            }
        }))
        .await;
        done.claims += asks.len();
        // The first claim that failed stops the key there: what comes before it is folded
        // (progress even when some calls keep failing), the rest is retried in order.
        let mut cutoff: Option<(usize, PortError)> = None;
        for (i, answer) in asks.iter().zip(answers) {
            match answer {
                Ok(claim) => {
                    claimed.insert(events[*i].index, claim);
                }
                Err(e) => {
                    if cutoff.as_ref().is_none_or(|(c, _)| i < c) {
                        cutoff = Some((*i, e));
                    }
                }
            }
        }
        let end = cutoff.as_ref().map_or(events.len(), |(c, _)| *c);
        let fresh: Vec<usize> = candidates
            .into_iter()
            .filter(|i| *i < end && claimed.get(&events[*i].index) == Some(&Claim::Granted))
            .collect();
        done.duplicates = end - fresh.len();
        (fresh, cutoff)
    }

    /// One read-fold-write round for a key; returns the written profile with the bus events
    /// still to publish (none when nothing was new). `Conflict` means "re-read and retry".
    async fn try_key(
        &self,
        key: &str,
        events: &[Keyed<'_>],
        rules: &Active<RuleSet>,
        claimed: &mut HashMap<usize, Claim>,
        done: &mut KeyDone,
    ) -> PortResult<Option<Written>> {
        let stored = self.store.get(key).await?;
        if stored.is_none() && self.claims.is_erased(key).await? {
            // An erased customer is never re-created: an old unsubscribe link, a late SES
            // open or a replayed event of theirs changes nothing.
            tracing::info!(
                records = events.len(),
                "events of an erased profile dropped"
            );
            done.erased = events.len();
            return Ok(None);
        }
        let (stored, target) = match stored {
            Some(anon) => match merge_target(&self.store, &anon).await? {
                Some(user) => {
                    let target = Target {
                        key,
                        merged: Some(anon.stream),
                    };
                    (Some(user), target)
                }
                None => (Some(anon), Target { key, merged: None }),
            },
            None => (None, Target { key, merged: None }),
        };
        let expected = stored.as_ref().map_or(0, |p| p.version);
        let mut profile = stored.unwrap_or_else(|| Profile::new(key));
        let (fresh, cutoff) = self
            .new_events(&target, &profile, events, claimed, done)
            .await;
        let events = match cutoff {
            Some((0, error)) => return Err(error),
            Some((end, error)) => {
                done.failed_from = Some((end, error));
                &events[..end]
            }
            None => {
                done.failed_from = None;
                events
            }
        };
        let before_segments = profile.segments.clone();
        let before_cart = profile.cart.clone();

        // What an earlier write left in the outbox is settled first (see `outbox`).
        // A user's held outbox is for its own records: absorbed ones do not settle it.
        let positions: Vec<Position<'_>> = events.iter().map(|e| e.position).collect();
        let own_positions = target.merged.is_none().then_some(&positions[..]);
        let settled = outbox::settle(&self.bus, &mut profile, own_positions, &mut done.stats).await;

        for &i in &fresh {
            let event = &events[i].event;
            let tallied = event.rebuild.then(|| profile.tallies.clone());
            profile.apply(event, &self.fold);
            if let Some(before) = tallied {
                // A rebuild folds history the campaign counters already hold.
                profile.tallies = before;
            }
            if event.header.event_type == EventType::Identify {
                if let Some(anon_id) = identify_anonymous_id(event) {
                    self.merge_anonymous(&mut profile, anon_id, event, &mut done.stats)
                        .await?;
                }
            }
        }
        if fresh.is_empty() && !settled.needs_write() {
            // Nothing new (a redelivery or duplicates), and the outbox needs no write.
            return match settled.error {
                None => Ok(None),
                Some(e) => Err(as_publish_failure(e)),
            };
        }
        for e in events {
            profile.mark_applied(key, &e.position);
        }

        let version = expected + 1;
        profile.version = version;
        let mut publish = Vec::new();
        if !fresh.is_empty() {
            let keyed: Vec<&EnrichedEvent<'_>> = fresh.iter().map(|i| &events[*i].event).collect();
            let at = evaluation_time(keyed.iter().copied(), Utc::now());
            // A profile whose segments a newer version set (a publish's backfill) is never
            // evaluated with older rules: this sandbox reads the newer version first.
            let newer;
            let rules = if profile.segments_version > rules.version {
                newer = self.rules.at_least(profile.segments_version).await?;
                &*newer
            } else {
                rules
            };
            if rules.version >= profile.segments_version {
                let segments = rules.config.evaluate(&profile, at);
                let cause = keyed.last().map(|e| e.header.event_id.as_ref());
                let decided = Decided {
                    config_version: rules.version,
                    backfill: false,
                };
                publish = transitions(
                    &profile.id,
                    &before_segments,
                    &segments,
                    at,
                    version,
                    cause,
                    decided,
                );
                if let Some(last) = fresh.last().map(|&i| &events[i]) {
                    stamp_origin(&mut publish, last.arrived_at, last.event.trace.as_deref());
                }
                profile.segments = segments;
                profile.segments_version = rules.version;
            }
            if profile.cart != before_cart {
                publish.push(cart_event(&profile, version, at));
            }
            // A rebuild from the archive folds the events again; what they caused (segment
            // changes, cart timers, emails) happened when they first arrived.
            if keyed.iter().all(|e| e.rebuild) {
                publish.clear();
            }
        }
        let written = outbox::write(
            &self.store,
            profile,
            expected,
            publish,
            true,
            settled.error,
            &mut done.stats,
        )
        .await?;
        let now = Utc::now();
        done.metrics
            .count(&metrics::EVENTS_APPLIED, &[], fresh.len() as u64);
        for &i in &fresh {
            done.metrics
                .latency(&metrics::INGEST_TO_ENRICH, events[i].arrived_at, now);
        }
        count_transitions(&mut done.metrics, &written.events);
        Ok(Some(written))
    }

    /// Merges `anon:<anon_id>` into `profile`, once. The anonymous profile is marked first
    /// (`merged_into`, and `merged_by` = the identify event), so a failure before the user
    /// profile is written only repeats the merge when that same identify event is retried; a
    /// later identify of the same visitor finds it merged and only links the id.
    async fn merge_anonymous(
        &self,
        profile: &mut Profile,
        anon_id: &str,
        identify: &EnrichedEvent<'_>,
        stats: &mut KeyStats,
    ) -> PortResult<()> {
        let anon_key = format!("{ANON_PREFIX}{anon_id}");
        let event_id: &str = &identify.header.event_id;
        let Some(mut anon) = self.store.get(&anon_key).await? else {
            // The identify came first (the visitor's events are on another shard, or still to
            // come): a merged placeholder makes them fold into this user when they arrive. If
            // they created the profile meanwhile, the conflict re-runs this key to merge it.
            let mut placeholder = Profile::new(anon_key);
            placeholder.merged_into = Some(profile.id.clone());
            placeholder.merged_by = Some(event_id.to_owned());
            placeholder.version = 1;
            self.store.put(&placeholder, 0).await?;
            stats.writes += 1;
            profile.merge_anonymous(&placeholder, &self.fold);
            return Ok(());
        };
        match (anon.merged_into.as_deref(), anon.merged_by.as_deref()) {
            (None, _) => {
                let expected = anon.version;
                anon.merged_into = Some(profile.id.clone());
                anon.merged_by = Some(event_id.to_owned());
                anon.version = expected + 1;
                self.store.put(&anon, expected).await?;
                stats.writes += 1;
                profile.merge_anonymous(&anon, &self.fold);
            }
            (Some(into), Some(by)) if into == profile.id && by == event_id => {
                profile.merge_anonymous(&anon, &self.fold);
            }
            _ => tracing::info!("anonymous profile already merged; id linked only"),
        }
        Ok(())
    }
}

/// Where a key's events are folded: its own profile, or (`merged` holds the anonymous
/// profile's own watermark) the user an anonymous profile was merged into.
struct Target<'k> {
    key: &'k str,
    merged: Option<Watermark>,
}

impl Target<'_> {
    /// Whether `profile` (the one folded into) has the record at `position` already.
    fn has_applied(&self, profile: &Profile, position: &Position<'_>) -> bool {
        self.merged.as_ref().is_some_and(|own| own.covers(position))
            || profile.has_applied(self.key, position)
    }
}

fn add_key_stats(stats: &mut BatchStats, s: &KeyStats) {
    stats.writes += s.writes;
    stats.published += s.published;
    stats.conflicts += s.conflicts;
}

/// Decodes one record into its profile key and enriched event.
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

/// Marks segment changes with their cause's arrival time and trace, for the email's latency
/// and trace.
fn stamp_origin(events: &mut [BusEvent], arrived_at: DateTime<Utc>, trace: Option<&str>) {
    for e in events {
        if let BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) = e {
            c.ingested_at = Some(arrived_at);
            c.trace = trace.map(str::to_owned);
        }
    }
}

/// Counts segment entries and exits by segment.
pub(crate) fn count_transitions(recorder: &mut Recorder, events: &[BusEvent]) {
    for e in events {
        match e {
            BusEvent::SegmentEntered(c) => {
                recorder.count(&metrics::SEGMENT_ENTERED, &[&c.segment], 1)
            }
            BusEvent::SegmentExited(c) => {
                recorder.count(&metrics::SEGMENT_EXITED, &[&c.segment], 1)
            }
            _ => {}
        }
    }
}

/// The phase a dead letter's stage belongs to (`profile.put` → `profile`): few values.
fn phase_of(stage: &str) -> &str {
    stage.split('.').next().unwrap_or(stage)
}

/// A record that cannot be applied: refused for its type (when readable) and each of its
/// values the problems name.
fn count_refused(recorder: &mut Recorder, data: &[u8], problems: &[Problem]) {
    let event_type = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v["type"].as_str().and_then(EventType::parse));
    let Some(t) = event_type else {
        recorder.count(&metrics::EVENTS_REFUSED, &["unknown", "unreadable"], 1);
        return;
    };
    recorder.count(&metrics::EVENTS_REFUSED, &[t.as_str(), "invalid_value"], 1);
    for p in problems {
        let field = p
            .path
            .rsplit('/')
            .next()
            .filter(|f| !f.is_empty())
            .unwrap_or("event");
        recorder.count(&metrics::INVALID_VALUES, &[t.as_str(), field], 1);
    }
}

fn stage_of(problems: &[Problem]) -> &'static str {
    if problems
        .iter()
        .any(|p| p.message.contains("not valid JSON"))
    {
        "decode"
    } else {
        "validate"
    }
}

fn dead_letter(record: &BatchRecord<'_>, stage: &str, reason: &str) -> DeadLetter {
    DeadLetter {
        origin: record.origin(),
        stage: stage.to_owned(),
        reason: reason.to_owned(),
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

/// The newest `occurred_at` of the events, capped at `now`.
pub fn evaluation_time<'a, 'e: 'a>(
    events: impl IntoIterator<Item = &'a EnrichedEvent<'e>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    events
        .into_iter()
        .map(|e| e.header.occurred_at)
        .max()
        .map_or(now, |t| t.min(now))
}

#[cfg(test)]
mod tests {
    //! The handler against in-memory ports (the integration tests in `tests/` use the real
    //! adapters against the emulator), fed with the fixtures in `events/kinesis/`.

    use std::sync::atomic::Ordering;

    use super::*;
    use ember_core::ports::BusEvent;

    use crate::testkit::{MemoryBus, MemoryClaims, MemoryDlq, MemoryStore};

    type TestEnricher = Enricher<MemoryStore, MemoryClaims, MemoryBus, MemoryDlq>;

    fn enricher() -> TestEnricher {
        Enricher::new(
            MemoryStore::default(),
            MemoryClaims::default(),
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
    async fn a_batch_writes_each_profile_once_and_a_redelivery_writes_nothing() {
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
        assert_eq!(alice.email(), Some("alice@example.com"));
        assert!(alice.has_consent("email"));
        assert_eq!(alice.cart_value_minor(), 2500);
        assert_eq!(alice.heat_shu(), Some(50_000.0));
        let bob = profile(&e, "u-1002");
        assert_eq!(bob.purchase_count, 1);
        assert_eq!(bob.purchase_total_minor(), 2380);
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

        assert_eq!(stats.claims, 13, "one claim per event id");
        let claims = e.claims.len();

        // Lambda retries the same records: the watermark recognises every one, no claim is
        // asked, nothing is written. The last write's bus events may not have gone out (the
        // retry cannot know), so they are published again, with the same ids.
        let first: Vec<BusEvent> = e.bus.published.lock().unwrap().clone();
        for _ in 0..2 {
            let (response, stats, _) = e.process(&event).await;
            assert!(failed(&response).is_empty());
            assert_eq!((stats.writes, stats.claims, stats.duplicates), (0, 0, 13));
        }
        assert_eq!(profile(&e, "u-1001"), alice);
        assert_eq!(e.claims.len(), claims);
        let all = e.bus.published.lock().unwrap().clone();
        assert!(
            all[first.len()..].iter().all(|b| first.contains(b)),
            "republished events are the same events"
        );
    }

    #[tokio::test]
    async fn an_event_id_sent_again_in_a_new_record_is_a_duplicate_however_late() {
        let e = enricher();
        let order = |seq: u32, id: &str| {
            single(
                serde_json::json!({"event_id": id, "type": "purchase", "version": 1,
                    "user_id": "u-7", "occurred_at": "2026-11-20T09:30:00Z", "source": "payments",
                    "payload": {"order_id": "o-1", "total": "25.00", "currency": "EUR", "items": []}}),
                seq,
            )
        };
        let (response, _, _) = e.process(&order(1, "pay-1")).await;
        assert!(failed(&response).is_empty());
        // 2,000 other events of the same customer in between roll nothing: ids are claimed
        // for the dedup window, not kept in a bounded ring.
        for i in 0..2_000u32 {
            let view = single(
                serde_json::json!({"event_id": format!("pv-{i}"), "type": "page_view", "version": 1,
                    "user_id": "u-7", "occurred_at": "2026-11-20T09:31:00Z", "source": "web",
                    "payload": {"url": "https://shop.example/"}}),
                2 + i,
            );
            e.process(&view).await;
        }
        let (response, stats, _) = e.process(&order(5_000, "pay-1")).await;
        assert!(failed(&response).is_empty());
        assert_eq!((stats.duplicates, stats.writes), (1, 0));
        let p = profile(&e, "u-7");
        assert_eq!(p.purchase_count, 1);
        assert_eq!(p.counts["page_view"], 2_000);
        // A new id is folded.
        e.process(&order(5_001, "pay-2")).await;
        assert_eq!(profile(&e, "u-7").purchase_count, 2);
    }

    #[tokio::test]
    async fn a_claim_that_cannot_be_made_fails_the_records_and_the_retry_applies_them_once() {
        let e = enricher();
        let event = fixture("several-users.json");
        e.claims.down.store(true, Ordering::SeqCst);
        let (response, stats, _) = e.process(&event).await;
        assert_eq!(failed(&response).len(), 13);
        assert_eq!(stats.writes, 0);
        e.claims.down.store(false, Ordering::SeqCst);
        let (response, _, _) = e.process(&event).await;
        assert!(failed(&response).is_empty());
        assert_eq!(profile(&e, "u-1001").counts["add_to_cart"], 1);
        assert_eq!(profile(&e, "u-1001").cart_item_count(), 2);
    }

    #[tokio::test]
    async fn a_profile_that_can_never_be_written_is_dead_lettered_and_releases_its_claims() {
        let e = enricher();
        e.store.refusing.lock().unwrap().insert("u-1001".into());
        let event = fixture("several-users.json");
        let (response, stats, _) = e.process(&event).await;
        assert!(failed(&response).is_empty(), "nothing blocks the shard");
        let alice = event
            .records
            .iter()
            .filter(|r| r.kinesis.partition_key == "u-1001")
            .count();
        assert_eq!(stats.dead_letters, alice);
        let letters = e.dead_letters.letters.lock().unwrap().clone();
        assert!(letters
            .iter()
            .all(|l| l.stage == "memory.put" && l.reason.contains("too large")));
        assert!(
            e.store.profiles.lock().unwrap().contains_key("u-1002"),
            "others are written"
        );
        // The claims were released: once the cause is fixed, a redrive of the same records
        // (new positions) applies them.
        e.store.refusing.lock().unwrap().clear();
        let mut redriven = event.clone();
        for r in &mut redriven.records {
            r.kinesis.sequence_number = format!("9{}", r.kinesis.sequence_number);
        }
        e.process(&redriven).await;
        assert_eq!(profile(&e, "u-1001").counts["add_to_cart"], 1);
        assert_eq!(profile(&e, "u-1001").cart_item_count(), 2);
        assert_eq!(
            profile(&e, "u-1002").counts.values().sum::<u64>(),
            event
                .records
                .iter()
                .filter(|r| r.kinesis.partition_key == "u-1002")
                .count() as u64,
            "u-1002's events are not applied twice"
        );
    }

    #[tokio::test]
    async fn records_failed_unwritten_give_up_their_claims_and_written_ones_keep_them() {
        let e = enricher();
        e.store.failing.lock().unwrap().insert("u-1001".into());
        let event = fixture("several-users.json");
        let (response, _, _) = e.process(&event).await;
        let alice: Vec<&str> = event
            .records
            .iter()
            .filter(|r| r.kinesis.partition_key == "u-1001")
            .map(|r| r.kinesis.sequence_number.as_str())
            .collect();
        assert_eq!(failed(&response).len(), alice.len());
        // Lambda gives up on them: nothing holds their event ids, so the same events put
        // back as new records (a redrive) are applied, once.
        let ids = |key: &str| -> Vec<String> {
            event
                .records
                .iter()
                .filter(|r| r.kinesis.partition_key == key)
                .map(|r| {
                    let v: serde_json::Value = serde_json::from_slice(&r.kinesis.data.0).unwrap();
                    v["event_id"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        for id in ids("u-1001") {
            assert_eq!(e.claims.holder(&id).await.unwrap(), None);
        }
        for id in ids("u-1002") {
            assert!(e.claims.holder(&id).await.unwrap().is_some());
        }
        e.store.failing.lock().unwrap().clear();
        let mut redriven = event.clone();
        for r in &mut redriven.records {
            r.kinesis.sequence_number = format!("9{}", r.kinesis.sequence_number);
        }
        let (response, _, _) = e.process(&redriven).await;
        assert!(failed(&response).is_empty());
        assert_eq!(profile(&e, "u-1001").counts["add_to_cart"], 1);
        assert_eq!(
            profile(&e, "u-1002").counts.values().sum::<u64>(),
            ids("u-1002").len() as u64,
            "applied events are duplicates when put back"
        );
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
        let outbox = alice.outbox.events.clone();

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
        assert!(user.anonymous_ids.contains("a-900"));
        let identify = fixture("identify.json");
        let identify_id = identify
            .records
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.kinesis.data.0).ok())
            .find(|v| v["type"] == "identify")
            .and_then(|v| v["event_id"].as_str().map(str::to_owned));
        assert_eq!(
            anon.merged_by, identify_id,
            "marked with the identify that merged it"
        );
        assert_eq!(
            user.cart.items.get("HS-GHO-03").map(|i| i.quantity),
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_visitors_events_that_arrive_after_the_identify_are_folded_into_the_user() {
        let e = enricher();
        let event = |id: &str, kind: &str, payload: serde_json::Value| {
            serde_json::json!({"event_id": id, "type": kind, "version": 1, "anonymous_id": "a-77",
                "occurred_at": "2026-11-20T12:00:00Z", "source": "web", "payload": payload})
        };
        let mut identify = event(
            "evt-77-id",
            "identify",
            serde_json::json!({"user_id": "u-77", "anonymous_id": "a-77"}),
        );
        identify["user_id"] = "u-77".into();
        // The identify is applied first (the visitor's events travel under another key, so
        // possibly another shard): a merged placeholder stands for the visitor.
        let (response, _, _) = e.process(&single(identify, 1)).await;
        assert!(failed(&response).is_empty());
        let placeholder = profile(&e, "anon:a-77");
        assert_eq!(placeholder.merged_into.as_deref(), Some("u-77"));

        // Then the visitor's events: they count for the user, once, however delivered.
        let cart = event(
            "evt-77-cart",
            "add_to_cart",
            serde_json::json!({"sku": "HS-GHO-03", "name": "Ghost Pepper", "price": "15.90",
                               "currency": "EUR", "quantity": 1}),
        );
        let late = single(cart.clone(), 2);
        for _ in 0..3 {
            let (response, _, _) = e.process(&late).await;
            assert!(failed(&response).is_empty());
        }
        let (response, stats, _) = e.process(&single(cart, 3)).await;
        assert!(failed(&response).is_empty());
        assert_eq!(stats.duplicates, 1, "the same event id in a new record");
        let user = profile(&e, "u-77");
        assert_eq!(
            user.cart.items.get("HS-GHO-03").map(|i| i.quantity),
            Some(1)
        );
        assert_eq!(user.counts.get("add_to_cart"), Some(&1));
        let visitor = profile(&e, "anon:a-77");
        assert!(visitor.counts.is_empty() && visitor.cart.items.is_empty());
        assert!(user.has_applied("anon:a-77", &Position::new("shardId-000000000009", "2")));
        assert!(
            !user
                .stream
                .covers(&Position::new("shardId-000000000009", "2")),
            "the user's own watermark is its own records'"
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
    async fn segments_a_newer_configuration_set_are_not_evaluated_with_older_rules() {
        let e = enricher();
        let mut fan = Profile::new("u-fan");
        fan.version = 2;
        fan.segments.insert("browsers".into());
        fan.segments_version = 4;
        e.store.profiles.lock().unwrap().insert(fan.id.clone(), fan);
        // This enricher runs the built-in rules (version 0) and cannot read version 4.
        let view = single(
            serde_json::json!({"event_id": "evt-fan-1", "type": "page_view", "version": 1,
                "user_id": "u-fan", "occurred_at": "2026-11-20T09:30:00Z", "source": "web",
                "payload": {"url": "https://shop.example/"}}),
            3,
        );
        let (response, stats, _) = e.process(&view).await;
        assert!(failed(&response).is_empty());
        assert_eq!(
            (stats.writes, stats.published),
            (1, 0),
            "folded, nothing exited"
        );
        let fan = profile(&e, "u-fan");
        assert_eq!(fan.counts.get("page_view"), Some(&1));
        assert!(fan.segments.contains("browsers"));
        assert_eq!(fan.segments_version, 4);
    }

    #[tokio::test]
    async fn while_the_bus_is_down_new_events_are_folded_and_queued_behind_the_outbox() {
        let e = enricher();
        e.bus.down.store(true, Ordering::SeqCst);
        let first = fixture("several-users.json");
        e.process(&first).await;
        let old_outbox = profile(&e, "u-1001").outbox.events;
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
        assert_eq!(&alice.outbox.events[..old_outbox.len()], &old_outbox[..]);
        assert!(
            matches!(alice.outbox.events.last(), Some(BusEvent::CartUpdated(c)) if c.item_count == 3)
        );

        // Back up: the retry publishes everything once, in order, and empties the outbox.
        e.bus.down.store(false, Ordering::SeqCst);
        let queued = alice.outbox.events.clone();
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
        let events: Vec<EnrichedEvent> = batch
            .records()
            .iter()
            .filter_map(|r| decode(r, &e.registry).ok().map(|(_, ev)| ev))
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
