//! The global send rate: at most `per_second` emails in any one second across every
//! concurrent invocation (SES refuses what is over the account's rate), counted in the ledger
//! under `rate#<unix second>` with one conditional increment per email, expiring after an
//! hour. A send over the rate takes a slot in one of the next `max_wait_seconds` seconds and
//! waits for it; with none free it is deferred to a timer and sent later, never dropped.
//!
//! A slot is taken before the send is claimed, so a send that then turns out to be a
//! duplicate or capped leaves its slot unused: the rate is never exceeded, at worst not met.

use chrono::{DateTime, Duration, Utc};
use ember_core::ports::Ledger;

use crate::error::EmailError;

/// `EMAIL_SEND_RATE_PER_SECOND` (0: no limit) and how long a send may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRate {
    pub per_second: u64,
    pub max_wait_seconds: u32,
}

impl SendRate {
    pub const UNLIMITED: SendRate = SendRate {
        per_second: 0,
        max_wait_seconds: 0,
    };
}

/// When a send may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Now,
    /// Every slot within the wait is taken: try again at this time.
    Later(DateTime<Utc>),
}

/// Takes a slot for one email at `now` (waiting for it if it is in a later second).
pub async fn take<L: Ledger>(
    ledger: &L,
    rate: SendRate,
    now: DateTime<Utc>,
) -> Result<Slot, EmailError> {
    if rate.per_second == 0 {
        return Ok(Slot::Now);
    }
    let expires = Some(now + Duration::hours(1));
    for wait in 0..=rate.max_wait_seconds {
        let second = now.timestamp() + i64::from(wait);
        let taken = ledger
            .increment_below(&format!("rate#{second}"), "email", rate.per_second, expires)
            .await
            .map_err(EmailError::port("send_rate.take"))?;
        if taken {
            if wait > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(wait))).await;
            }
            return Ok(Slot::Now);
        }
    }
    Ok(Slot::Later(
        now + Duration::seconds(i64::from(rate.max_wait_seconds) + 1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::memory::MemoryLedger;

    #[tokio::test(start_paused = true)]
    async fn no_second_holds_more_than_the_rate_and_the_rest_is_deferred() {
        let ledger = MemoryLedger::default();
        let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let rate = SendRate {
            per_second: 2,
            max_wait_seconds: 1,
        };
        let mut slots = Vec::new();
        for _ in 0..5 {
            slots.push(take(&ledger, rate, now).await.unwrap());
        }
        let later = now + Duration::seconds(2);
        assert_eq!(
            slots,
            [
                Slot::Now,
                Slot::Now,
                Slot::Now,
                Slot::Now,
                Slot::Later(later)
            ]
        );
        for second in [now.timestamp(), now.timestamp() + 1] {
            let counter = ledger
                .get(&format!("rate#{second}"), "email")
                .await
                .unwrap();
            assert_eq!(counter.unwrap()["count"], 2);
        }
        assert_eq!(
            take(&ledger, SendRate::UNLIMITED, now).await.unwrap(),
            Slot::Now
        );
    }
}
