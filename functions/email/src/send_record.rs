//! The send record `send#<profile>` / `<campaign>#<trigger>`: who holds a send and how far it
//! got, so each trigger sends at most one email and never silently none.
//!
//! It records who holds it (`owner`, one id per attempt) and a state: `claimed` → `sending` (written just before the
//! SES call) → `sent`, `rejected`, or `unknown`.
//! - A claim whose answer was lost is recognised on the retry by its owner (not taken for a
//!   duplicate). A `claimed` record older than [`SEND_LEASE`] belongs to an attempt that died
//!   before calling SES: taken over. A fresh `claimed` or `sending` record of another attempt
//!   means a send in progress: the event is retried later (the timer is kept).
//! - SES refused the request (throttling, quota): nothing went out; the record goes back to
//!   `claimed` for the retry. A rejected recipient is suppressed (`rejected`), never retried.
//! - No answer (timeout, lost connection, SES failure): the email may have gone out. The
//!   record becomes `unknown`, an error is logged (no address), and nothing is sent again
//!   automatically; [`Email::redrive`] re-sends one after an operator has checked. A `sending`
//!   record older than the lease (the attempt died during the call) becomes `unknown` too.

use chrono::{DateTime, Duration, Utc};
use ember_core::metrics::{Metrics, Recorder};
use ember_core::ports::{EventStream, Ledger, Mailer, PortError, ProfileStore};
use serde_json::{json, Value};

use crate::error::EmailError;
use crate::handler::{Candidate, Email};
use crate::timers;

/// How long a send record is kept: replays older than this could send again.
pub const CLAIM_TTL_DAYS: i64 = 90;
/// How long an attempt may hold a send record before another attempt may act on it: well
/// above the function's timeout.
pub const SEND_LEASE: Duration = Duration::minutes(5);

/// The state of a send record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    Claimed,
    Sending,
    Sent,
    Rejected,
    Unknown,
    /// In the campaign's holdout: recorded when the email would have gone, never sent.
    HeldOut,
}

impl SendState {
    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Claimed => "claimed",
            SendState::Sending => "sending",
            SendState::Sent => "sent",
            SendState::Rejected => "rejected",
            SendState::Unknown => "unknown",
            SendState::HeldOut => "held_out",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<SendState> {
        Some(match s {
            "claimed" => SendState::Claimed,
            "sending" => SendState::Sending,
            "sent" => SendState::Sent,
            "rejected" => SendState::Rejected,
            "unknown" => SendState::Unknown,
            "held_out" => SendState::HeldOut,
            _ => return None,
        })
    }
}
/// `send#<profile>`: the partition of a profile's send claims.
pub fn send_pk(profile_id: &str) -> String {
    format!("send#{profile_id}")
}

/// `<campaign>#<trigger id>`: one send claim.
pub fn send_sk(campaign: &str, trigger_id: &str) -> String {
    format!("{campaign}#{trigger_id}")
}

