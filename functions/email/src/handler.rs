//! The email handler: segment-bus events in, at most one personalised email per
//! (profile, campaign, trigger) out.
//!
//! Order of checks for one candidate campaign (cheap and side-effect free first):
//! 1. the campaign still applies (segments re-evaluated now; a cart trigger's cart unchanged);
//! 2. address present, marketing consent, not suppressed (profile flag or hashed ledger entry);
//! 3. not sent before (a send record exists → duplicate);
//! 4. outside quiet hours in the user's zone, else deferred to a timer at the window's end;
//! 5. render (strict templates), then a slot of the global send rate (else deferred);
//! 6. the send record `send#<profile>` / `<campaign>#<trigger>` ([`SendState`]) is claimed;
//! 7. frequency caps (campaign per day, global per day; charged once per trigger);
//! 8. SES send, at most once per trigger: the send record ([`crate::send_record`]) makes the
//!    send at most once and never silently none.

use std::collections::BTreeSet;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Duration, Utc};
use ember_aws::sesv2::STAGE_RECIPIENT;
use ember_core::event::{Context, Envelope, EventHeader, EventType, ANON_PREFIX};
use ember_core::ports::{
    BusEvent, EmailMessage, EventStream, Ledger, Mailer, PortError, ProfileStore, SendError,
    StreamRecord,
};
use ember_core::privacy::masked;
use ember_core::profile::Profile;
use ember_core::trace::TraceContext;
use std::sync::Arc;

use ember_core::config::{Active, ConfigSource};
use ember_core::metrics::{self, Metrics, Recorder};
use ember_core::unsubscribe::{self, suppression_key, Keys, Unsubscribe, SUPPRESSION_PK};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::campaign::{Campaign, Campaigns, OnBackfill, Trigger};
use crate::compiled::Compiled;
use crate::error::EmailError;
use crate::experiment::Group;
use crate::render::Links;
use crate::send_rate::{self, SendRate, Slot};
use crate::send_record::{
    recorded_state, send_pk, send_sk, unknown_outcome_metric, Claimed, Recorded, SendRecord,
    SendState,
};
use crate::tags;
use crate::timers::{self, Timer};

/// The header naming the configuration version an email was rendered with.
pub const CONFIG_VERSION_HEADER: &str = "X-Ember-Config-Version";

/// Detail type of the EventBridge schedule that drives the sweeper.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// How messages are addressed and signed (part of [`crate::Settings`]).
#[derive(Debug, Clone)]
pub struct MessageSettings {
    /// `From` address (`EMBER_SENDER`), e.g. `Ember Hot Sauce <shop@example.com>`.
    pub sender: String,
    /// Public base URL (`EMBER_PUBLIC_BASE_URL`) for shop and unsubscribe links.
    pub public_base_url: String,
    pub unsubscribe_keys: Keys,
}

/// Why a candidate was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NoProfile,
    NoAddress,
    NoConsent,
    Suppressed,
    CampaignCap,
    GlobalCap,
    /// Re-evaluated segments no longer match the campaign.
    NoLongerApplies,
    EmptyCart,
    /// The cart changed after this timer was set: its own timer decides.
    CartChanged,
    /// A higher-priority campaign was sent to this profile in the same run.
    Superseded,
    /// SES refused the recipient; suppressed.
    Rejected,
    /// A segment entry found by a configuration publish's backfill, and the campaign does
    /// not send on those (`on_backfill: skip`, the default).
    Backfill,
}

impl Skip {
    /// The reason's name in reports (`no_consent`, `campaign_cap`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NoProfile => "no_profile",
            Skip::NoAddress => "no_address",
            Skip::NoConsent => "no_consent",
            Skip::Suppressed => "suppressed",
            Skip::CampaignCap => "campaign_cap",
            Skip::GlobalCap => "global_cap",
            Skip::NoLongerApplies => "no_longer_applies",
            Skip::EmptyCart => "empty_cart",
            Skip::CartChanged => "cart_changed",
            Skip::Superseded => "superseded",
            Skip::Rejected => "rejected",
            Skip::Backfill => "backfill",
        }
    }
}

