//! What a campaign would do for one customer now, without doing it: the checks of a send
//! ([`crate::handler`]) that change nothing, for the admin API's campaign preview. Nothing is
//! claimed, charged or sent.

use chrono::{DateTime, Utc};
use ember_core::ports::Ledger;
use ember_core::profile::Profile;

use crate::campaign::{Campaign, Trigger};
use crate::compiled::Compiled;
use crate::error::EmailError;
use crate::handler::{cap_day, cap_pk, reachable, Skip};

/// The verdict for one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not in the campaign's segment now (or, for a cart campaign, no cart).
    NotTargeted,
    Skipped(Skip),
    /// Would be sent, once the customer's quiet hours end.
    AfterQuietHours,
    Sends,
}

/// The verdict of `campaign` (of configuration `config`) for `profile` at `now`.
pub async fn verdict<L: Ledger + ?Sized>(
    ledger: &L,
    config: &Compiled,
    campaign: &Campaign,
    profile: &Profile,
    now: DateTime<Utc>,
) -> Result<Verdict, EmailError> {
    if profile.merged_into.is_some() {
        return Ok(Verdict::NotTargeted);
    }
    let segments = config.rules.evaluate(profile, now);
    let in_segment = match &campaign.segment {
        Some(s) => segments.contains(s),
        None => true,
    };
    let has_cart = !profile.cart.items.is_empty();
    if !in_segment || (campaign.trigger == Trigger::CartUpdated && !has_cart) {
        return Ok(Verdict::NotTargeted);
    }
    if let Err(reason) = reachable(ledger, profile).await? {
        return Ok(Verdict::Skipped(reason));
    }
    let tz = config.campaigns.zone(profile.timezone());
    let day = cap_day(now, tz);
    let caps = cap_pk(&profile.id);
    let campaign_sent = count(ledger, &caps, &format!("{}#{day}", campaign.name)).await?;
    if campaign_sent >= campaign.daily_cap {
        return Ok(Verdict::Skipped(Skip::CampaignCap));
    }
    let all_sent = count(ledger, &caps, &format!("_all#{day}")).await?;
    if all_sent >= config.campaigns.global_daily_cap {
        return Ok(Verdict::Skipped(Skip::GlobalCap));
    }
    if campaign
        .quiet_hours
        .and_then(|q| q.deferral(now, tz))
        .is_some()
    {
        return Ok(Verdict::AfterQuietHours);
    }
    Ok(Verdict::Sends)
}

/// A cap counter's value (0 when there is none yet).
async fn count<L: Ledger + ?Sized>(ledger: &L, pk: &str, sk: &str) -> Result<u64, EmailError> {
    let record = ledger
        .get(pk, sk)
        .await
        .map_err(EmailError::port("caps.get"))?;
    Ok(record.and_then(|r| r["count"].as_u64()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use ember_core::memory::MemoryLedger;
    use ember_core::profile::{Consent, Stamped};
    use serde_json::json;

    use super::*;
    use crate::compiled::builtin;

    fn churner(id: &str) -> Profile {
        let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let mut p = Profile::new(id);
        p.email = Some(Stamped::undated(format!("{id}@example.com")));
        p.consent.insert(
            "email".into(),
            Consent {
                granted: true,
                at: Some(now),
            },
        );
        p.purchase_count = 3;
        p.last_seen = Some(now - chrono::Duration::days(45));
        p
    }

    #[tokio::test]
    async fn a_preview_checks_segment_consent_suppression_caps_and_quiet_hours() {
        let config = builtin().unwrap();
        let campaign = config.campaigns.get("churn_winback").unwrap();
        let ledger = MemoryLedger::default();
        let noon: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
        let verdict_of = |p: Profile, at: DateTime<Utc>| {
            let (ledger, config) = (&ledger, &config);
            async move { verdict(ledger, config, campaign, &p, at).await.unwrap() }
        };
        assert_eq!(verdict_of(churner("u-1"), noon).await, Verdict::Sends);
        assert_eq!(
            verdict_of(Profile::new("u-2"), noon).await,
            Verdict::NotTargeted
        );
        let mut no_consent = churner("u-3");
        no_consent.consent.clear();
        assert_eq!(
            verdict_of(no_consent, noon).await,
            Verdict::Skipped(Skip::NoConsent)
        );
        let night = noon + chrono::Duration::hours(11);
        assert_eq!(
            verdict_of(churner("u-4"), night).await,
            Verdict::AfterQuietHours
        );
        // A campaign email already sent today, then a suppressed address.
        let counted = json!({"count": 1});
        let cap = ("cap#u-5", "churn_winback#2026-11-20");
        let key = ember_core::unsubscribe::suppression_key("u-6@example.com");
        let suppression = (ember_core::unsubscribe::SUPPRESSION_PK, key.as_str());
        for (pk, sk) in [cap, suppression] {
            ledger.claim(pk, sk, &counted, None).await.unwrap();
        }
        assert_eq!(
            verdict_of(churner("u-5"), noon).await,
            Verdict::Skipped(Skip::CampaignCap)
        );
        assert_eq!(
            verdict_of(churner("u-6"), noon).await,
            Verdict::Skipped(Skip::Suppressed)
        );
    }
}
