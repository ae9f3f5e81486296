//! Timers for delayed and deferred sends, and the sweeper that fires them.
//!
//! A timer is a ledger record in the minute bucket of its due time:
//! pk `timer#<YYYY-MM-DDTHH:MM>` (UTC), sk `<profile>#<campaign>#<trigger id>`. Before the
//! timer is written, its bucket is marked in a sparse hourly index (pk
//! `timer-index#<YYYY-MM-DDTHH>`, sk `<YYYY-MM-DDTHH:MM>`), so the sweeper reads only minutes
//! that hold timers: one index query per hour of catch-up instead of one query per minute.
//!
//! The sweeper (EventBridge schedule, `rate(1 minute)`) keeps a cursor (pk `sweeper`, sk
//! `cursor`: the first minute not yet swept), reads the index from the cursor up to now (never
//! further back than [`TIMER_TTL_DAYS`], whose timers have expired), and for every marked,
//! complete bucket (at most [`MAX_BUCKETS`] per run) re-reads each profile, re-evaluates the
//! segment rules *now* and sends only if the campaign still applies (a cart timer also needs
//! the cart unchanged since the timer was set: a later change set its own timer, a checkout
//! emptied it). Handled timers are deleted; the cursor only advances past buckets whose
//! timers were all read and settled. Index markers are never deleted (the cursor has passed
//! them); they expire with their timers.
//!
//! One timer never holds up the others: a timer whose send fails is moved to the next
//! minute's bucket with its attempt count, and after [`MAX_TIMER_ATTEMPTS`] attempts, or at
//! once when the failure is permanent (say, a stored profile that no longer decodes), it goes
//! to the dead-letter partition ([`DEAD_TIMERS_PK`], sk `<bucket>#<timer sk>`) with its
//! reason, for an operator to look at and re-drive. The bucket is settled either way.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};
use ember_core::ports::{EventStream, Ledger, Mailer, ProfileStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::EmailError;
use crate::handler::{timer_candidate, Candidate, Config, Email, Outcome, Skip};

pub const CURSOR_PK: &str = "sweeper";
pub const CURSOR_SK: &str = "cursor";
/// Non-empty buckets swept per run: a long outage with many timers catches up over several runs.
pub const MAX_BUCKETS: i64 = 240;
/// Where a first run (no cursor) starts.
pub const FIRST_LOOKBACK_MINUTES: i64 = 60;
/// Timers not fired within this time after they were due are dropped by TTL.
pub const TIMER_TTL_DAYS: i64 = 7;
/// Attempts of a timer whose send keeps failing before it is dead-lettered.
pub const MAX_TIMER_ATTEMPTS: u32 = 10;
/// The ledger partition of timers that could not be fired, with their reasons.
pub const DEAD_TIMERS_PK: &str = "timer-dead";
/// How long a dead-lettered timer is kept.
pub const DEAD_TIMER_TTL_DAYS: i64 = 30;
const BUCKET_FORMAT: &str = "%Y-%m-%dT%H:%M";
const HOUR_FORMAT: &str = "%Y-%m-%dT%H";

/// A pending send, as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    pub profile_id: String,
    pub campaign: String,
    pub trigger_id: String,
    pub due_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart_updated_at: Option<DateTime<Utc>>,
    /// `delay`, `quiet_hours` or `redrive`.
    pub reason: String,
    /// Failed attempts to fire it so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

fn hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).unwrap_or(t)
}

/// The ledger partition of the minute bucket holding `t`.
pub fn bucket_pk(t: DateTime<Utc>) -> String {
    format!("timer#{}", minute(t).format(BUCKET_FORMAT))
}

/// The index partition listing the non-empty buckets of the hour holding `t`.
pub fn index_pk(t: DateTime<Utc>) -> String {
    format!("timer-index#{}", hour(t).format(HOUR_FORMAT))
}

fn index_sk(bucket: DateTime<Utc>) -> String {
    minute(bucket).format(BUCKET_FORMAT).to_string()
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
        attempts: 0,
    };
    put_timer(email, &timer, now).await
}

