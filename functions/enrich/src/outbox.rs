//! Write-then-publish with an outbox: the one path by which profile changes reach the bus,
//! shared by the Kinesis handler ([`crate::handler`]) and the scheduled re-evaluation
//! ([`crate::reevaluate`]).
//!
//! 1. [`publish_pending`]: events a previous write stored but could not publish go out first;
//!    those that still fail stay in the outbox, ahead of anything new.
//! 2. [`write`]: the profile is written ONCE with the optimistic version check; a write whose
//!    answer was lost is recognised by reading it back ([`put_once`]).
//! 3. [`publish_written`]: the new bus events of all profiles written in a batch are published
//!    together (≤10 per PutEvents call). Events that cannot be published are stored in their
//!    profile's outbox with a second conditional write ([`store_outbox`]) and that profile
//!    fails, so the caller retries later and the retry publishes the outbox first. While the
//!    outbox cannot be published, new events are queued behind it in the same single write.

use ember_aws::retry::Backoff;
use ember_core::ports::{BusEvent, EventBus, PortError, PortResult, ProfileStore};
use ember_core::profile::Profile;
use futures::stream::{self, StreamExt};

/// The ports (and conflict backoff) the write-then-publish path needs.
pub struct Ports<'a, S, B> {
    pub store: &'a S,
    pub bus: &'a B,
    /// Backoff between conflict retries of the outbox write.
    pub backoff: &'a Backoff,
}

impl<S, B> Clone for Ports<'_, S, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, B> Copy for Ports<'_, S, B> {}

/// What one profile's processing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyStats {
    pub writes: usize,
    pub published: usize,
    /// Optimistic-lock conflicts.
    pub conflicts: usize,
}

/// Publishes `profile.outbox`; events that fail stay in it (in order). Returns the first
/// publish error, if any.
pub async fn publish_pending<B: EventBus>(
    bus: &B,
    profile: &mut Profile,
    stats: &mut KeyStats,
) -> Option<PortError> {
    let pending = std::mem::take(&mut profile.outbox);
    let mut outbox_error = None;
    if pending.is_empty() {
        return None;
    }
    let results = bus.publish(&pending).await;
    for (event, result) in pending.iter().zip(results) {
        match result {
            Ok(()) => stats.published += 1,
            Err(e) => {
                outbox_error.get_or_insert(e);
                profile.outbox.push(event.clone());
            }
        }
    }
    outbox_error
}

/// A profile that has been written, with the bus events its write produced, still to publish.
#[derive(Debug)]
pub struct Written {
    pub profile: Profile,
    pub events: Vec<BusEvent>,
}

/// Writes `profile` (its version already bumped) if the store still holds `expected`, and
/// hands back the events to publish. With `outbox_error` set (the bus failed on the pending
/// outbox), the new events are queued in the outbox in the same write and the call fails
/// with that error. `Conflict` means "re-read and retry".
pub async fn write<S: ProfileStore>(
    store: &S,
    mut profile: Profile,
    expected: u64,
    publish: Vec<BusEvent>,
    outbox_error: Option<PortError>,
    stats: &mut KeyStats,
) -> PortResult<Written> {
    if let Some(e) = outbox_error {
        // The bus is failing: write anyway (nothing is lost if retries run out), queue the new
        // events behind the old ones in the same single write, retry later.
        profile.outbox.extend(publish);
        put_once(store, &profile, expected).await?;
        stats.writes += 1;
        tracing::warn!(profile_id = %profile.id, outbox = profile.outbox.len(), "bus events kept in the outbox");
        return Err(as_publish_failure(e));
    }
    put_once(store, &profile, expected).await?;
    stats.writes += 1;
    Ok(Written {
        profile,
        events: publish,
    })
}