/// What happened to one (campaign, trigger).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        campaign: String,
        message_id: String,
    },
    Duplicate {
        campaign: String,
    },
    Scheduled {
        campaign: String,
        due: DateTime<Utc>,
    },
    /// Sent later by a timer: `quiet_hours` or `send_rate`.
    Deferred {
        campaign: String,
        until: DateTime<Utc>,
        reason: &'static str,
    },
    Skipped {
        campaign: String,
        reason: Skip,
    },
    /// In the campaign's holdout: recorded as would-have-been-sent, not sent.
    HeldOut {
        campaign: String,
    },
    /// The SES call got no answer: the email may have gone out. Recorded, not retried.
    Unknown {
        campaign: String,
    },
    Ignored {
        reason: String,
    },
}

impl Outcome {
    pub fn is_sent(&self) -> bool {
        matches!(self, Outcome::Sent { .. })
    }

    /// Why it was skipped, if it was.
    pub fn skipped(&self) -> Option<Skip> {
        match self {
            Outcome::Skipped { reason, .. } => Some(*reason),
            _ => None,
        }
    }
    /// Whether lower-priority candidates must not be tried after this one.
    fn stops(&self) -> bool {
        !matches!(
            self,
            Outcome::Skipped {
                reason: Skip::CampaignCap
                    | Skip::NoLongerApplies
                    | Skip::EmptyCart
                    | Skip::CartChanged,
                ..
            }
        )
    }
}

/// One candidate send: which campaign, for which trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub campaign: &'a Campaign,
    pub trigger_id: String,
    /// For cart triggers: the cart version the email is about.
    pub cart_updated_at: Option<DateTime<Utc>>,
    /// The trace of the event that caused it (W3C `traceparent`), kept on the send record.
    pub trace: Option<String>,
}

/// The email function, generic over its ports.
pub struct Email<P, L, M, S> {
    pub profiles: P,
    pub ledger: L,
    pub mailer: M,
    pub stream: S,
    /// Rules, campaigns and templates in force (the built-in ones until a publish).
    pub config: ConfigSource<Compiled>,
    pub settings: MessageSettings,
    /// The most emails per second across all invocations (the SES account's rate).
    pub send_rate: SendRate,
    /// Where each invocation's metrics are written.
    pub metrics: Metrics,
}

/// The configuration version one invocation uses throughout.
pub type Config = Active<Compiled>;

pub(crate) fn cap_pk(profile_id: &str) -> String {
    format!("cap#{profile_id}")
}

/// The day caps count in: the customer's local date.
pub(crate) fn cap_day(now: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    now.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// The address to send to, or why there is none: no address, no email consent, or
/// suppressed (on the profile, or a hashed ledger entry written before the profile knew).
pub(crate) async fn reachable<'p, L: Ledger + ?Sized>(
    ledger: &L,
    profile: &'p Profile,
) -> Result<Result<&'p str, Skip>, EmailError> {
    let Some(address) = profile.email().map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(Err(Skip::NoAddress));
    };
    if !profile.has_consent("email") {
        return Ok(Err(Skip::NoConsent));
    }
    if profile.email_status.suppressed.is_some() {
        return Ok(Err(Skip::Suppressed));
    }
    let suppressed = ledger
        .get(SUPPRESSION_PK, &suppression_key(address))
        .await
        .map_err(EmailError::port("suppression.get"))?;
    Ok(match suppressed {
        Some(_) => Err(Skip::Suppressed),
        None => Ok(address),
    })
}

