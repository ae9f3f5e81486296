//! Timers for delayed and deferred sends, and the sweeper that fires them.
//!
//! A timer is a ledger record in the minute bucket of its due time:
//! pk `timer#<YYYY-MM-DDTHH:MM>` (UTC), sk `<profile>#<campaign>#<trigger id>`. The sweeper
//! (EventBridge schedule, `rate(1 minute)`) keeps a cursor (pk `sweeper`, sk `cursor`: the
//! first bucket not yet swept), reads every complete bucket from the cursor up to now (at most
//! [`MAX_BUCKETS`] per run), re-reads each profile, re-evaluates the segment rules *now* and
//! sends only if the campaign still applies (a cart timer also needs the cart unchanged since
//! the timer was set: a later change set its own timer, a checkout emptied it). Handled timers
//! are deleted; the cursor only advances past buckets whose timers were all handled.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};
use ember_core::ports::{EventStream, Ledger, Mailer, ProfileStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::EmailError;
use crate::handler::{timer_candidate, Candidate, Email, Outcome, Skip};

pub const CURSOR_PK: &str = "sweeper";
pub const CURSOR_SK: &str = "cursor";
/// Buckets read per run (4 hours of minutes): a long outage catches up over several runs.
pub const MAX_BUCKETS: i64 = 240;
/// Where a first run (no cursor) starts.
pub const FIRST_LOOKBACK_MINUTES: i64 = 60;
/// Timers not fired within this time after they were due are dropped by TTL.
pub const TIMER_TTL_DAYS: i64 = 7;
const BUCKET_FORMAT: &str = "%Y-%m-%dT%H:%M";

/// A pending send, as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    pub profile_id: String,
    pub campaign: String,
    pub trigger_id: String,
    pub due_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart_updated_at: Option<DateTime<Utc>>,
    /// `delay` or `quiet_hours`.
    pub reason: String,
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

/// The ledger partition of the minute bucket holding `t`.
pub fn bucket_pk(t: DateTime<Utc>) -> String {
    format!("timer#{}", minute(t).format(BUCKET_FORMAT))
}

pub fn timer_sk(profile_id: &str, campaign: &str, trigger_id: &str) -> String {
    format!("{profile_id}#{campaign}#{trigger_id}")
}

fn parse_bucket(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, BUCKET_FORMAT)
        .ok()
        .map(|n| n.and_utc())
}

/// Writes a timer (idempotent). A due time already past is put in the next minute's bucket,
/// which the sweeper has not read yet.
pub async fn schedule<P, L, M, S>(
    email: &Email<P, L, M, S>,
    profile_id: &str,
    candidate: &Candidate<'_>,
    due: DateTime<Utc>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), EmailError>
where
    L: Ledger,
{
    let timer = Timer {
        profile_id: profile_id.to_owned(),
        campaign: candidate.campaign.name.clone(),
        trigger_id: candidate.trigger_id.clone(),
        due_at: due,
        cart_updated_at: candidate.cart_updated_at,
        reason: reason.to_owned(),
    };
    let bucket = due.max(minute(now) + Duration::minutes(1));
    let attrs = serde_json::to_value(&timer)
        .map_err(|e| EmailError::InvalidEvent(format!("timer: {e}")))?;
    email
        .ledger
        .claim(
            &bucket_pk(bucket),
            &timer_sk(profile_id, &timer.campaign, &timer.trigger_id),
            &attrs,
            Some(bucket + Duration::days(TIMER_TTL_DAYS)),
        )
        .await
        .map_err(EmailError::port("timer.put"))?;
    Ok(())
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq)]
pub struct SweepReport {
    pub buckets: i64,
    pub timers: usize,
    pub outcomes: Vec<Outcome>,
    /// The first bucket the next sweep will read.
    pub next_bucket: Option<DateTime<Utc>>,
}