/// Publishes the events of many written profiles together, so a batch costs
/// ⌈events / 10⌉ PutEvents calls rather than one per profile. A profile whose events could
/// not all be published keeps them in its outbox (second conditional write) and gets the
/// publish failure, so its records are retried; the others get `Ok`. Results are in input
/// order, with each profile's publishing stats.
pub async fn publish_written<S: ProfileStore, B: EventBus>(
    ports: Ports<'_, S, B>,
    written: Vec<Written>,
    concurrency: usize,
) -> Vec<(PortResult<()>, KeyStats)> {
    let all: Vec<BusEvent> = written
        .iter()
        .flat_map(|w| w.events.iter().cloned())
        .collect();
    let mut results = if all.is_empty() {
        Vec::new()
    } else {
        ports.bus.publish(&all).await
    }
    .into_iter();
    let mut failures = Vec::new();
    let mut out: Vec<(PortResult<()>, KeyStats)> = Vec::with_capacity(written.len());
    for (i, w) in written.into_iter().enumerate() {
        let mut stats = KeyStats::default();
        let mut failed = Vec::new();
        let mut first_error = None;
        for event in w.events {
            match results.next() {
                Some(Ok(())) => stats.published += 1,
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                    failed.push(event);
                }
                None => {
                    first_error.get_or_insert(PortError::Transient {
                        stage: "publish",
                        reason: "the bus returned fewer results than events".into(),
                    });
                    failed.push(event);
                }
            }
        }
        out.push((Ok(()), stats));
        if let Some(error) = first_error {
            failures.push((i, w.profile, failed, error));
        }
    }
    let stored: Vec<_> = stream::iter(failures)
        .map(|(i, profile, failed, error)| async move {
            let mut stats = KeyStats::default();
            let stored =
                store_outbox(ports.store, ports.backoff, profile, failed, &mut stats).await;
            (i, stats, stored.and(Err(error)).map_err(as_publish_failure))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (i, stats, result) in stored {
        out[i].0 = result;
        out[i].1.writes += stats.writes;
    }
    out
}

/// [`write`] then [`publish_written`] for a single profile.
pub async fn write_then_publish<S: ProfileStore, B: EventBus>(
    ports: Ports<'_, S, B>,
    profile: Profile,
    expected: u64,
    publish: Vec<BusEvent>,
    outbox_error: Option<PortError>,
    stats: &mut KeyStats,
) -> PortResult<()> {
    let written = write(ports.store, profile, expected, publish, outbox_error, stats).await?;
    let (result, published) = publish_written(ports, vec![written], 1)
        .await
        .pop()
        .unwrap_or((Ok(()), KeyStats::default()));
    stats.published += published.published;
    stats.writes += published.writes;
    result
}

/// Writes `profile` over version `expected`. A failed write may still have landed: its answer
/// was lost (timeout, dropped connection), or the SDK re-sent a write that had succeeded and
/// the re-send failed its own version check. Left at that, the retry would find every event
/// already applied and never publish this write's bus events. So before reporting a conflict
/// or transient failure, read the profile back: if the stored item is this very write (same
/// version, same remembered event ids, same segments), the write landed.
async fn put_once<S: ProfileStore>(store: &S, profile: &Profile, expected: u64) -> PortResult<()> {
    let error = match store.put(profile, expected).await {
        Ok(()) => return Ok(()),
        Err(e @ PortError::Permanent { .. }) => return Err(e),
        Err(e) => e,
    };
    match store.get(&profile.id).await {
        Ok(Some(stored)) if is_same_write(&stored, profile) => {
            tracing::info!(profile_id = %profile.id, version = profile.version, %error, "write landed although its answer failed");
            Ok(())
        }
        _ => Err(error),
    }
}

fn is_same_write(stored: &Profile, ours: &Profile) -> bool {
    stored.version == ours.version
        && stored.recent_event_ids == ours.recent_event_ids
        && stored.segments == ours.segments
        && stored.outbox == ours.outbox
}

/// Stores unpublished events in the profile's outbox (second conditional write). On a
/// conflict the newest profile is re-read and the events appended to its outbox.
pub async fn store_outbox<S: ProfileStore>(
    store: &S,
    backoff: &Backoff,
    mut profile: Profile,
    failed: Vec<BusEvent>,
    stats: &mut KeyStats,
) -> PortResult<()> {
    let mut attempt = 0;
    loop {
        let expected = profile.version;
        for event in &failed {
            if !profile.outbox.contains(event) {
                profile.outbox.push(event.clone());
            }
        }
        profile.version = expected + 1;
        match store.put(&profile, expected).await {
            Ok(()) => {
                stats.writes += 1;
                tracing::warn!(profile_id = %profile.id, outbox = profile.outbox.len(), "bus events kept in the outbox");
                return Ok(());
            }
            Err(PortError::Conflict(_)) if backoff.can_retry(attempt) => {
                backoff.wait(attempt).await;
                attempt += 1;
                match store.get(&profile.id).await? {
                    Some(latest) => profile = latest,
                    None => {
                        // Erased meanwhile (the API's erasure endpoint): never re-create it;
                        // its events concern a profile that no longer exists.
                        tracing::info!(profile_id = %profile.id, "profile erased; its bus events are dropped");
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                let ids: Vec<String> = failed.iter().map(event_id).collect();
                tracing::error!(profile_id = %profile.id, error = %e, events = ?ids, "outbox write failed: bus events lost");
                return Err(e);
            }
        }
    }
}

fn event_id(event: &BusEvent) -> String {
    match event {
        BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => c.id.clone(),
        BusEvent::CartUpdated(c) => c.id.clone(),
    }
}

/// A publish failure always fails the caller (so it retries and the outbox is published
/// then), whether EventBridge called it transient or not.
pub fn as_publish_failure(error: PortError) -> PortError {
    match error {
        PortError::Conflict(reason) => PortError::Transient {
            stage: "publish",
            reason,
        },
        other => other,
    }
}