impl<P, L, M, S> Email<P, L, M, S>
where
    P: ProfileStore,
    L: Ledger,
    M: Mailer,
    S: EventStream,
{
    /// Claims the send record for `record.owner`; see the module doc for what an existing
    /// record means.
    pub(crate) async fn claim_send(&self, record: &SendRecord<'_>) -> Result<Claimed, EmailError> {
        let expiry = Some(record.now + Duration::days(CLAIM_TTL_DAYS));
        let fresh = record.attrs(SendState::Claimed, None);
        for _ in 0..2 {
            if self
                .ledger
                .claim(record.pk, record.sk, &fresh, expiry)
                .await
                .map_err(EmailError::port("claim"))?
            {
                return Ok(Claimed::Ours);
            }
            let Some(existing) = self
                .ledger
                .get(record.pk, record.sk)
                .await
                .map_err(EmailError::port("claim.get"))?
            else {
                continue; // deleted meanwhile (capped, released): claim again
            };
            let owner = existing["owner"].as_str().unwrap_or_default();
            if owner == record.owner {
                return Ok(Claimed::Ours); // our claim landed; its answer was lost
            }
            let state = existing["state"].as_str().and_then(SendState::parse);
            let stale = is_stale(&existing, record.now);
            let take = |from: SendState, to: SendState| {
                let expected = serde_json::json!({"owner": owner, "state": from.as_str()});
                (expected, record.attrs(to, None))
            };
            match state {
                // A record written before send states existed: that send went out.
                None
                | Some(SendState::Sent)
                | Some(SendState::Rejected)
                | Some(SendState::HeldOut) => return Ok(Claimed::Done),
                Some(SendState::Unknown) => return Ok(Claimed::Unknown),
                Some(SendState::Claimed) if stale => {
                    // The holder died before calling SES: take the record over.
                    let (expected, mine) = take(SendState::Claimed, SendState::Claimed);
                    if self
                        .ledger
                        .replace_if(record.pk, record.sk, &expected, &mine, expiry)
                        .await
                        .map_err(EmailError::port("claim.takeover"))?
                    {
                        return Ok(Claimed::Ours);
                    }
                }
                Some(SendState::Sending) if stale => {
                    // The holder died during the SES call: the email may have gone out.
                    let expected =
                        serde_json::json!({"owner": owner, "state": SendState::Sending.as_str()});
                    let mut unknown = send_fields(&existing);
                    unknown["state"] = SendState::Unknown.as_str().into();
                    self.ledger
                        .replace_if(record.pk, record.sk, &expected, &unknown, expiry)
                        .await
                        .map_err(EmailError::port("claim.unknown"))?;
                    tracing::error!(campaign = %record.campaign, trigger_id = %ember_core::privacy::redact_addresses(record.trigger_id), outcome = "unknown", "a send attempt died during the SES call; recorded as unknown, not retried");
                    unknown_outcome_metric(&self.metrics);
                    return Ok(Claimed::Unknown);
                }
                Some(_) => {
                    return Err(EmailError::Port {
                        stage: "claim",
                        source: PortError::Transient {
                            stage: "claim",
                            reason: "another attempt is sending this email; retry later".into(),
                        },
                    })
                }
            }
        }
        Err(EmailError::Port {
            stage: "claim",
            source: PortError::Transient {
                stage: "claim",
                reason: "the send record changed while it was claimed; retry later".into(),
            },
        })
    }

    /// Lets an operator re-send an email whose outcome is unknown (after checking it did not
    /// arrive): the record is handed to a new attempt and a timer fires the send at the next
    /// sweep. `Ok(false)` if the record is not `unknown`.
    pub async fn redrive(
        &self,
        profile_id: &str,
        campaign: &str,
        trigger_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, EmailError> {
        let (pk, sk) = (send_pk(profile_id), send_sk(campaign, trigger_id));
        let Some(existing) = self
            .ledger
            .get(&pk, &sk)
            .await
            .map_err(EmailError::port("claim.get"))?
        else {
            return Ok(false);
        };
        if existing["state"].as_str() != Some(SendState::Unknown.as_str()) {
            return Ok(false);
        }
        let config = self.config().await?;
        let Some(campaign_ref) = config.config.campaigns.get(campaign) else {
            return Ok(false);
        };
        // A `claimed` record past its lease: the next attempt takes it over.
        let mut handed = send_fields(&existing);
        handed["state"] = SendState::Claimed.as_str().into();
        handed["owner"] = "redrive".into();
        handed["at"] = (now - SEND_LEASE - Duration::seconds(1))
            .to_rfc3339()
            .into();
        let expected = serde_json::json!({"state": SendState::Unknown.as_str()});
        let expiry = Some(now + Duration::days(CLAIM_TTL_DAYS));
        if !self
            .ledger
            .replace_if(&pk, &sk, &expected, &handed, expiry)
            .await
            .map_err(EmailError::port("claim.redrive"))?
        {
            return Ok(false);
        }
        let candidate = Candidate {
            campaign: campaign_ref,
            trigger_id: trigger_id.to_owned(),
            cart_updated_at: None,
            trace: None,
        };
        timers::schedule(self, profile_id, &candidate, now, "redrive", now).await?;
        Ok(true)
    }
}

/// One attempt's view of a send record.
pub(crate) struct SendRecord<'a> {
    pub(crate) pk: &'a str,
    pub(crate) sk: &'a str,
    pub(crate) campaign: &'a str,
    pub(crate) trigger_id: &'a str,
    /// This attempt's id.
    pub(crate) owner: String,
    pub(crate) now: DateTime<Utc>,
    /// The configuration version the email is rendered with.
    pub(crate) config_version: u64,
    /// The trace of the request that caused it, to find the whole path from the email.
    pub(crate) trace: Option<&'a str>,
    /// The campaign group the customer is in (a variant, or the holdout).
    pub(crate) group: &'a str,
}

