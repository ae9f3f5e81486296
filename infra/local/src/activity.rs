//! Counters shared by the pollers, and the "drain" handshake: wait until every poller has
//! looked for work after a point in time and found none.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idle poller first waits before looking again; each further empty look doubles
/// it up to [`IDLE_POLL_MAX`], and work resets it. A drain round wakes it at once. The
/// emulator serves one request at a time, so idle polling competes with real work.
pub const IDLE_POLL: Duration = Duration::from_millis(100);
pub const IDLE_POLL_MAX: Duration = Duration::from_secs(1);

/// The next idle pause after one of `d` found nothing.
pub fn back_off(d: Duration) -> Duration {
    (d * 2).min(IDLE_POLL_MAX)
}

/// Live counters of one local run.
#[derive(Debug, Default)]
pub struct Activity {
    epoch: AtomicU64,
    /// Any unit of work done by any poller (used to detect quiescence).
    work: AtomicU64,
    idle: Mutex<BTreeMap<String, u64>>,
    /// Wakes idle pollers when a drain starts a round, so a round costs one request per
    /// poller rather than a full idle pause, and no more.
    wake: tokio::sync::Notify,
    pub kinesis_records: AtomicU64,
    /// Of those, the `campaign_assigned` records the email function put (sends, holdouts).
    pub kinesis_assignments: AtomicU64,
    pub kinesis_batches: AtomicU64,
    pub kinesis_batch_retries: AtomicU64,
    pub kinesis_bisections: AtomicU64,
    pub kinesis_on_failure: AtomicU64,
    pub rule_events: AtomicU64,
    pub rule_events_by_type: Mutex<BTreeMap<String, u64>>,
    pub async_failures: AtomicU64,
    /// Scheduled invocations by function (sweeper, re-evaluation).
    pub scheduled_runs: Mutex<BTreeMap<String, u64>>,
    pub handler_errors: AtomicU64,
    /// Wall-clock latency (ms) from posting an event to the email handler finishing the
    /// segment/cart event it caused.
    pub ingest_to_email_ms: Mutex<Vec<u64>>,
    pub posted_at: Mutex<BTreeMap<String, Instant>>,
    /// When the latest event of each profile key was posted.
    pub posted_by_profile: Mutex<BTreeMap<String, Instant>>,
    /// The W3C `traceparent` each event was posted with (one per request).
    pub posted_trace: Mutex<BTreeMap<String, String>>,
    /// `campaign_assigned` events seen on the stream, not yet answered by the simulated
    /// customers ([`crate::respond`]); redeliveries included (the replay skips known ids).
    pub assignments: Mutex<Vec<serde_json::Value>>,
}

impl Activity {
    pub fn register(&self, poller: &str) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.insert(poller.to_owned(), 0);
        }
    }

    /// The current epoch, read by a poller at the start of an iteration.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A poller's iteration that started at `epoch` found nothing to do.
    pub fn idle(&self, poller: &str, epoch: u64) {
        if let Ok(mut idle) = self.idle.lock() {
            let e = idle.entry(poller.to_owned()).or_insert(0);
            *e = (*e).max(epoch);
        }
    }

    /// An idle poller's pause after an iteration that began at `epoch`: up to `d`, over at
    /// once when a drain round has started since (also one that started mid-iteration).
    pub async fn pause(&self, epoch: u64, d: Duration) {
        let woken = self.wake.notified();
        tokio::pin!(woken);
        // Registered before the epoch is compared, so a round starting in between still wakes.
        woken.as_mut().enable();
        if self.epoch() != epoch {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = woken => {}
        }
    }

    pub fn worked(&self) {
        self.work.fetch_add(1, Ordering::SeqCst);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::SeqCst);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// Waits until a full round passes in which every poller looked for work and found none.
    /// Returns false on timeout.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let work_before = self.work.load(Ordering::SeqCst);
            let target = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            // Once per round: each poller looks once, then pauses until the next round.
            self.wake.notify_waiters();
            loop {
                let all_idle = self
                    .idle
                    .lock()
                    .map(|idle| idle.values().all(|e| *e >= target))
                    .unwrap_or(true);
                if all_idle {
                    break;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if self.work.load(Ordering::SeqCst) == work_before {
                return true;
            }
        }
    }

    /// Records posting-to-now for the event that caused a bus event (its `cause_event_id`),
    /// or else for the latest event posted for `profile_id` (pass `None` for bus events not
    /// caused by an ingest).
    pub fn record_latency(&self, cause_event_id: Option<&str>, profile_id: Option<&str>) {
        let by_cause =
            cause_event_id.and_then(|c| self.posted_at.lock().ok().and_then(|m| m.get(c).copied()));
        let started = by_cause.or_else(|| {
            profile_id.and_then(|p| {
                self.posted_by_profile
                    .lock()
                    .ok()
                    .and_then(|m| m.get(p).copied())
            })
        });
        if let Some(t) = started {
            if let Ok(mut l) = self.ingest_to_email_ms.lock() {
                l.push(t.elapsed().as_millis() as u64);
            }
        }
    }
}

/// The `q`-quantile (0..=1) of `values` (nearest rank); `None` when empty.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[tokio::test]
    async fn drain_waits_for_every_poller() {
        let a = std::sync::Arc::new(Activity::default());
        a.register("p");
        assert!(
            !a.drain(Duration::from_millis(30)).await,
            "nobody reported idle"
        );
        let b = a.clone();
        let h = tokio::spawn(async move {
            for _ in 0..200 {
                let e = b.epoch();
                b.idle("p", e);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        assert!(a.drain(Duration::from_secs(2)).await);
        h.abort();
    }

    #[tokio::test]
    async fn drain_wakes_pollers_in_a_long_pause() {
        let a = std::sync::Arc::new(Activity::default());
        a.register("p");
        let b = a.clone();
        let h = tokio::spawn(async move {
            loop {
                let e = b.epoch();
                b.idle("p", e);
                b.pause(e, Duration::from_secs(30)).await;
            }
        });
        let started = Instant::now();
        assert!(a.drain(Duration::from_secs(5)).await);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "drain waited out the pause: {:?}",
            started.elapsed()
        );
        h.abort();
    }
}
