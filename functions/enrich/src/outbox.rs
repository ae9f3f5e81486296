//! Write-then-publish with the profile outbox: the one path by which profile changes reach the
//! bus, shared by the Kinesis handler ([`crate::handler`]) and the scheduled re-evaluation
//! ([`crate::reevaluate`]). Nothing is published for a profile that was not written, and no
//! transition is lost: every bus event is stored in the profile by the write that produced it,
//! and leaves the outbox only once it is known to be published.
//!
//! 1. [`settle`]: before a key is folded, what an earlier write left in the outbox is settled.
//!    For the Kinesis handler the outbox's stream position tells (see
//!    [`ember_core::outbox`]): records after it mean it was published (dropped from the next
//!    write at no cost), the queuing records redelivered mean it may not have been (published
//!    again; consumers de-duplicate by event id). Events marked unpublished are published
//!    first. The re-evaluation publishes only those: changes held for the stream stay held
//!    through its writes, so it neither republishes nor loses them.
//! 2. [`write`]: the profile is written ONCE with the optimistic version check, its new bus
//!    events in the same write; a write whose answer was lost is recognised by reading it back.
//! 3. [`publish_written`]: the new events of all profiles written in a batch are published
//!    together (≤10 per PutEvents call). A profile whose events could not all be published is
//!    marked unpublished (second conditional write) and fails, so its records are retried. If
//!    even that write fails, the records' redelivery publishes the events (step 1). Writes
//!    without a stream position (the re-evaluation) remove their events from the outbox
//!    after publishing.

use ember_aws::retry::Backoff;
use ember_core::ports::{BusEvent, EventBus, PortError, PortResult, ProfileStore};
use ember_core::profile::{Changes, Profile, Tally};
use ember_core::watermark::Position;
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

/// What [`settle`] did to the stored outbox.
#[derive(Debug, Default)]
pub struct Settled {
    /// The first publish error; the events that failed stay in the outbox, marked unpublished.
    pub error: Option<PortError>,
    /// The outbox changed in a way the store must learn even if nothing else is written.
    must_write: bool,
}

impl Settled {
    pub fn needs_write(&self) -> bool {
        self.must_write || self.error.is_some()
    }
}

