//! The configuration admin API (admin key): segments, campaigns and templates read, changed
//! one at a time, validated, published as a new version, and rolled back.
//!
//! Every change is applied to the version in force, the whole document is compiled and
//! cross-checked exactly as the functions will ([`ember_email::compiled::compile`]), and only
//! then published: a bad change gets 400 with every problem and its path, and the version in
//! force keeps serving. `?dry_run=true` stops after the check. A publish announces itself on
//! the bus (`ConfigPublished`), which starts the backfill re-evaluation.
//!
//! Retries are safe: a change that leaves the document as it is publishes nothing and
//! announces the version in force again (the request landed, its answer was lost).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ember_core::config::{ConfigDoc, ConfigStore, PublishError};
use ember_core::ports::{BusEvent, ConfigChange, EventBus};
use ember_email::compiled::{compile, embedded_doc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::{auth, http, Deps};

/// What a path names: `/v1/segments`, `/v1/campaigns` or `/v1/templates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Segments,
    Campaigns,
    Templates,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Segments => "segments",
            Kind::Campaigns => "campaigns",
            Kind::Templates => "templates",
        }
    }
}

/// The parts a template may have, and the file each is stored as.
const TEMPLATE_PARTS: [(&str, &str); 3] = [
    ("subject", "subject.txt"),
    ("html", "html"),
    ("text", "txt"),
];

/// The version in force and its document (the built-in one as version 0).
pub struct Current {
    pub version: u64,
    pub published_at: Option<DateTime<Utc>>,
    pub note: String,
    pub doc: ConfigDoc,
}

pub async fn current(store: &ConfigStore) -> Result<Current, ApiError> {
    let published = store
        .current()
        .await
        .map_err(|e| ApiError::dependency("config.read", e))?;
    Ok(match published {
        Some(p) => Current {
            version: p.version,
            published_at: Some(p.published_at),
            note: p.note,
            doc: p.doc,
        },
        None => Current {
            version: 0,
            published_at: None,
            note: "built-in".into(),
            doc: embedded_doc(),
        },
    })
}

/// The items of one kind, by name.
pub fn items(doc: &ConfigDoc, kind: Kind) -> BTreeMap<String, Value> {
    let named = |list: &Value| -> BTreeMap<String, Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?.to_owned(), v.clone())))
            .collect()
    };
    match kind {
        Kind::Segments => named(&doc.segments["segments"]),
        Kind::Campaigns => named(&doc.campaigns["campaigns"]),
        Kind::Templates => {
            let mut out: BTreeMap<String, Value> = BTreeMap::new();
            for (file, source) in &doc.templates {
                for (part, ext) in TEMPLATE_PARTS {
                    if let Some(name) = file.strip_suffix(&format!(".{ext}")) {
                        out.entry(name.to_owned()).or_insert_with(|| json!({}))[part] =
                            json!(source);
                        break;
                    }
                }
            }
            out
        }
    }
}

/// `doc` with item `name` replaced by `item`, or removed when `item` is `None`.
pub fn with_item(
    doc: &ConfigDoc,
    kind: Kind,
    name: &str,
    item: Option<Value>,
) -> Result<ConfigDoc, ApiError> {
    let mut doc = doc.clone();
    let list = match kind {
        Kind::Segments => &mut doc.segments["segments"],
        Kind::Campaigns => &mut doc.campaigns["campaigns"],
        Kind::Templates => {
            set_template(&mut doc.templates, name, item)?;
            return Ok(doc);
        }
    };
    let mut entries: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    let at = entries.iter().position(|e| e["name"] == name);
    match (item, at) {
        (None, None) => return Err(ApiError::ConfigItemNotFound(item_path(kind, name))),
        (None, Some(i)) => {
            entries.remove(i);
        }
        (Some(mut item), at) => {
            let Some(fields) = item.as_object_mut() else {
                return Err(ApiError::InvalidRequest(format!(
                    "{} must be a JSON object",
                    item_path(kind, name)
                )));
            };
            if fields.get("name").is_some_and(|n| n != name) {
                return Err(ApiError::InvalidRequest(format!(
                    "the body names {} but the path names {name:?}",
                    fields["name"]
                )));
            }
            fields.insert("name".into(), json!(name));
            match at {
                Some(i) => entries[i] = item,
                None => entries.push(item),
            }
        }
    }
    *list = Value::Array(entries);
    Ok(doc)
}

