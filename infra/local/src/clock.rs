//! The local run's clock.
//!
//! `ember-local replay` replays a week of events in a minute, so "now" for the functions
//! (quiet hours, cart-abandonment timers, churn windows, webhook timestamp windows) must follow
//! the *event time* of the replay, not the wall clock: the clock starts at the first event's
//! `occurred_at`, moves forward to each event's `occurred_at` as it is posted (never
//! backwards), and the scheduled sweeper fires on that simulated time. `ember-local serve`
//! uses the wall clock.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

#[derive(Debug, Default)]
pub struct SimClock {
    /// `None` = wall clock.
    at: Mutex<Option<DateTime<Utc>>>,
}

impl SimClock {
    /// A clock that follows the wall clock.
    pub fn wall() -> Self {
        SimClock {
            at: Mutex::new(None),
        }
    }

    /// A simulated clock starting at `start`.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        SimClock {
            at: Mutex::new(Some(start)),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.at
            .lock()
            .ok()
            .and_then(|a| *a)
            .unwrap_or_else(Utc::now)
    }

    /// Moves a simulated clock forward to `t` (never backwards); no-op on the wall clock.
    pub fn advance_to(&self, t: DateTime<Utc>) {
        if let Ok(mut at) = self.at.lock() {
            if let Some(cur) = *at {
                if t > cur {
                    *at = Some(t);
                }
            }
        }
    }

    pub fn is_simulated(&self) -> bool {
        self.at.lock().map(|a| a.is_some()).unwrap_or(false)
    }
}

/// The functions read "now" through the run's clock (token expiry, ledger TTLs, caps).
impl ember_core::clock::Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        SimClock::now(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_only_moves_forward() {
        let t0: DateTime<Utc> = "2026-11-02T10:00:00Z".parse().unwrap();
        let c = SimClock::starting_at(t0);
        c.advance_to(t0 + chrono::Duration::hours(2));
        c.advance_to(t0 + chrono::Duration::hours(1));
        assert_eq!(c.now(), t0 + chrono::Duration::hours(2));
        assert!(c.is_simulated());
        assert!(!SimClock::wall().is_simulated());
    }
}
