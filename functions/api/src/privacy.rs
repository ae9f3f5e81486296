//! Privacy endpoints (admin key required): `GET /v1/profiles/{user_id}` exports everything
//! Ember holds in the profile (and the anonymous profiles merged into it);
//! `DELETE /v1/profiles/{user_id}` erases it (GDPR art. 17 / CCPA deletion).
//!
//! Erasure, in an order that is safe to repeat after a partial failure:
//! 1. tombstones for the profile and each merged anonymous profile
//!    ([`ember_core::ports::Erasures`], kept as hashes of the ids): enrichment never
//!    re-creates an erased profile, whatever still arrives for it (events in flight, an old
//!    unsubscribe link, a late SES open or click, a replay), and the unsubscribe endpoint
//!    writes nothing for it;
//! 2. the address is suppressed: ledger `pk = suppression`, `sk =`
//!    [`ember_core::unsubscribe::suppression_key`] (a hash; the address itself is not kept);
//! 3. merged anonymous profiles (`anon:<id>`) are deleted;
//! 4. per-profile ledger records are deleted: every partition named by
//!    [`PROFILE_LEDGER_PARTITIONS`] and the dead-lettered timers of those profiles;
//! 5. the profile item is deleted.
//!
//! The answer is 202 with what was done and what remains elsewhere, and for how long
//! ([`REMAINS`]).

use chrono::SecondsFormat;
use ember_core::event::ANON_PREFIX;
use ember_core::ports::Erasures;
use ember_core::profile::Profile;
use ember_core::unsubscribe::{suppression_key, SUPPRESSION_PK};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::error::ApiError;

/// The email function's partition of dead-lettered timers (`ember_email::timers`).
pub const DEAD_TIMERS_PK: &str = "timer-dead";
use crate::{auth, http, Deps};

/// Ledger partitions holding records about one profile (`{profile}` is replaced by its id):
/// the email function's send claims and frequency-cap counters. Pending timers live in
/// minute buckets and expire on their own; when one fires the profile is gone and nothing is
/// sent (and the suppression holds regardless).
pub const PROFILE_LEDGER_PARTITIONS: &[&str] = &["send#{profile}", "cap#{profile}"];

/// What erasure cannot reach at once, and when it is gone.
pub const REMAINS: &[(&str, &str)] = &[
    (
        "pending email timers",
        "fire within 7 days and find no profile: nothing is sent",
    ),
    (
        "raw events in the dead-letter queues",
        "deleted by the queues' 14-day retention",
    ),
    (
        "event-id claims (event ids and stream positions, no personal data)",
        "expire after DEDUP_WINDOW_DAYS (35 by default)",
    ),
    (
        "raw events on the event stream",
        "expire with the stream's retention (StreamRetentionHours, 48 by default)",
    ),
    (
        "raw events in the event archive (S3)",
        "removed by the archive eraser's pass, which starts within 2 hours and carries on hourly until it has read the whole archive",
    ),
];

async fn load(deps: &Deps, id: &str) -> Result<Option<Profile>, ApiError> {
    deps.profiles
        .get(id)
        .await
        .map_err(|e| ApiError::dependency("profiles.get", e))
}

async fn merged(deps: &Deps, profile: &Profile) -> Result<Vec<Profile>, ApiError> {
    let mut out = Vec::new();
    for anon in &profile.anonymous_ids {
        if let Some(p) = load(deps, &format!("{ANON_PREFIX}{anon}")).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// `GET /v1/profiles/{user_id}`.
pub async fn export(deps: &Deps, req: &Request, user_id: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let profile = load(deps, user_id)
        .await?
        .ok_or_else(|| ApiError::ProfileNotFound(user_id.to_owned()))?;
    let anonymous = merged(deps, &profile).await?;
    tracing::info!("profile exported");
    Ok(http::json(
        StatusCode::OK,
        &json!({
            "exported_at": deps.clock.now().to_rfc3339_opts(SecondsFormat::Secs, true),
            "profile": profile,
            "anonymous_profiles": anonymous,
        }),
    ))
}

/// `DELETE /v1/profiles/{user_id}`.
pub async fn erase(deps: &Deps, req: &Request, user_id: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let now = deps.clock.now();
    let profile = load(deps, user_id).await?;
    let mut ids = vec![user_id.to_owned()];
    if let Some(p) = &profile {
        ids.extend(p.anonymous_ids.iter().map(|a| format!("{ANON_PREFIX}{a}")));
    }
    for id in &ids {
        deps.ledger
            .mark_erased(id, now)
            .await
            .map_err(|e| ApiError::dependency("ledger.tombstone", e))?;
    }

    let mut email_suppressed = false;
    if let Some(email) = profile
        .as_ref()
        .and_then(|p| p.email())
        .filter(|e| !e.trim().is_empty())
    {
        let attrs =
            json!({ "reason": "erasure", "at": now.to_rfc3339_opts(SecondsFormat::Secs, true) });
        deps.ledger
            .claim(SUPPRESSION_PK, &suppression_key(email), &attrs, None)
            .await
            .map_err(|e| ApiError::dependency("ledger.claim", e))?;
        email_suppressed = true;
    }

    let mut anonymous_deleted = Vec::new();
    if let Some(p) = &profile {
        for anon in &p.anonymous_ids {
            let id = format!("{ANON_PREFIX}{anon}");
            if deps
                .profiles
                .delete(&id)
                .await
                .map_err(|e| ApiError::dependency("profiles.delete", e))?
            {
                anonymous_deleted.push(id);
            }
        }
    }

    let mut ledger_deleted = 0usize;
    let mut partitions = Vec::new();
    for id in &ids {
        partitions.extend(
            PROFILE_LEDGER_PARTITIONS
                .iter()
                .map(|t| t.replace("{profile}", id)),
        );
    }
    for pk in partitions {
        let records = deps
            .ledger
            .query(&pk, "")
            .await
            .map_err(|e| ApiError::dependency("ledger.query", e))?;
        for (sk, _) in records {
            deps.ledger
                .delete(&pk, &sk)
                .await
                .map_err(|e| ApiError::dependency("ledger.delete", e))?;
            ledger_deleted += 1;
        }
    }

    // Dead-lettered timers name the profile they were for.
    let dead = deps
        .ledger
        .query(DEAD_TIMERS_PK, "")
        .await
        .map_err(|e| ApiError::dependency("ledger.query", e))?;
    for (sk, timer) in dead {
        if timer["profile_id"]
            .as_str()
            .is_some_and(|p| ids.iter().any(|id| id == p))
        {
            deps.ledger
                .delete(DEAD_TIMERS_PK, &sk)
                .await
                .map_err(|e| ApiError::dependency("ledger.delete", e))?;
            ledger_deleted += 1;
        }
    }

    let profile_deleted = deps
        .profiles
        .delete(user_id)
        .await
        .map_err(|e| ApiError::dependency("profiles.delete", e))?;
    tracing::info!(
        profile_deleted,
        anonymous_deleted = anonymous_deleted.len(),
        ledger_deleted,
        email_suppressed,
        "profile erased"
    );
    Ok(http::json(
        StatusCode::ACCEPTED,
        &json!({
            "user_id": user_id,
            "profile_found": profile.is_some(),
            "profile_deleted": profile_deleted,
            "anonymous_profiles_deleted": anonymous_deleted,
            "ledger_records_deleted": ledger_deleted,
            "email_suppressed": email_suppressed,
            "tombstoned": ids.len(),
            "remains": REMAINS
                .iter()
                .map(|(what, until)| json!({"what": what, "until": until}))
                .collect::<Vec<_>>(),
        }),
    ))
}