/// Fires every timer in complete buckets between the cursor and `now`.
pub async fn sweep<P, L, M, S>(
    email: &Email<P, L, M, S>,
    now: DateTime<Utc>,
) -> Result<SweepReport, EmailError>
where
    P: ProfileStore,
    L: Ledger,
    M: Mailer,
    S: EventStream,
{
    let cursor = email
        .ledger
        .get(CURSOR_PK, CURSOR_SK)
        .await
        .map_err(EmailError::port("sweeper.cursor"))?;
    let current = minute(now);
    let start = cursor
        .as_ref()
        .and_then(|c| c.get("next_bucket"))
        .and_then(|v| v.as_str())
        .and_then(parse_bucket)
        .unwrap_or(current - Duration::minutes(FIRST_LOOKBACK_MINUTES));
    let mut report = SweepReport::default();
    let mut bucket = start;
    let mut failure = None;
    while bucket < current && report.buckets < MAX_BUCKETS {
        if let Err(e) = sweep_bucket(email, bucket, now, &mut report).await {
            tracing::error!(bucket = %bucket_pk(bucket), error = %e, "sweep stopped; bucket will be retried");
            failure = Some(e);
            break;
        }
        report.buckets += 1;
        bucket += Duration::minutes(1);
    }
    if bucket != start {
        // Not atomic, and need not be: two overlapping sweeps (a run longer than a minute)
        // read the same timers, but every send is claimed first, so nothing goes out twice;
        // a lost cursor only means re-reading the last hour (handled timers are deleted).
        email
            .ledger
            .delete(CURSOR_PK, CURSOR_SK)
            .await
            .map_err(EmailError::port("sweeper.cursor"))?;
        let attrs =
            json!({"next_bucket": bucket.format(BUCKET_FORMAT).to_string(), "swept_at": now});
        email
            .ledger
            .claim(CURSOR_PK, CURSOR_SK, &attrs, None)
            .await
            .map_err(EmailError::port("sweeper.cursor"))?;
    }
    report.next_bucket = Some(bucket);
    tracing::info!(
        buckets = report.buckets,
        timers = report.timers,
        sent = report.outcomes.iter().filter(|o| o.is_sent()).count(),
        "sweep done"
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn sweep_bucket<P, L, M, S>(
    email: &Email<P, L, M, S>,
    bucket: DateTime<Utc>,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> Result<(), EmailError>
where
    P: ProfileStore,
    L: Ledger,
    M: Mailer,
    S: EventStream,
{
    let pk = bucket_pk(bucket);
    let records = email
        .ledger
        .query(&pk, "")
        .await
        .map_err(EmailError::port("timer.query"))?;
    report.timers += records.len();
    let mut by_profile: BTreeMap<String, Vec<(String, Timer)>> = BTreeMap::new();
    for (sk, value) in records {
        match serde_json::from_value::<Timer>(value) {
            Ok(timer) => by_profile
                .entry(timer.profile_id.clone())
                .or_default()
                .push((sk, timer)),
            Err(e) => {
                tracing::error!(timer = %sk, error = %e, "unreadable timer dropped");
                email
                    .ledger
                    .delete(&pk, &sk)
                    .await
                    .map_err(EmailError::port("timer.delete"))?;
            }
        }
    }
    let mut failure = None;
    for (profile_id, timers) in by_profile {
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for (_, timer) in &timers {
            match timer_candidate(&email.campaigns, timer) {
                Some(c) => candidates.push(c),
                None => report.outcomes.push(Outcome::Ignored {
                    reason: format!("campaign {} no longer exists", timer.campaign),
                }),
            }
        }
        match email.deliver(&profile_id, &candidates, now).await {
            Ok(outcomes) => {
                for (sk, _) in &timers {
                    email
                        .ledger
                        .delete(&pk, sk)
                        .await
                        .map_err(EmailError::port("timer.delete"))?;
                }
                report.outcomes.extend(outcomes);
            }
            // Keep this profile's timers; carry on with the others, then fail the bucket.
            Err(e) => failure = Some(e),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether an outcome means the timer was cancelled rather than fired.
pub fn cancelled(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Skipped {
            reason: Skip::NoLongerApplies | Skip::CartChanged | Skip::EmptyCart,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_utc_minutes() {
        let t: DateTime<Utc> = "2026-11-23T12:34:56.789Z".parse().unwrap();
        assert_eq!(bucket_pk(t), "timer#2026-11-23T12:34");
        assert_eq!(parse_bucket("2026-11-23T12:34"), Some(minute(t)));
        assert_eq!(
            timer_sk("u-1", "cart_abandonment", "x"),
            "u-1#cart_abandonment#x"
        );
    }
}