impl SendRecord<'_> {
    pub(crate) fn attrs(&self, state: SendState, message_id: Option<&str>) -> Value {
        let mut v = json!({
            "campaign": self.campaign,
            "trigger_id": self.trigger_id,
            "owner": self.owner,
            "state": state.as_str(),
            "at": self.now.to_rfc3339(),
            "config_version": self.config_version,
            "group": self.group,
        });
        if let Some(id) = message_id {
            v["message_id"] = id.into();
        }
        if let Some(t) = self.trace {
            v["trace"] = t.into();
        }
        v
    }

    /// Moves the record from `from` to `to` if this attempt still holds it (compare-and-set,
    /// safe to retry), retrying transient failures briefly: after a send, losing the state
    /// would turn "sent" into "unknown".
    pub(crate) async fn advance<L: Ledger>(
        &self,
        ledger: &L,
        from: SendState,
        to: SendState,
        message_id: Option<&str>,
    ) -> Result<(), EmailError> {
        let expected = json!({"owner": self.owner, "state": from.as_str()});
        let attrs = self.attrs(to, message_id);
        let expiry = Some(self.now + Duration::days(CLAIM_TTL_DAYS));
        let mut attempt = 0;
        loop {
            match ledger
                .replace_if(self.pk, self.sk, &expected, &attrs, expiry)
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    return Err(EmailError::Port {
                        stage: "claim.state",
                        source: PortError::Conflict(format!(
                            "send record no longer {} for this attempt",
                            from.as_str()
                        )),
                    })
                }
                Err(e) if e.is_retryable() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => return Err(EmailError::port("claim.state")(e)),
            }
        }
    }
}

/// Counts a send whose outcome is unknown (metric `EmailOutcomeUnknown`; alarm on it: each
/// one is an email an operator should check and maybe re-drive).
pub(crate) fn unknown_outcome_metric(metrics: &Metrics) {
    let mut counted = Recorder::default();
    counted.count(&ember_core::metrics::EMAIL_OUTCOME_UNKNOWN, &[], 1);
    metrics.flush(counted, chrono::Utc::now());
}

/// What claiming a send record found.
pub(crate) enum Claimed {
    /// This attempt holds it: go on.
    Ours,
    /// Sent (or refused) before.
    Done,
    /// A send whose outcome is unknown: not repeated automatically.
    Unknown,
}

/// The fields of a send record (without what the store adds, such as its expiry).
pub(crate) fn send_fields(record: &Value) -> Value {
    let mut out = json!({});
    for name in [
        "campaign",
        "trigger_id",
        "owner",
        "state",
        "at",
        "message_id",
        "group",
    ] {
        if let Some(v) = record.get(name) {
            out[name] = v.clone();
        }
    }
    out
}

/// Whether a record's `at` is older than the lease.
pub(crate) fn is_stale(record: &Value, now: DateTime<Utc>) -> bool {
    record["at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_none_or(|at| now - at.with_timezone(&Utc) > SEND_LEASE)
}

/// What an existing send record says before an attempt claims it.
pub(crate) enum Recorded {
    /// Sent or refused (a record without a state predates send states: it was sent).
    Done,
    Unknown,
    /// Claimed or being sent by an attempt, maybe a dead one.
    Held,
}

pub(crate) fn recorded_state(record: &Value) -> Recorded {
    match record["state"].as_str().and_then(SendState::parse) {
        None | Some(SendState::Sent) | Some(SendState::Rejected) | Some(SendState::HeldOut) => {
            Recorded::Done
        }
        Some(SendState::Unknown) => Recorded::Unknown,
        Some(SendState::Claimed) | Some(SendState::Sending) => Recorded::Held,
    }
}
