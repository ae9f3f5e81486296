//! Segment previews (admin key): how many profiles a rule matches now, with a few of their
//! ids, by a parallel scan of the profiles table. A preview reads the whole table once (about
//! one read unit per 4 KB of profiles), so it is for people deciding on a rule, not for
//! programs polling it.

use ember_core::profile::Profile;
use ember_core::segment::{Rule, RuleSet};
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

/// `GET /v1/segments/{name}/preview`: the rule in force.
pub async fn published(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    let entry = items(&c.doc, Kind::Segments)
        .remove(name)
        .ok_or_else(|| ApiError::ConfigItemNotFound(format!("segments/{name}")))?;
    let mut answer = preview(deps, &compile_rule(entry)?).await?;
    answer["version"] = json!(c.version);
    Ok(http::json(StatusCode::OK, &answer))
}

/// `POST /v1/segments/preview`: a rule that is not published (the body, as in
/// `segments.yaml`; `name` is optional).
pub async fn posted(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    http::require_json(req)?;
    let mut entry = http::parse_json(http::body(req, deps.config.max_body_bytes)?)?;
    if let Some(fields) = entry.as_object_mut() {
        fields.entry("name").or_insert_with(|| json!("preview"));
    }
    let answer = preview(deps, &compile_rule(entry)?).await?;
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

async fn preview(deps: &Deps, rule: &Rule) -> Result<Value, ApiError> {
    let now = deps.clock.now();
    let segments = (0..SCAN_SEGMENTS).map(|segment| async move {
        let (mut scanned, mut matching, mut sample) = (0usize, 0usize, Vec::new());
        let mut cursor = None;
        loop {
            let (page, next): (Vec<Profile>, Option<String>) = deps
                .profiles
                .scan(segment, SCAN_SEGMENTS, cursor)
                .await
                .map_err(|e| ApiError::dependency("profiles.scan", e))?;
            for p in page.iter().filter(|p| p.merged_into.is_none()) {
                scanned += 1;
                if rule.holds(p, now) {
                    matching += 1;
                    if sample.len() < SAMPLE {
                        sample.push(p.id.clone());
                    }
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok::<_, ApiError>((scanned, matching, sample)),
            }
        }
    });
    let parts = try_join_all(segments).await?;
    let scanned: usize = parts.iter().map(|p| p.0).sum();
    let matching: usize = parts.iter().map(|p| p.1).sum();
    let mut sample: Vec<String> = parts.into_iter().flat_map(|p| p.2).collect();
    sample.sort();
    sample.truncate(SAMPLE);
    Ok(json!({
        "segment": rule.name,
        "at": now.to_rfc3339(),
        "profiles_scanned": scanned,
        "matching": matching,
        "sample_ids": sample,
    }))
}