fn set_template(
    templates: &mut BTreeMap<String, String>,
    name: &str,
    item: Option<Value>,
) -> Result<(), ApiError> {
    let existed = TEMPLATE_PARTS
        .iter()
        .any(|(_, ext)| templates.contains_key(&format!("{name}.{ext}")));
    let parts: Map<String, Value> = match item {
        None if !existed => {
            return Err(ApiError::ConfigItemNotFound(item_path(
                Kind::Templates,
                name,
            )))
        }
        // Deleting the template removes every part.
        None => TEMPLATE_PARTS
            .iter()
            .map(|(part, _)| ((*part).to_owned(), Value::Null))
            .collect(),
        Some(Value::Object(parts)) => parts,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "a template is an object with `subject`, `html` and `text` strings".into(),
            ))
        }
    };
    if let Some(bad) = parts.iter().find(|(k, v)| {
        !(v.is_string() || v.is_null()) || !TEMPLATE_PARTS.iter().any(|(p, _)| p == k)
    }) {
        return Err(ApiError::InvalidRequest(format!(
            "template part {:?} is not one of subject, html, text with a text (or null) value",
            bad.0
        )));
    }
    for (part, ext) in TEMPLATE_PARTS {
        let file = format!("{name}.{ext}");
        match parts.get(part) {
            // A part the body leaves out stays as it is (a new subject line alone is a PUT
            // of `{"subject": …}`); `null` removes it.
            None => {}
            Some(Value::String(source)) => {
                templates.insert(file, source.clone());
            }
            Some(_) => {
                templates.remove(&file);
            }
        }
    }
    Ok(())
}

fn item_path(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub version: u64,
    /// Nothing changed: the version in force stays (and was announced again).
    pub unchanged: bool,
}

/// Validates `doc` and publishes it as the version after `base`, then announces it on the
/// bus. The one publish path of the API and the command-line tool.
pub async fn publish(
    store: &ConfigStore,
    bus: &dyn EventBus,
    base: &Current,
    doc: &ConfigDoc,
    note: &str,
    changed: Vec<String>,
    now: DateTime<Utc>,
) -> Result<Outcome, ApiError> {
    compile(doc).map_err(ApiError::InvalidConfig)?;
    let (version, unchanged) = if doc.digest() == base.doc.digest() && base.version > 0 {
        (base.version, true)
    } else {
        let version = store
            .publish(doc, base.version, note, now)
            .await
            .map_err(|e| match e {
                PublishError::Conflict(v) => ApiError::ConfigConflict(v),
                PublishError::Port(e) => ApiError::dependency("config.publish", e),
            })?;
        (version, false)
    };
    let announcement = BusEvent::ConfigPublished(ConfigChange {
        id: format!("config:{version}"),
        version,
        based_on: if unchanged { version } else { base.version },
        at: now,
        changed,
    });
    for result in bus.publish(&[announcement]).await {
        result.map_err(|e| ApiError::dependency("bus.publish", e))?;
    }
    tracing::info!(version, unchanged, "configuration published");
    Ok(Outcome { version, unchanged })
}

fn flag(req: &Request, name: &str) -> bool {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .is_some_and(|v| v == "true" || v == "1")
}

fn note(req: &Request, fallback: &str) -> String {
    req.query_string_parameters_ref()
        .and_then(|q| q.first("note"))
        .unwrap_or(fallback)
        .chars()
        .take(200)
        .collect()
}