/// Settles `profile.outbox` before new events are folded. `positions`: the stream positions
/// of the records being processed for this profile (`None` outside the Kinesis handler, which
/// then publishes only what is marked unpublished and leaves held changes alone).
pub async fn settle<B: EventBus>(
    bus: &B,
    profile: &mut Profile,
    positions: Option<&[Position<'_>]>,
    stats: &mut KeyStats,
) -> Settled {
    let mut redelivered = false;
    let pending = match positions {
        Some(positions) if profile.outbox.held_for_stream() => {
            if positions.iter().any(|p| profile.stream.covers(p)) {
                // The queuing records are being redelivered: the publish may not have happened.
                redelivered = true;
                let all = profile.outbox.pending(profile);
                profile.outbox.release_held();
                all
            } else {
                // Lambda moved past the queuing records: they reported success, which they do
                // only once published. Dropped from the next write.
                profile.outbox.release_held();
                profile.outbox.events.clone()
            }
        }
        _ => profile.outbox.unpublished(profile),
    };
    if pending.is_empty() {
        return Settled::default();
    }
    let had_unpublished = !profile.outbox.events.is_empty();
    let results = bus.publish(&pending).await;
    let mut error = None;
    let mut failed = Vec::new();
    for (event, result) in pending.into_iter().zip(results) {
        match result {
            Ok(()) => stats.published += 1,
            Err(e) => {
                error.get_or_insert(e);
                failed.push(event);
            }
        }
    }
    // What failed is kept in full: the profile is about to move on from the version the
    // compact changes describe.
    profile.outbox.set_unpublished(failed);
    Settled {
        error,
        // A redelivery's republished stream changes are dropped by the next write anyway;
        // events that were marked unpublished must be cleared by a write.
        must_write: !redelivered || had_unpublished,
    }
}

/// A profile that has been written, with the bus events its write produced, still to publish.
#[derive(Debug)]
pub struct Written {
    pub profile: Profile,
    pub events: Vec<BusEvent>,
}

/// Writes `profile` (its version already bumped) if the store still holds `expected`, with
/// `publish` added to its outbox. `by_stream`: the write advanced the stream watermark (the
/// Kinesis handler), so the events are held for the stream, which tells later whether they
/// went out; otherwise they are marked unpublished until [`publish_written`] removes them
/// (beside changes held for the stream, which stay). With `outbox_error` set (the bus failed on the stored outbox), the write still
/// happens, everything stays marked unpublished, and the call fails with that error.
/// `Conflict` means "re-read and retry".
pub async fn write<S: ProfileStore>(
    store: &S,
    mut profile: Profile,
    expected: u64,
    publish: Vec<BusEvent>,
    by_stream: bool,
    outbox_error: Option<PortError>,
    stats: &mut KeyStats,
) -> PortResult<Written> {
    if outbox_error.is_some() || (!by_stream && profile.outbox.held_for_stream()) {
        // The bus is failing, or the compact slot is held for the stream: the new events
        // wait in full, behind any that failed.
        profile.outbox.events.extend(publish.iter().cloned());
    } else {
        profile.outbox.changes = Changes::of(&publish, profile.version);
        profile.outbox.by_stream = by_stream && profile.outbox.changes.is_some();
    }
    let tallies = std::mem::take(&mut profile.tallies);
    put_once(store, &profile, expected, &tallies).await?;
    stats.writes += 1;
    if let Some(e) = outbox_error {
        tracing::warn!(
            outbox = profile.outbox.len(),
            "bus events kept in the outbox"
        );
        return Err(as_publish_failure(e));
    }
    Ok(Written {
        profile,
        events: publish,
    })
}

/// Publishes the events of many written profiles together, so a batch costs
/// ⌈events / 10⌉ PutEvents calls rather than one per profile. A profile whose events could
/// not all be published gets its outbox marked unpublished (second conditional write) and the
/// publish failure, so its records are retried; the others get `Ok`. A profile written without
/// a stream position has its outbox cleared once published. Results are in input order, with
/// each profile's publishing stats.
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
    let mut rewrites = Vec::new();
    let mut out: Vec<(PortResult<()>, KeyStats)> = Vec::with_capacity(written.len());
    for (i, w) in written.into_iter().enumerate() {
        let mut stats = KeyStats::default();
        let mut published = Vec::new();
        let mut first_error = None;
        for event in &w.events {
            match results.next() {
                Some(Ok(())) => {
                    stats.published += 1;
                    published.push(event.clone());
                }
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {
                    first_error.get_or_insert(PortError::Transient {
                        stage: "publish",
                        reason: "the bus returned fewer results than events".into(),
                    });
                }
            }
        }
        out.push((Ok(()), stats));
        if first_error.is_some() || w.profile.outbox.has_unpublished() {
            rewrites.push((i, w.profile, w.events, published, first_error));
        }
    }
    let rewritten: Vec<_> = stream::iter(rewrites)
        .map(|(i, profile, written, published, error)| async move {
            let mut stats = KeyStats::default();
            let stored = rewrite_outbox(
                ports.store,
                ports.backoff,
                profile,
                &written,
                &published,
                error.is_some(),
                &mut stats,
            )
            .await;
            let result = match error {
                Some(e) => stored.and(Err(as_publish_failure(e))),
                None => stored,
            };
            (i, stats, result)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for (i, stats, result) in rewritten {
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
    let written = write(
        ports.store,
        profile,
        expected,
        publish,
        false,
        outbox_error,
        stats,
    )
    .await?;
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
/// the re-send failed its own version check. Left at that, the retry would find every record
/// below the watermark and never publish this write's bus events. So before reporting a
/// conflict or transient failure, read the profile back: if the stored item is this very
/// write (same version, watermark, segments and outbox), the write landed.
/// One write; when its answer is lost, the stored item tells whether it landed (with its
/// tallies: they share the transaction).
async fn put_once<S: ProfileStore>(
    store: &S,
    profile: &Profile,
    expected: u64,
    tallies: &[Tally],
) -> PortResult<()> {
    let error = match store.put_tallied(profile, expected, tallies).await {
        Ok(()) => return Ok(()),
        Err(e @ PortError::Permanent { .. }) => return Err(e),
        Err(e) => e,
    };
    match store.get(&profile.id).await {
        Ok(Some(stored)) if is_same_write(&stored, profile) => {
            tracing::info!(version = profile.version, %error, "write landed although its answer failed");
            Ok(())
        }
        _ => Err(error),
    }
}

fn is_same_write(stored: &Profile, ours: &Profile) -> bool {
    stored.version == ours.version
        && stored.stream == ours.stream
        && stored.segments == ours.segments
        && stored.outbox == ours.outbox
}

/// After a publish of `written` (one write's events): removes the `published` ones from the
/// outbox; those that failed stay, marked unpublished. Changes held for the stream that are
/// this write's own leave the held slot (they were published, or now wait unpublished);
/// another write's held changes stay. One conditional write; on a conflict the newest profile
/// is re-read and the same change applied to it.
async fn rewrite_outbox<S: ProfileStore>(
    store: &S,
    backoff: &Backoff,
    mut profile: Profile,
    written: &[BusEvent],
    published: &[BusEvent],
    failed: bool,
    stats: &mut KeyStats,
) -> PortResult<()> {
    let mut attempt = 0;
    loop {
        let expected = profile.version;
        let held = profile
            .outbox
            .changes
            .as_ref()
            .filter(|_| profile.outbox.held_for_stream())
            .map(|c| c.events(&profile));
        if held.is_some_and(|held| held.iter().all(|e| written.contains(e))) {
            profile.outbox.release_held();
        }
        let mut remaining = profile.outbox.unpublished(&profile);
        for e in written {
            if !remaining.contains(e) {
                remaining.push(e.clone());
            }
        }
        remaining.retain(|e| !published.contains(e));
        profile.outbox.set_unpublished(remaining);
        profile.version = expected + 1;
        match store.put(&profile, expected).await {
            Ok(()) => {
                stats.writes += 1;
                if failed {
                    tracing::warn!(
                        outbox = profile.outbox.len(),
                        "bus events kept in the outbox"
                    );
                }
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
                        tracing::info!("profile erased; its bus events are dropped");
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                // The events stay in the stored outbox with their stream position: the
                // records' redelivery publishes them.
                tracing::error!(error = %e, outbox = profile.outbox.len(), "outbox write failed; events wait for the records' retry");
                return Err(e);
            }
        }
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
