//! The configuration as files in the repository (the git workflow), and the `ember-local
//! config` command: validate them, show how they differ from the published version, publish
//! them, list versions, roll back. Publishing goes through the admin API's own publish path
//! ([`ember_api::admin::publish`]), against whatever `AWS_ENDPOINT_URL` points at or AWS.
//!
//! Files, relative to the repository root:
//! - `shared/core/rules/segments.yaml`, `functions/email/campaigns.yaml`;
//! - `functions/email/templates/*` (each file is one template part);
//! - `functions/email/catalog.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use ember_api::admin::{self, Current, Kind};
use ember_core::config::{ConfigDoc, ConfigStore};
use ember_core::error::Problem;
use ember_core::ports::EventBus;
use serde_json::Value;

use crate::error::LocalError;

const SEGMENTS: &str = "shared/core/rules/segments.yaml";
const CAMPAIGNS: &str = "functions/email/campaigns.yaml";
const TEMPLATES: &str = "functions/email/templates";
const CATALOG: &str = "functions/email/catalog.json";

fn read(root: &Path, file: &str) -> Result<String, LocalError> {
    std::fs::read_to_string(root.join(file)).map_err(|e| LocalError::Config(format!("{file}: {e}")))
}

fn yaml(root: &Path, file: &str) -> Result<Value, LocalError> {
    serde_yaml::from_str(&read(root, file)?).map_err(|e| LocalError::Config(format!("{file}: {e}")))
}

/// The configuration document the repository's files make.
pub fn load(root: &Path) -> Result<ConfigDoc, LocalError> {
    let mut templates = BTreeMap::new();
    let dir = root.join(TEMPLATES);
    let entries =
        std::fs::read_dir(&dir).map_err(|e| LocalError::Config(format!("{TEMPLATES}: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| LocalError::Config(format!("{TEMPLATES}: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && !name.starts_with('.') {
            templates.insert(name.clone(), read(root, &format!("{TEMPLATES}/{name}"))?);
        }
    }
    Ok(ConfigDoc {
        segments: yaml(root, SEGMENTS)?,
        campaigns: yaml(root, CAMPAIGNS)?,
        templates,
        catalog: serde_json::from_str(&read(root, CATALOG)?)
            .map_err(|e| LocalError::Config(format!("{CATALOG}: {e}")))?,
    })
}

/// Every problem of `doc`, one line each (empty when it is valid).
pub fn validate(doc: &ConfigDoc) -> Vec<Problem> {
    ember_email::compiled::compile(doc)
        .err()
        .unwrap_or_default()
}

/// What differs between `published` and `local`: one line per added (`+`), removed (`-`)
/// or changed (`~`) segment, campaign, template or the catalog.
pub fn diff(published: &ConfigDoc, local: &ConfigDoc) -> Vec<String> {
    let mut lines = Vec::new();
    for kind in [Kind::Segments, Kind::Campaigns, Kind::Templates] {
        let (old, new) = (admin::items(published, kind), admin::items(local, kind));
        for (name, item) in &new {
            match old.get(name) {
                None => lines.push(format!("+ {}/{name}", kind.as_str())),
                Some(o) if o != item => lines.push(format!("~ {}/{name}", kind.as_str())),
                Some(_) => {}
            }
        }
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            lines.push(format!("- {}/{name}", kind.as_str()));
        }
    }
    if published.campaigns.get("defaults") != local.campaigns.get("defaults") {
        lines.push("~ campaigns/defaults".into());
    }
    if published.catalog != local.catalog {
        lines.push("~ catalog".into());
    }
    lines
}

/// What `config` prints for problems.
pub fn report(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        let _ = writeln!(out, "  {p}");
    }
    out
}

/// Publishes the repository's files as the next version, if they differ from the version
/// in force; returns the version in force afterwards.
pub async fn publish(
    store: &ConfigStore,
    bus: &dyn EventBus,
    local: &ConfigDoc,
    note: &str,
) -> Result<(u64, Vec<String>), LocalError> {
    let base: Current = admin::current(store)
        .await
        .map_err(|e| LocalError::Config(e.to_string()))?;
    let changed = diff(&base.doc, local);
    let done = admin::publish(
        store,
        bus,
        &base,
        local,
        note,
        changed.clone(),
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| match e {
        ember_api::ApiError::InvalidConfig(problems) => {
            LocalError::Config(format!("the files are not valid:\n{}", report(&problems)))
        }
        other => LocalError::Config(other.to_string()),
    })?;
    Ok((done.version, changed))
}

/// One call to an Ember HTTP API with an admin key: the status and the JSON answer.
pub async fn admin_call(
    base_url: &str,
    admin_key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), LocalError> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let failed = |e: String| LocalError::pipeline("admin call", format!("{method} {path}: {e}"));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let text = body.map(Value::to_string).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", base_url.trim_end_matches('/')))
        .header("x-api-key", admin_key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// One change of a `--publish` file: `{"method", "path", "body"}`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Change {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<Value>,
}

/// Reads a `--publish` file: a JSON list of changes for the admin API.
pub fn read_changes(path: &Path) -> Result<Vec<Change>, LocalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LocalError::Config(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| LocalError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn the_repository_files_are_the_built_in_configuration() {
        let local = load(&root()).unwrap();
        assert!(validate(&local).is_empty(), "{:?}", validate(&local));
        let builtin = ember_email::compiled::embedded_doc();
        assert_eq!(diff(&builtin, &local), Vec::<String>::new());
        assert_eq!(local.digest(), builtin.digest());
    }

    #[test]
    fn a_diff_names_what_was_added_removed_and_changed() {
        let old = load(&root()).unwrap();
        let mut new = old.clone();
        new.segments["segments"][0]["delay"] = "45m".into();
        new.templates.remove("recommendations.html");
        new.templates
            .insert("vip.html".into(), "<p>{{ greeting }}</p>".into());
        assert_eq!(
            diff(&old, &new),
            [
                "~ segments/cart_abandoner",
                "~ templates/recommendations",
                "+ templates/vip"
            ]
        );
    }
}