/// Checks, then (unless `?dry_run=true`) publishes `doc` and answers with the version.
async fn check_and_publish(
    deps: &Deps,
    req: &Request,
    base: &Current,
    doc: ConfigDoc,
    changed: String,
) -> Result<Response<Body>, ApiError> {
    if flag(req, "dry_run") {
        compile(&doc).map_err(ApiError::InvalidConfig)?;
        return Ok(http::json(
            StatusCode::OK,
            &json!({"valid": true, "dry_run": true, "based_on": base.version}),
        ));
    }
    let note = note(req, &changed);
    let store = deps.config_store();
    let done = publish(
        &store,
        deps.bus.as_ref(),
        base,
        &doc,
        &note,
        vec![changed],
        deps.clock.now(),
    )
    .await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({"version": done.version, "unchanged": done.unchanged, "based_on": base.version}),
    ))
}

/// `GET /v1/config`: the version in force and its whole document.
pub async fn get_config(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    let names = |kind| items(&c.doc, kind).into_keys().collect::<Vec<_>>();
    Ok(http::json(
        StatusCode::OK,
        &json!({
            "version": c.version,
            "published_at": c.published_at,
            "note": c.note,
            "segments": names(Kind::Segments),
            "campaigns": names(Kind::Campaigns),
            "templates": names(Kind::Templates),
            "document": c.doc,
        }),
    ))
}

/// `GET /v1/config/versions`: every published version, newest first.
pub async fn versions(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let store = deps.config_store();
    let in_force = store
        .current_version()
        .await
        .map_err(|e| ApiError::dependency("config.read", e))?;
    let all = store
        .versions()
        .await
        .map_err(|e| ApiError::dependency("config.read", e))?;
    let list: Vec<Value> = all
        .iter()
        .rev()
        .map(|p| {
            json!({"version": p.version, "published_at": p.published_at, "note": p.note,
                   "in_force": p.version == in_force})
        })
        .collect();
    Ok(http::json(
        StatusCode::OK,
        &json!({"in_force": in_force, "versions": list}),
    ))
}

/// `POST /v1/config/rollback` with `{"version": n}`: version n's document in force again,
/// as a new version.
pub async fn rollback(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    http::require_json(req)?;
    let body = http::parse_json(http::body(req, deps.config.max_body_bytes)?)?;
    let target = body["version"].as_u64().ok_or_else(|| {
        ApiError::InvalidRequest("expected {\"version\": <a published version number>}".into())
    })?;
    let store = deps.config_store();
    let doc = match target {
        0 => embedded_doc(),
        v => {
            store
                .get(v)
                .await
                .map_err(|e| ApiError::dependency("config.read", e))?
                .ok_or_else(|| ApiError::ConfigItemNotFound(format!("versions/{v}")))?
                .doc
        }
    };
    let base = current(&store).await?;
    check_and_publish(deps, req, &base, doc, format!("rollback to {target}")).await
}

/// `GET /v1/{kind}`: every item of a kind.
pub async fn list(deps: &Deps, req: &Request, kind: Kind) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({"version": c.version, kind.as_str(): items(&c.doc, kind)}),
    ))
}

/// `GET /v1/{kind}/{name}`.
pub async fn get(
    deps: &Deps,
    req: &Request,
    kind: Kind,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    let item = items(&c.doc, kind)
        .remove(name)
        .ok_or_else(|| ApiError::ConfigItemNotFound(item_path(kind, name)))?;
    Ok(http::json(
        StatusCode::OK,
        &json!({"version": c.version, "name": name, "item": item}),
    ))
}

/// `PUT /v1/{kind}/{name}` (the item as the body) and `DELETE /v1/{kind}/{name}`.
pub async fn change(
    deps: &Deps,
    req: &Request,
    kind: Kind,
    name: &str,
    delete: bool,
) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let item = if delete {
        None
    } else {
        http::require_json(req)?;
        Some(http::parse_json(http::body(
            req,
            deps.config.max_body_bytes,
        )?)?)
    };
    let base = current(&deps.config_store()).await?;
    let doc = with_item(&base.doc, kind, name, item)?;
    check_and_publish(deps, req, &base, doc, item_path(kind, name)).await
}
