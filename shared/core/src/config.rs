//! Runtime configuration: what marketers change (segment rules, campaigns, templates, the
//! product catalog) as immutable, numbered versions in the ledger table, and the cache through
//! which functions use the current one.
//!
//! Storage (partition `config` of the ledger table, read with strongly consistent gets):
//! - `v#<version, 10 digits>`: one whole [`ConfigDoc`] as JSON text, its digest, when it was
//!   published and a note. Created once with a conditional put, never changed.
//! - `current`: the number of the version in force, moved by compare-and-set.
//!
//! A publish claims the next version number, then moves `current` from the version it was
//! based on. A retried publish whose answer was lost finds its own digest under that number
//! and completes; a concurrent publish finds another digest and is told to re-read
//! ([`PublishError::Conflict`]). Rollback publishes an older version's document again as a
//! new version, so numbers only grow and every email names the exact document it used.
//! When nothing was published, functions run the configuration built into them (version 0).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{describe, Problem};
use crate::ports::{Ledger, PortError, PortResult};

/// Partition of the ledger table that holds the configuration.
pub const CONFIG_PK: &str = "config";
const CURRENT_SK: &str = "current";

/// Everything that changes at runtime, as one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDoc {
    /// The segment rules document (`{"segments": [...]}`, the JSON of `segments.yaml`).
    pub segments: Value,
    /// The campaigns document (`{"defaults": {...}, "campaigns": [...]}`).
    pub campaigns: Value,
    /// Template sources by file name (`heat_match.html`, `heat_match.subject.txt`, ...).
    pub templates: BTreeMap<String, String>,
    /// The product catalog recommendations come from.
    pub catalog: Value,
}

impl ConfigDoc {
    /// A stable digest of the document (JSON with sorted keys), to recognise a retried
    /// publish and to tell whether two versions differ.
    pub fn digest(&self) -> String {
        let text = serde_json::to_string(&serde_json::to_value(self).unwrap_or(Value::Null))
            .unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// A published version.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub version: u64,
    pub published_at: DateTime<Utc>,
    pub note: String,
    pub doc: ConfigDoc,
}

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Someone else published first; re-read and apply the change again.
    #[error("version {0} was published by someone else meanwhile; re-read and retry")]
    Conflict(u64),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The versions in the ledger table.
#[derive(Clone)]
pub struct ConfigStore {
    ledger: Arc<dyn Ledger>,
}

fn version_sk(version: u64) -> String {
    format!("v#{version:010}")
}

fn corrupt(reason: String) -> PortError {
    PortError::Permanent {
        stage: "config.decode",
        reason,
    }
}

fn decode(version: u64, item: &Value) -> PortResult<Published> {
    let text = item["doc"]
        .as_str()
        .ok_or_else(|| corrupt(format!("version {version} has no document")))?;
    let doc: ConfigDoc = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("version {version} does not decode: {e}")))?;
    let published_at = item["published_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    Ok(Published {
        version,
        published_at,
        note: item["note"].as_str().unwrap_or_default().to_owned(),
        doc,
    })
}

impl ConfigStore {
    pub fn new(ledger: Arc<dyn Ledger>) -> ConfigStore {
        ConfigStore { ledger }
    }

    /// The number of the version in force; 0 when nothing was published.
    pub async fn current_version(&self) -> PortResult<u64> {
        let item = self.ledger.get(CONFIG_PK, CURRENT_SK).await?;
        Ok(item.and_then(|v| v["version"].as_u64()).unwrap_or(0))
    }

    /// Version `version`, if it was published.
    pub async fn get(&self, version: u64) -> PortResult<Option<Published>> {
        match self.ledger.get(CONFIG_PK, &version_sk(version)).await? {
            Some(item) => decode(version, &item).map(Some),
            None => Ok(None),
        }
    }

    /// The version in force, if any was published.
    pub async fn current(&self) -> PortResult<Option<Published>> {
        match self.current_version().await? {
            0 => Ok(None),
            v => self.get(v).await,
        }
    }

    /// Every published version, oldest first.
    pub async fn versions(&self) -> PortResult<Vec<Published>> {
        let items = self.ledger.query(CONFIG_PK, "v#").await?;
        items
            .iter()
            .map(|(sk, item)| {
                let version = sk[2..]
                    .parse()
                    .map_err(|_| corrupt(format!("bad version key {sk}")))?;
                decode(version, item)
            })
            .collect()
    }