/// Writes `timer` into the first bucket the sweeper has not read yet at or after its due time.
async fn put_timer<P, L, M, S>(
    email: &Email<P, L, M, S>,
    timer: &Timer,
    now: DateTime<Utc>,
) -> Result<(), EmailError>
where
    L: Ledger,
{
    let (profile_id, due) = (timer.profile_id.as_str(), timer.due_at);
    let bucket = due.max(minute(now) + Duration::minutes(1));
    let attrs =
        serde_json::to_value(timer).map_err(|e| EmailError::InvalidEvent(format!("timer: {e}")))?;
    let expires = Some(bucket + Duration::days(TIMER_TTL_DAYS));
    // Index first: a marker without a timer costs the sweeper one empty read, a timer
    // without a marker would never fire.
    email
        .ledger
        .claim(&index_pk(bucket), &index_sk(bucket), &json!({}), expires)
        .await
        .map_err(EmailError::port("timer.index"))?;
    email
        .ledger
        .claim(
            &bucket_pk(bucket),
            &timer_sk(profile_id, &timer.campaign, &timer.trigger_id),
            &attrs,
            expires,
        )
        .await
        .map_err(EmailError::port("timer.put"))?;
    Ok(())
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq)]
pub struct SweepReport {
    /// Hours of the index read.
    pub index_reads: i64,
    /// Non-empty buckets swept.
    pub buckets: i64,
    pub timers: usize,
    pub outcomes: Vec<Outcome>,
    /// Timers whose send failed and that wait in a later bucket.
    pub retried: usize,
    /// Timers moved to the dead-letter partition.
    pub dead_lettered: usize,
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
    let config = email.config().await?;
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
        .unwrap_or(current - Duration::minutes(FIRST_LOOKBACK_MINUTES))
        .max(current - Duration::days(TIMER_TTL_DAYS));
    let mut report = SweepReport::default();
    let (bucket, failure) = sweep_from(email, &config, start, current, now, &mut report).await;
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
        index_reads = report.index_reads,
        buckets = report.buckets,
        timers = report.timers,
        sent = report.outcomes.iter().filter(|o| o.is_sent()).count(),
        retried = report.retried,
        dead_lettered = report.dead_lettered,
        "sweep done"
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Sweeps the marked buckets in `[start, current)` in order; returns the first bucket not
/// swept (`current` when done) and the failure that stopped the sweep, if any.
async fn sweep_from<P, L, M, S>(
    email: &Email<P, L, M, S>,
    config: &Config,
    start: DateTime<Utc>,
    current: DateTime<Utc>,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> (DateTime<Utc>, Option<EmailError>)
where
    P: ProfileStore,
    L: Ledger,
    M: Mailer,
    S: EventStream,
{
    let mut h = hour(start);
    while h < current {
        let markers = match email.ledger.query(&index_pk(h), "").await {
            Ok(m) => m,
            Err(e) => {
                let e = EmailError::port("timer.index")(e);
                tracing::error!(index = %index_pk(h), error = %e, "sweep stopped; hour will be re-read");
                return (start.max(h), Some(e));
            }
        };
        report.index_reads += 1;
        let buckets = markers
            .iter()
            .filter_map(|(sk, _)| parse_bucket(sk))
            .filter(|b| *b >= start && *b < current);
        for bucket in buckets {
            if report.buckets >= MAX_BUCKETS {
                return (bucket, None);
            }
            if let Err(e) = sweep_bucket(email, config, bucket, now, report).await {
                tracing::error!(bucket = %bucket_pk(bucket), error = %e, "sweep stopped; bucket will be retried");
                return (bucket, Some(e));
            }
            report.buckets += 1;
        }
        h += Duration::hours(1);
    }
    (current.max(start), None)
}

async fn sweep_bucket<P, L, M, S>(
    email: &Email<P, L, M, S>,
    config: &Config,
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
        match serde_json::from_value::<Timer>(value.clone()) {
            Ok(timer) => by_profile
                .entry(timer.profile_id.clone())
                .or_default()
                .push((sk, timer)),
            Err(e) => {
                tracing::error!(error = %e, "unreadable timer dead-lettered");
                let attrs = json!({"raw": value.to_string()});
                dead_letter(email, bucket, &sk, attrs, &e.to_string(), now).await?;
                report.dead_lettered += 1;
                email
                    .ledger
                    .delete(&pk, &sk)
                    .await
                    .map_err(EmailError::port("timer.delete"))?;
            }
        }
    }
    for (profile_id, timers) in by_profile {
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for (_, timer) in &timers {
            match timer_candidate(&config.config.campaigns, timer) {
                Some(c) => candidates.push(c),
                None => report.outcomes.push(Outcome::Ignored {
                    reason: format!("campaign {} no longer exists", timer.campaign),
                }),
            }
        }
        match email.deliver(&profile_id, &candidates, config, now).await {
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
            // Only this profile's timers are held back: retried in the next minute's bucket,
            // or dead-lettered; the others go on.
            Err(e) => {
                for (sk, timer) in timers {
                    settle_failed(email, bucket, &sk, timer, &e, now, report).await?;
                }
            }
        }
    }
    Ok(())
}

/// A timer whose send failed: into the next minute's bucket while attempts are left and the
/// failure may pass, else into the dead-letter partition with the reason. Its old record
/// goes once the new one is written.
async fn settle_failed<P, L, M, S>(
    email: &Email<P, L, M, S>,
    bucket: DateTime<Utc>,
    sk: &str,
    mut timer: Timer,
    error: &EmailError,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> Result<(), EmailError>
where
    L: Ledger,
{
    timer.attempts += 1;
    let reason = crate::handler::redact(&error.to_string());
    if error.is_retryable() && timer.attempts < MAX_TIMER_ATTEMPTS {
        tracing::warn!(campaign = %timer.campaign, attempts = timer.attempts, error = %reason, "timer failed; retried in the next minute");
        put_timer(email, &timer, now).await?;
        report.retried += 1;
    } else {
        tracing::error!(campaign = %timer.campaign, attempts = timer.attempts, error = %reason, "timer dead-lettered");
        let attrs = serde_json::to_value(&timer)
            .map_err(|e| EmailError::InvalidEvent(format!("timer: {e}")))?;
        dead_letter(email, bucket, sk, attrs, &reason, now).await?;
        report.dead_lettered += 1;
    }
    email
        .ledger
        .delete(&bucket_pk(bucket), sk)
        .await
        .map_err(EmailError::port("timer.delete"))
}

/// Keeps a timer that cannot be fired in the dead-letter partition, with why.
async fn dead_letter<P, L, M, S>(
    email: &Email<P, L, M, S>,
    bucket: DateTime<Utc>,
    sk: &str,
    mut attrs: serde_json::Value,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), EmailError>
where
    L: Ledger,
{
    attrs["error"] = error.into();
    attrs["failed_at"] = now.to_rfc3339().into();
    email
        .ledger
        .claim(
            DEAD_TIMERS_PK,
            &format!("{}#{sk}", index_sk(bucket)),
            &attrs,
            Some(now + Duration::days(DEAD_TIMER_TTL_DAYS)),
        )
        .await
        .map_err(EmailError::port("timer.dead_letter"))
        .map(|_| ())
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