/// Trigger id of a cart change: its `updated_at` (RFC 3339, milliseconds, `Z`).
pub fn cart_trigger_id(updated_at: DateTime<Utc>) -> String {
    updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Sets envelope ids for a profile id (`anon:<x>` → anonymous id).
pub fn identify(envelope: &mut Envelope, profile_id: &str) {
    match profile_id.strip_prefix(ANON_PREFIX) {
        Some(anon) => envelope.header.anonymous_id = Some(anon.to_owned().into()),
        None => envelope.header.user_id = Some(profile_id.to_owned().into()),
    }
}

/// One Kinesis record for an Ember event about `profile_id`.
pub fn stream_record(envelope: &Envelope) -> Result<StreamRecord, EmailError> {
    let data = serde_json::to_vec(envelope)
        .map_err(|e| EmailError::InvalidEvent(format!("cannot encode event: {e}")))?;
    let partition_key = envelope
        .profile_key()
        .ok_or_else(|| EmailError::InvalidEvent("event has no profile".into()))?;
    Ok(StreamRecord {
        partition_key,
        data,
    })
}

impl<P, L, M, S> Email<P, L, M, S>
where
    P: ProfileStore,
    L: Ledger,
    M: Mailer,
    S: EventStream,
{
    /// Entry point for everything EventBridge delivers to the function: segment-bus events
    /// and the sweeper's schedule.
    pub async fn handle(
        &self,
        event: &EventBridgeEvent<Value>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, EmailError> {
        let result = self.route(event, now).await;
        if let Ok(outcomes) = &result {
            let ingested_at = match &event.detail {
                d if event.detail_type != SCHEDULED_EVENT => d["ingested_at"]
                    .as_str()
                    .and_then(ember_core::event::read_timestamp),
                _ => None,
            };
            self.metrics
                .flush(count_outcomes(outcomes, ingested_at), Utc::now());
        }
        result
    }

    async fn route(
        &self,
        event: &EventBridgeEvent<Value>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, EmailError> {
        if event.detail_type == SCHEDULED_EVENT {
            let report = timers::sweep(self, now).await?;
            return Ok(report.outcomes);
        }
        let Some(bus) = BusEvent::from_parts(&event.detail_type, event.detail.clone()) else {
            return match event.detail_type.as_str() {
                "SegmentEntered" | "SegmentExited" | "CartUpdated" => {
                    Err(EmailError::InvalidEvent(format!(
                        "{} detail does not match its schema",
                        event.detail_type
                    )))
                }
                other => Ok(vec![Outcome::Ignored {
                    reason: format!("detail type {other:?} is not for email"),
                }]),
            };
        };
        // An event decided by a version this sandbox has not read yet (a publish within the
        // TTL) reads it now: a new segment's campaign is never missed.
        let decided_by = match &bus {
            BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) => c.config_version,
            _ => 0,
        };
        let config = self
            .config
            .at_least(decided_by)
            .await
            .map_err(EmailError::port("config.read"))?;
        self.handle_bus(&bus, &config, now).await
    }

    /// The configuration version in force (one per invocation).
    pub async fn config(&self) -> Result<Arc<Config>, EmailError> {
        self.config
            .active()
            .await
            .map_err(EmailError::port("config.read"))
    }

    pub async fn handle_bus(
        &self,
        bus: &BusEvent,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, EmailError> {
        let (trigger, segment, profile_id, trigger_id, at, cart_at) = match bus {
            BusEvent::SegmentEntered(c) => (
                Trigger::SegmentEntered,
                Some(c.segment.as_str()),
                &c.profile_id,
                c.id.clone(),
                c.at,
                None,
            ),
            BusEvent::SegmentExited(c) => (
                Trigger::SegmentExited,
                Some(c.segment.as_str()),
                &c.profile_id,
                c.id.clone(),
                c.at,
                None,
            ),
            BusEvent::CartUpdated(c) => {
                if c.item_count == 0 {
                    return Ok(vec![Outcome::Ignored {
                        reason: "cart emptied".into(),
                    }]);
                }
                (
                    Trigger::CartUpdated,
                    None,
                    &c.profile_id,
                    cart_trigger_id(c.updated_at),
                    c.updated_at,
                    Some(c.updated_at),
                )
            }
            BusEvent::ConfigPublished(_) => {
                return Ok(vec![Outcome::Ignored {
                    reason: "configuration publishes are for the re-evaluation".into(),
                }]);
            }
        };
        let campaigns = config.config.campaigns.triggered_by(trigger, segment);
        if campaigns.is_empty() {
            return Ok(vec![Outcome::Ignored {
                reason: format!("no campaign for {}", bus.detail_type()),
            }]);
        }
        let backfill = matches!(
            bus,
            BusEvent::SegmentEntered(c) | BusEvent::SegmentExited(c) if c.backfill
        );
        let trace = bus.trace().map(str::to_owned);
        if let Some(t) = trace.as_deref().and_then(TraceContext::from_traceparent) {
            tracing::info!(trace_id = t.trace_id(), "segment event of a traced request");
        }
        let mut outcomes = Vec::new();
        let mut immediate = Vec::new();
        for campaign in campaigns {
            if backfill && campaign.on_backfill == OnBackfill::Skip {
                outcomes.push(Outcome::Skipped {
                    campaign: campaign.name.clone(),
                    reason: Skip::Backfill,
                });
                continue;
            }
            let candidate = Candidate {
                campaign,
                trigger_id: trigger_id.clone(),
                cart_updated_at: cart_at,
                trace: trace.clone(),
            };
            if campaign.delay > Duration::zero() {
                let due = at + campaign.delay;
                timers::schedule(self, profile_id, &candidate, due, "delay", now).await?;
                tracing::info!(profile = %masked(profile_id), campaign = %campaign.name, due = %due, "email scheduled");
                outcomes.push(Outcome::Scheduled {
                    campaign: campaign.name.clone(),
                    due,
                });
            } else {
                immediate.push(candidate);
            }
        }
        if !immediate.is_empty() {
            outcomes.extend(self.deliver(profile_id, &immediate, config, now).await?);
        }
        Ok(outcomes)
    }

    /// Tries candidates for one profile in priority order; at most one is sent.
    pub async fn deliver(
        &self,
        profile_id: &str,
        candidates: &[Candidate<'_>],
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, EmailError> {
        let mut sorted: Vec<&Candidate<'_>> = candidates.iter().collect();
        sorted.sort_by_key(|c| std::cmp::Reverse(c.campaign.priority));
        let Some(profile) = self
            .profiles
            .get(profile_id)
            .await
            .map_err(EmailError::port("profile.get"))?
        else {
            return Ok(sorted
                .iter()
                .map(|c| Outcome::Skipped {
                    campaign: c.campaign.name.clone(),
                    reason: Skip::NoProfile,
                })
                .collect());
        };
        let segments = config.config.rules.evaluate(&profile, now);
        let mut outcomes = Vec::with_capacity(sorted.len());
        let mut stopped = false;
        for candidate in sorted {
            let outcome = if stopped {
                Outcome::Skipped {
                    campaign: candidate.campaign.name.clone(),
                    reason: Skip::Superseded,
                }
            } else {
                self.try_send(&profile, &segments, candidate, config, now)
                    .await?
            };
            stopped |= outcome.stops();
            log_outcome(&profile.id, &outcome);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn try_send(
        &self,
        profile: &Profile,
        segments: &BTreeSet<String>,
        candidate: &Candidate<'_>,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Outcome, EmailError> {
        let campaign = candidate.campaign;
        let skip = |reason| {
            Ok(Outcome::Skipped {
                campaign: campaign.name.clone(),
                reason,
            })
        };
        if !campaign.still_applies(segments) {
            return skip(Skip::NoLongerApplies);
        }
        if campaign.trigger == Trigger::CartUpdated {
            if profile.cart.items.is_empty() {
                return skip(Skip::EmptyCart);
            }
            if candidate.cart_updated_at.is_some()
                && candidate.cart_updated_at != profile.cart.updated_at
            {
                return skip(Skip::CartChanged);
            }
        }
        let address = match reachable(&self.ledger, profile).await? {
            Ok(address) => address,
            Err(reason) => return skip(reason),
        };
        let (pk, sk) = (
            send_pk(&profile.id),
            send_sk(&campaign.name, &candidate.trigger_id),
        );
        let existing = self
            .ledger
            .get(&pk, &sk)
            .await
            .map_err(EmailError::port("claim.get"))?;
        match existing.as_ref().map(recorded_state) {
            Some(Recorded::Done) => {
                // The attempt that sent it may have died before recording the assignment:
                // recorded again under the same event id (enrich applies it once).
                if let Some(record) = &existing {
                    self.record_assignment_again(profile, candidate, record)
                        .await?;
                }
                return Ok(Outcome::Duplicate {
                    campaign: campaign.name.clone(),
                });
            }
            Some(Recorded::Unknown) => {
                return Ok(Outcome::Unknown {
                    campaign: campaign.name.clone(),
                })
            }
            // Held by an attempt (maybe a dead one): settled when claiming below.
            Some(Recorded::Held) | None => {}
        }
        let tz = config.config.campaigns.zone(profile.timezone());
        if let Some(until) = campaign.quiet_hours.and_then(|q| q.deferral(now, tz)) {
            timers::schedule(self, &profile.id, candidate, until, "quiet_hours", now).await?;
            return Ok(Outcome::Deferred {
                campaign: campaign.name.clone(),
                until,
                reason: "quiet_hours",
            });
        }

        let group = campaign.experiment.assign(&campaign.name, &profile.id);
        // The holdout goes through everything a send does except rendering, the send rate
        // and SES, so that it is comparable with the customers who were sent the email.
        let email = match group {
            Group::Holdout => None,
            Group::Sent(variant) => {
                let token = unsubscribe::sign(
                    &self.settings.unsubscribe_keys,
                    &Unsubscribe::new(&profile.id, &campaign.name, now),
                );
                let base = self.settings.public_base_url.trim_end_matches('/');
                let unsubscribe_url = format!("{base}/v1/unsubscribe?token={token}");
                let links = Links {
                    shop_name: &config.config.campaigns.shop_name,
                    base_url: base,
                    unsubscribe_url: &unsubscribe_url,
                };
                let mut rendered = config.config.renderer.render(
                    &campaign.as_variant(variant),
                    profile,
                    &links,
                    now,
                )?;
                if let Some(subject) = variant.and_then(|v| v.subject.as_ref()) {
                    rendered.subject.clone_from(subject);
                }
                if let Slot::Later(until) =
                    send_rate::take(&self.ledger, self.send_rate, now).await?
                {
                    timers::schedule(self, &profile.id, candidate, until, "send_rate", now).await?;
                    return Ok(Outcome::Deferred {
                        campaign: campaign.name.clone(),
                        until,
                        reason: "send_rate",
                    });
                }
                Some((rendered, unsubscribe_url))
            }
        };

        let record = SendRecord {
            pk: &pk,
            sk: &sk,
            campaign: &campaign.name,
            trigger_id: &candidate.trigger_id,
            owner: uuid::Uuid::new_v4().to_string(),
            now,
            config_version: config.version,
            trace: candidate.trace.as_deref(),
            group: group.name(),
        };
        match self.claim_send(&record).await? {
            Claimed::Ours => {}
            Claimed::Done => {
                return Ok(Outcome::Duplicate {
                    campaign: campaign.name.clone(),
                })
            }
            Claimed::Unknown => {
                return Ok(Outcome::Unknown {
                    campaign: campaign.name.clone(),
                })
            }
        }
        if let Some(reason) = self
            .charge_caps(
                profile,
                campaign,
                &candidate.trigger_id,
                config.config.campaigns.global_daily_cap,
                now,
                tz,
            )
            .await?
        {
            self.ledger
                .delete(&pk, &sk)
                .await
                .map_err(EmailError::port("claim.release"))?;
            return skip(reason);
        }

        let Some((rendered, unsubscribe_url)) = email else {
            record
                .advance(&self.ledger, SendState::Claimed, SendState::HeldOut, None)
                .await?;
            self.record_assignment(profile, candidate, group.name(), now)
                .await?;
            return Ok(Outcome::HeldOut {
                campaign: campaign.name.clone(),
            });
        };
        let message = EmailMessage {
            to: address.to_owned(),
            from: self.settings.sender.clone(),
            subject: rendered.subject,
            html: rendered.html,
            text: rendered.text,
            headers: vec![
                ("List-Unsubscribe".into(), format!("<{unsubscribe_url}>")),
                (
                    "List-Unsubscribe-Post".into(),
                    "List-Unsubscribe=One-Click".into(),
                ),
                (CONFIG_VERSION_HEADER.into(), config.version.to_string()),
            ],
            tags: message_tags(&campaign.name, &profile.id),
        };
        // Just before the call: from here on, a lost answer means "unknown", never "retry".
        record
            .advance(&self.ledger, SendState::Claimed, SendState::Sending, None)
            .await?;
        match self.mailer.send(&message).await {
            Ok(message_id) => {
                record
                    .advance(
                        &self.ledger,
                        SendState::Sending,
                        SendState::Sent,
                        Some(&message_id),
                    )
                    .await?;
                self.record_assignment(profile, candidate, group.name(), now)
                    .await?;
                Ok(Outcome::Sent {
                    campaign: campaign.name.clone(),
                    message_id,
                })
            }
            Err(SendError::NotSent(PortError::Permanent { stage, reason }))
                if stage == STAGE_RECIPIENT =>
            {
                let hashed = suppression_key(address);
                tracing::warn!(campaign = %campaign.name, address_hash = %hashed, reason = %redact(&reason), "recipient rejected; suppressing");
                record
                    .advance(&self.ledger, SendState::Sending, SendState::Rejected, None)
                    .await?;
                self.suppress_rejected(
                    profile,
                    &hashed,
                    &campaign.name,
                    &candidate.trigger_id,
                    now,
                )
                .await?;
                skip(Skip::Rejected)
            }
            Err(SendError::NotSent(e)) => {
                // Nothing went out: release the record for the retry (caps stay charged once).
                if let Err(release) = self.ledger.delete(&pk, &sk).await {
                    tracing::error!(campaign = %campaign.name, error = %release, "send record not released; it becomes unknown after the lease");
                }
                Err(EmailError::Port {
                    stage: "ses.send",
                    source: e,
                })
            }
            Err(SendError::OutcomeUnknown(reason)) => {
                tracing::error!(
                    campaign = %campaign.name,
                    trigger_id = %ember_core::privacy::redact_addresses(&candidate.trigger_id),
                    outcome = "unknown",
                    reason = %redact(&reason),
                    "SES gave no answer: the email may have gone out; recorded as unknown, not retried"
                );
                record
                    .advance(&self.ledger, SendState::Sending, SendState::Unknown, None)
                    .await?;
                unknown_outcome_metric(&self.metrics);
                Ok(Outcome::Unknown {
                    campaign: campaign.name.clone(),
                })
            }
        }
    }

    /// Charges the campaign and global daily caps once per trigger. `Some(reason)` if capped.
    async fn charge_caps(
        &self,
        profile: &Profile,
        campaign: &Campaign,
        trigger_id: &str,
        global_daily_cap: u64,
        now: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Result<Option<Skip>, EmailError> {
        let day = cap_day(now, tz);
        let expiry = Some(now + Duration::days(3));
        let (pk, marker) = (
            send_pk(&profile.id),
            format!("{}#caps-charged", send_sk(&campaign.name, trigger_id)),
        );
        let first = self
            .ledger
            .claim(&pk, &marker, &json!({"day": day}), expiry)
            .await
            .map_err(EmailError::port("caps.marker"))?;
        if !first {
            return Ok(None); // a previous attempt for this trigger already counted it
        }
        let caps = cap_pk(&profile.id);
        let campaign_ok = self
            .ledger
            .increment_below(
                &caps,
                &format!("{}#{day}", campaign.name),
                campaign.daily_cap,
                expiry,
            )
            .await
            .map_err(EmailError::port("caps.campaign"))?;
        let reason = if !campaign_ok {
            Some(Skip::CampaignCap)
        } else if !self
            .ledger
            .increment_below(&caps, &format!("_all#{day}"), global_daily_cap, expiry)
            .await
            .map_err(EmailError::port("caps.global"))?
        {
            Some(Skip::GlobalCap)
        } else {
            None
        };
        if reason.is_some() {
            self.ledger
                .delete(&pk, &marker)
                .await
                .map_err(EmailError::port("caps.marker"))?;
        }
        Ok(reason)
    }

    /// SES refused the address: remember its hash (so nothing is tried again) and tell enrich,
    /// the only writer of profiles, with an `email_suppressed` event.
    async fn suppress_rejected(
        &self,
        profile: &Profile,
        hashed: &str,
        campaign: &str,
        trigger_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), EmailError> {
        self.ledger
            .claim(
                SUPPRESSION_PK,
                hashed,
                &json!({"reason": "invalid_address", "at": now}),
                None,
            )
            .await
            .map_err(EmailError::port("suppression.put"))?;
        let record = SendEvent {
            id_prefix: "email-rejected",
            event_type: EventType::EmailSuppressed,
            profile_id: &profile.id,
            campaign,
            trigger_id,
            at: now,
            payload: json!({"reason": "invalid_address"}),
            trace: None,
        }
        .record()?;
        put_all(&self.stream, vec![record]).await
    }
}

/// An event the email function writes onto the stream about one send (profile, campaign,
/// trigger) for enrich, the only writer of profiles. Its id is derived from the send, so
/// putting it again (a retry) is applied once.
pub(crate) struct SendEvent<'a> {
    pub id_prefix: &'static str,
    pub event_type: EventType,
    pub profile_id: &'a str,
    pub campaign: &'a str,
    pub trigger_id: &'a str,
    pub at: DateTime<Utc>,
    pub payload: Value,
    pub trace: Option<String>,
}

impl SendEvent<'_> {
    pub(crate) fn record(self) -> Result<StreamRecord, EmailError> {
        let digest = hex::encode(Sha256::digest(format!(
            "{}\n{}\n{}",
            self.profile_id, self.campaign, self.trigger_id
        )));
        let mut envelope = Envelope {
            header: EventHeader {
                event_id: format!("{}:{}", self.id_prefix, &digest[..32]).into(),
                event_type: self.event_type,
                version: 1,
                user_id: None,
                anonymous_id: None,
                occurred_at: self.at,
                source: "ember.email".into(),
            },
            context: Context::default(),
            payload: self.payload,
            trace: self.trace,
        };
        identify(&mut envelope, self.profile_id);
        stream_record(&envelope)
    }
}

/// The message's tags: the campaign, and the profile id when it fits in a tag (see
/// [`tags`]).
fn message_tags(campaign: &str, profile_id: &str) -> Vec<(String, String)> {
    let mut out = vec![(tags::CAMPAIGN.to_owned(), campaign.to_owned())];
    match tags::encode_profile_id(profile_id) {
        Some(tag) => out.push((tags::PROFILE_ID.to_owned(), tag)),
        None => tracing::warn!(
            profile = %masked(profile_id),
            "profile id too long for an SES tag: its opens and clicks will not be attributed"
        ),
    }
    out
}

/// SES error texts can quote the recipient: addresses are masked before they are logged.
pub fn redact(text: &str) -> String {
    ember_core::privacy::redact_addresses(text)
}

/// Puts records and fails (retryably) if any could not be written.
pub async fn put_all<S: EventStream>(
    stream: &S,
    records: Vec<StreamRecord>,
) -> Result<(), EmailError> {
    if records.is_empty() {
        return Ok(());
    }
    for result in stream.put(&records).await {
        result.map_err(EmailError::port("stream.put"))?;
    }
    Ok(())
}

/// The metrics of one invocation's outcomes: emails sent by campaign (and, for a segment
/// event that names its cause's arrival, the ingest→email latency, on the wall clock),
/// skipped and deferred by reason.
fn count_outcomes(outcomes: &[Outcome], ingested_at: Option<DateTime<Utc>>) -> Recorder {
    let mut counted = Recorder::default();
    for outcome in outcomes {
        match outcome {
            Outcome::Sent { campaign, .. } => {
                counted.count(&metrics::EMAILS_SENT, &[campaign], 1);
                if let Some(at) = ingested_at {
                    counted.latency(&metrics::INGEST_TO_EMAIL, at, Utc::now());
                }
            }
            Outcome::HeldOut { campaign } => {
                counted.count(&metrics::EMAILS_HELD_OUT, &[campaign], 1);
            }
            Outcome::Skipped { reason, .. } => {
                counted.count(&metrics::EMAILS_SKIPPED, &[reason.as_str()], 1);
            }
            Outcome::Deferred { reason, .. } => {
                counted.count(&metrics::EMAILS_SKIPPED, &[reason], 1);
            }
            Outcome::Duplicate { .. }
            | Outcome::Scheduled { .. }
            | Outcome::Unknown { .. }
            | Outcome::Ignored { .. } => {}
        }
    }
    counted
}

fn log_outcome(profile_id: &str, outcome: &Outcome) {
    let profile_id = masked(profile_id);
    match outcome {
        Outcome::Sent {
            campaign,
            message_id,
        } => tracing::info!(profile = %profile_id, %campaign, %message_id, "email sent"),
        Outcome::Duplicate { campaign } => {
            tracing::info!(profile = %profile_id, %campaign, "already sent; duplicate trigger")
        }
        Outcome::HeldOut { campaign } => {
            tracing::info!(profile = %profile_id, %campaign, "held out; recorded, not sent")
        }
        Outcome::Deferred {
            campaign,
            until,
            reason,
        } => tracing::info!(profile = %profile_id, %campaign, %until, reason, "deferred"),
        Outcome::Skipped { campaign, reason } => {
            tracing::info!(profile = %profile_id, %campaign, reason = ?reason, "not sent")
        }
        Outcome::Scheduled { campaign, due } => {
            tracing::info!(profile = %profile_id, %campaign, %due, "scheduled")
        }
        Outcome::Unknown { campaign } => {
            tracing::warn!(profile = %profile_id, %campaign, "send outcome unknown")
        }
        Outcome::Ignored { reason } => tracing::debug!(profile = %profile_id, %reason, "ignored"),
    }
}

/// The candidate a stored timer stands for (`None` if its campaign was removed).
pub(crate) fn timer_candidate<'a>(
    campaigns: &'a Campaigns,
    timer: &Timer,
) -> Option<Candidate<'a>> {
    campaigns.get(&timer.campaign).map(|campaign| Candidate {
        campaign,
        trigger_id: timer.trigger_id.clone(),
        cart_updated_at: timer.cart_updated_at,
        trace: None,
    })
}