    /// Publishes `doc` as the version after `based_on` (the version the caller read and
    /// changed) and puts it in force. Returns the new version number.
    pub async fn publish(
        &self,
        doc: &ConfigDoc,
        based_on: u64,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, PublishError> {
        let version = based_on + 1;
        let digest = doc.digest();
        let text = serde_json::to_string(doc).map_err(|e| corrupt(e.to_string()))?;
        let item = json!({"doc": text, "digest": digest, "note": note,
                          "published_at": now.to_rfc3339()});
        let sk = version_sk(version);
        if !self.ledger.claim(CONFIG_PK, &sk, &item, None).await? {
            // Taken: our own earlier attempt (its answer was lost), or someone else's.
            let existing = self.ledger.get(CONFIG_PK, &sk).await?;
            if existing.as_ref().map(|e| &e["digest"]) != Some(&json!(digest)) {
                return Err(PublishError::Conflict(version));
            }
        }
        let moved = if based_on == 0 {
            self.ledger
                .claim(CONFIG_PK, CURRENT_SK, &json!({"version": version}), None)
                .await?
                || self.current_version().await? == version
        } else {
            self.ledger
                .replace_if(
                    CONFIG_PK,
                    CURRENT_SK,
                    &json!({"version": based_on}),
                    &json!({"version": version}),
                    None,
                )
                .await?
        };
        if moved {
            Ok(version)
        } else {
            Err(PublishError::Conflict(version))
        }
    }
}

/// How long a function uses a version before it looks for a newer one
/// (`CONFIG_TTL_SECONDS`, default 60, at most 3600; 0 looks on every invocation).
pub fn ttl_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
    match lookup("CONFIG_TTL_SECONDS").filter(|v| !v.trim().is_empty()) {
        None => Ok(Duration::from_secs(60)),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                format!("CONFIG_TTL_SECONDS must be a whole number of seconds from 0 to 3600, got {raw:?}")
            }),
    }
}

/// Compiles a document into what a function runs; every problem, or the compiled form.
pub type Compile<T> = dyn Fn(&ConfigDoc) -> Result<T, Vec<Problem>> + Send + Sync;

/// A compiled version as a function uses it for one invocation.
#[derive(Debug)]
pub struct Active<T> {
    pub version: u64,
    pub config: T,
}

/// Where a function gets its configuration: the store, read again once `ttl` has passed, and
/// compiled once per version. Each invocation takes one [`Active`] and uses it throughout, so
/// it never mixes two versions. Without a store (tests, benchmarks) the built-in
/// configuration is always in force.
pub struct ConfigSource<T> {
    /// The store and how its documents compile; none for the built-in configuration only.
    store: Option<(ConfigStore, Box<Compile<T>>)>,
    ttl: Duration,
    builtin: Arc<Active<T>>,
    cached: Mutex<Option<(Instant, Arc<Active<T>>)>>,
}

impl<T> ConfigSource<T> {
    /// Always `builtin` (version 0).
    pub fn fixed(builtin: T) -> ConfigSource<T> {
        ConfigSource {
            store: None,
            ttl: Duration::MAX,
            builtin: Arc::new(Active {
                version: 0,
                config: builtin,
            }),
            cached: Mutex::new(None),
        }
    }

    /// The store's current version, checked again after `ttl`; `builtin` until a version is
    /// published.
    pub fn stored(
        store: ConfigStore,
        ttl: Duration,
        builtin: T,
        compile: Box<Compile<T>>,
    ) -> ConfigSource<T> {
        ConfigSource {
            store: Some((store, compile)),
            ttl,
            ..ConfigSource::fixed(builtin)
        }
    }

