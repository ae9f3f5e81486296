//! Telling enrich which campaign group a customer joined: a `campaign_assigned` event on the
//! stream when the email goes out, or when a holdout customer's would have. Enrich folds it
//! into the profile, where it opens the attribution window the campaign report counts from.
//!
//! The event id is derived from (profile, campaign, trigger), so the event can be put again
//! whenever the send record says done (the attempt that sent may have died before putting
//! it) and enrich still applies it once. Its time is the send record's.

use chrono::{DateTime, Utc};
use ember_core::event::EventType;
use ember_core::ports::{EventStream, Ledger, Mailer, ProfileStore};
use ember_core::profile::Profile;
use serde_json::{json, Value};

use crate::error::EmailError;
use crate::handler::{put_all, Candidate, Email, SendEvent};
use crate::send_record::SendState;

impl<P, L, M, S> Email<P, L, M, S>
where
    P: ProfileStore,
    L: Ledger,
    M: Mailer,
    S: EventStream,
{
    /// Puts the `campaign_assigned` event of this send (or holdout) on the stream.
    pub(crate) async fn record_assignment(
        &self,
        profile: &Profile,
        candidate: &Candidate<'_>,
        group: &str,
        at: DateTime<Utc>,
    ) -> Result<(), EmailError> {
        let campaign = candidate.campaign;
        let record = SendEvent {
            id_prefix: "campaign-assigned",
            event_type: EventType::CampaignAssigned,
            profile_id: &profile.id,
            campaign: &campaign.name,
            trigger_id: &candidate.trigger_id,
            at,
            payload: json!({
                "campaign": campaign.name,
                "group": group,
                "attribution_hours": campaign.experiment.attribution_hours,
            }),
            trace: candidate.trace.clone(),
        }
        .record()?;
        put_all(&self.stream, vec![record]).await
    }

    /// The assignment of a send record already done, put again (same event id, same time).
    /// Records of refused addresses, and those written before groups existed, have none.
    pub(crate) async fn record_assignment_again(
        &self,
        profile: &Profile,
        candidate: &Candidate<'_>,
        record: &Value,
    ) -> Result<(), EmailError> {
        let state = record["state"].as_str().and_then(SendState::parse);
        if !matches!(state, Some(SendState::Sent | SendState::HeldOut)) {
            return Ok(());
        }
        let (Some(group), Some(at)) = (
            record["group"].as_str(),
            record["at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
        ) else {
            return Ok(());
        };
        self.record_assignment(profile, candidate, group, at.with_timezone(&Utc))
            .await
    }
}
