//! Previews (admin key), by a parallel scan of the profiles table:
//! - a segment: how many profiles its rule matches now, and a few of their ids;
//! - a campaign: how many emails it would send now, after consent, suppression, caps and
//!   quiet hours, why the others would not get one, and, for a campaign with a holdout or
//!   variants, how those who pass split into its groups (the same assignment as a send).
//!
//! A preview reads the whole table once (about one read unit per 4 KB of profiles; a campaign
//! preview also reads the suppression and cap records of the customers it targets), so it is
//! for people deciding on a change, not for programs polling it.

use std::collections::BTreeMap;
use std::future::Future;

use ember_core::ports::PortError;
use ember_core::profile::Profile;
use ember_core::segment::{Rule, RuleSet};
use ember_email::compiled::compile;
use ember_email::experiment::Group;
use ember_email::preview::{verdict, Verdict};
use ember_email::EmailError;
use futures::future::try_join_all;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

use crate::admin::{current, items, Kind};
use crate::error::ApiError;
use crate::{auth, http, Deps};

/// Parallel scan segments of one preview.
pub const SCAN_SEGMENTS: u32 = 4;
/// How many matching ids a preview shows.
pub const SAMPLE: usize = 5;

/// Counts gathered page by page, merged across scan segments.
#[derive(Debug, Default)]
struct Tally {
    scanned: usize,
    matching: usize,
    after_quiet_hours: usize,
    held_out: usize,
    skipped: BTreeMap<&'static str, usize>,
    /// Customers who pass every check (now or after quiet hours), by experiment group.
    groups: BTreeMap<String, usize>,
    sample: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.scanned += other.scanned;
        self.matching += other.matching;
        self.after_quiet_hours += other.after_quiet_hours;
        self.held_out += other.held_out;
        for (reason, n) in other.skipped {
            *self.skipped.entry(reason).or_default() += n;
        }
        for (group, n) in other.groups {
            *self.groups.entry(group).or_default() += n;
        }
        self.sample.extend(other.sample);
    }

    fn matched(&mut self, id: &str) {
        self.matching += 1;
        if self.sample.len() < SAMPLE {
            self.sample.push(id.to_owned());
        }
    }

    fn sample(&self) -> Vec<String> {
        let mut ids = self.sample.clone();
        ids.sort();
        ids.truncate(SAMPLE);
        ids
    }
}

/// Every profile of the table through `per_page`, the scan segments concurrently.
async fn scan<F, Fut>(deps: &Deps, per_page: F) -> Result<Tally, ApiError>
where
    F: Fn(Vec<Profile>) -> Fut,
    Fut: Future<Output = Result<Tally, ApiError>>,
{
    let per_page = &per_page;
    let segments = (0..SCAN_SEGMENTS).map(|segment| async move {
        let mut tally = Tally::default();
        let mut cursor = None;
        loop {
            let (page, next) = deps
                .profiles
                .scan(segment, SCAN_SEGMENTS, cursor)
                .await
                .map_err(|e| ApiError::dependency("profiles.scan", e))?;
            tally.merge(per_page(page).await?);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok::<_, ApiError>(tally),
            }
        }
    });
    let mut total = Tally::default();
    for part in try_join_all(segments).await? {
        total.merge(part);
    }
    Ok(total)
}

/// `GET /v1/segments/{name}/preview`: the rule in force.
pub async fn published(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    let entry = items(&c.doc, Kind::Segments)
        .remove(name)
        .ok_or_else(|| ApiError::ConfigItemNotFound(format!("segments/{name}")))?;
    let mut answer = segment(deps, &compile_rule(entry)?).await?;
    answer["version"] = json!(c.version);
    Ok(http::json(StatusCode::OK, &answer))
}

/// `POST /v1/segments/{name}/preview`: the rule in the body (as in `segments.yaml`), not
/// published, e.g. a change to segment `name` before it is made.
pub async fn posted(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    http::require_json(req)?;
    let mut entry = http::parse_json(http::body(req, deps.config.max_body_bytes)?)?;
    if let Some(fields) = entry.as_object_mut() {
        fields.insert("name".into(), json!(name));
    }
    let answer = segment(deps, &compile_rule(entry)?).await?;
    Ok(http::json(StatusCode::OK, &answer))
}

/// One rule entry, validated like a published one.
fn compile_rule(entry: Value) -> Result<Rule, ApiError> {
    let rules =
        RuleSet::from_doc(&json!({ "segments": [entry] })).map_err(ApiError::InvalidConfig)?;
    rules
        .rules()
        .first()
        .cloned()
        .ok_or_else(|| ApiError::InvalidRequest("no rule given".into()))
}

async fn segment(deps: &Deps, rule: &Rule) -> Result<Value, ApiError> {
    let now = deps.clock.now();
    let tally = scan(deps, |page| async move {
        let mut t = Tally::default();
        for p in page.iter().filter(|p| p.merged_into.is_none()) {
            t.scanned += 1;
            if rule.holds(p, now) {
                t.matched(&p.id);
            }
        }
        Ok(t)
    })
    .await?;
    Ok(json!({
        "segment": rule.name,
        "at": now.to_rfc3339(),
        "profiles_scanned": tally.scanned,
        "matching": tally.matching,
        "sample_ids": tally.sample(),
    }))
}

/// `GET /v1/campaigns/{name}/preview`: what the campaign in force would do now.
pub async fn campaign(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    let compiled = compile(&c.doc).map_err(ApiError::InvalidConfig)?;
    let campaign = compiled
        .campaigns
        .get(name)
        .ok_or_else(|| ApiError::ConfigItemNotFound(format!("campaigns/{name}")))?;
    let now = deps.clock.now();
    let (compiled, ledger) = (&compiled, deps.ledger.as_ref());
    let tally = scan(deps, |page| async move {
        let mut t = Tally::default();
        for p in &page {
            t.scanned += 1;
            let v = verdict(ledger, compiled, campaign, p, now)
                .await
                .map_err(|e| match e {
                    EmailError::Port { stage, source } => ApiError::dependency(stage, source),
                    other => ApiError::dependency(
                        "campaign.preview",
                        PortError::Permanent {
                            stage: "campaign.preview",
                            reason: other.to_string(),
                        },
                    ),
                })?;
            let passes = matches!(v, Verdict::Sends | Verdict::AfterQuietHours);
            let group = passes.then(|| campaign.experiment.assign(&campaign.name, &p.id));
            if let Some(g) = &group {
                *t.groups.entry(g.name().to_owned()).or_default() += 1;
            }
            match v {
                Verdict::NotTargeted => {}
                Verdict::Skipped(reason) => *t.skipped.entry(reason.as_str()).or_default() += 1,
                Verdict::AfterQuietHours => t.after_quiet_hours += 1,
                // Held out now: recorded, not sent.
                Verdict::Sends if group == Some(Group::Holdout) => t.held_out += 1,
                Verdict::Sends => t.matched(&p.id),
            }
        }
        Ok(t)
    })
    .await?;
    let targeted = tally.matching
        + tally.held_out
        + tally.after_quiet_hours
        + tally.skipped.values().sum::<usize>();
    Ok(http::json(
        StatusCode::OK,
        &json!({
            "campaign": name,
            "version": c.version,
            "at": now.to_rfc3339(),
            "profiles_scanned": tally.scanned,
            "targeted": targeted,
            "would_send_now": tally.matching,
            "held_out_now": tally.held_out,
            "after_quiet_hours": tally.after_quiet_hours,
            "groups": tally.groups,
            "skipped": tally.skipped,
            "sample_ids": tally.sample(),
        }),
    ))
}