    /// Keeps `active` as the version in use, read now.
    fn remember(&self, active: Arc<Active<T>>) -> Arc<Active<T>> {
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), active.clone()));
        active
    }

    fn cached(&self) -> Option<(Instant, Arc<Active<T>>)> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The version in force. A store that cannot be read keeps the last version in use (and
    /// says so in the log); with none yet, the error goes to the caller to retry.
    pub async fn active(&self) -> PortResult<Arc<Active<T>>> {
        let Some((store, compile)) = &self.store else {
            return Ok(self.builtin.clone());
        };
        let cached = self.cached();
        if let Some((read_at, active)) = &cached {
            if read_at.elapsed() < self.ttl {
                return Ok(active.clone());
            }
        }
        let fresh = match self
            .load(store, compile.as_ref(), cached.as_ref().map(|(_, a)| a))
            .await
        {
            Ok(active) => active,
            Err(e) => match cached {
                Some((_, active)) => {
                    tracing::warn!(error = %e, version = active.version, "configuration not re-read; the version in use stays");
                    active
                }
                None => return Err(e),
            },
        };
        Ok(self.remember(fresh))
    }

    /// The version in force, and no older than `version` (one seen on an event or a
    /// profile): a source still within its TTL of an older one reads the store at once.
    pub async fn at_least(&self, version: u64) -> PortResult<Arc<Active<T>>> {
        let active = self.active().await?;
        if active.version >= version {
            return Ok(active);
        }
        let Some((store, compile)) = &self.store else {
            return Ok(active);
        };
        let fresh = self.load(store, compile.as_ref(), Some(&active)).await?;
        Ok(self.remember(fresh))
    }

    async fn load(
        &self,
        store: &ConfigStore,
        compile: &Compile<T>,
        in_use: Option<&Arc<Active<T>>>,
    ) -> PortResult<Arc<Active<T>>> {
        let version = store.current_version().await?;
        if let Some(active) = in_use.filter(|a| a.version == version) {
            return Ok(active.clone());
        }
        if version == 0 {
            return Ok(self.builtin.clone());
        }
        let published = store
            .get(version)
            .await?
            .ok_or_else(|| corrupt(format!("current version {version} does not exist")))?;
        match compile(&published.doc) {
            Ok(config) => {
                tracing::info!(version, "configuration version in force");
                Ok(Arc::new(Active { version, config }))
            }
            // Validated before it was published, so only a binary older or newer than the
            // publisher gets here. The version in use stays; with none, nothing is guessed.
            Err(problems) => {
                let reason = describe(&problems);
                match in_use {
                    Some(active) => {
                        tracing::error!(version, problems = %reason, kept = active.version, "published configuration does not compile here");
                        Ok(active.clone())
                    }
                    None => Err(corrupt(format!(
                        "version {version} does not compile: {reason}"
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{block_on, MemoryLedger};

    fn doc(tag: &str) -> ConfigDoc {
        ConfigDoc {
            segments: json!({"segments": []}),
            campaigns: json!({"tag": tag}),
            templates: BTreeMap::from([("a.html".into(), tag.into())]),
            catalog: json!({}),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn versions_only_grow_and_a_stale_publish_is_a_conflict() {
        block_on(async {
            let store = ConfigStore::new(Arc::new(MemoryLedger::default()));
            assert_eq!(store.current_version().await.unwrap(), 0);
            assert!(store.current().await.unwrap().is_none());
            assert_eq!(
                store.publish(&doc("a"), 0, "first", now()).await.unwrap(),
                1
            );
            assert_eq!(store.publish(&doc("b"), 1, "", now()).await.unwrap(), 2);
            // Someone who read version 1 and changed it is refused, nothing half-applied.
            assert!(matches!(
                store.publish(&doc("c"), 1, "", now()).await,
                Err(PublishError::Conflict(2))
            ));
            let current = store.current().await.unwrap().unwrap();
            assert_eq!((current.version, current.doc), (2, doc("b")));
            let all = store.versions().await.unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!((all[0].version, all[0].note.as_str()), (1, "first"));
            assert_eq!(all[0].published_at, now());
        });
    }

    #[test]
    fn a_retried_publish_completes_instead_of_conflicting() {
        block_on(async {
            let store = ConfigStore::new(Arc::new(MemoryLedger::default()));
            // The first attempt landed and its answer was lost: the SDK sends it again.
            for based_on in [0, 1] {
                let d = doc(&based_on.to_string());
                assert_eq!(
                    store.publish(&d, based_on, "", now()).await.unwrap(),
                    based_on + 1
                );
                assert_eq!(
                    store.publish(&d, based_on, "", now()).await.unwrap(),
                    based_on + 1
                );
            }
            assert_eq!(store.current_version().await.unwrap(), 2);
        });
    }

    fn source(store: ConfigStore, ttl: Duration) -> ConfigSource<String> {
        ConfigSource::stored(
            store,
            ttl,
            "builtin".into(),
            Box::new(|d: &ConfigDoc| match d.campaigns["tag"].as_str() {
                Some("bad") => Err(vec![Problem::new("campaigns", "bad")]),
                tag => Ok(tag.unwrap_or_default().to_owned()),
            }),
        )
    }

    #[test]
    fn functions_see_a_publish_after_the_ttl_and_keep_a_good_version_over_a_bad_one() {
        block_on(async {
            let store = ConfigStore::new(Arc::new(MemoryLedger::default()));
            let fresh = source(store.clone(), Duration::ZERO);
            let slow = source(store.clone(), Duration::from_secs(3600));
            assert_eq!(fresh.active().await.unwrap().config, "builtin");
            assert_eq!(slow.active().await.unwrap().version, 0);
            store.publish(&doc("one"), 0, "", now()).await.unwrap();
            let active = fresh.active().await.unwrap();
            assert_eq!((active.version, active.config.as_str()), (1, "one"));
            assert_eq!(slow.active().await.unwrap().version, 0, "within its TTL");
            // Asked for a version it has not seen (on an event), it reads the store at once.
            assert_eq!(slow.at_least(1).await.unwrap().version, 1);
            assert_eq!(slow.active().await.unwrap().version, 1);
            // A version this binary cannot compile: the one in use stays.
            store.publish(&doc("bad"), 1, "", now()).await.unwrap();
            assert_eq!(fresh.active().await.unwrap().version, 1);
            let cold = source(store.clone(), Duration::ZERO);
            assert!(cold.active().await.is_err(), "nothing is guessed");
        });
    }
}
