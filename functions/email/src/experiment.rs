//! A campaign's experiment: the holdout share left out on purpose, the variants sent to the
//! others by weight, the attribution window, and the deterministic assignment of a customer
//! to one group.
//!
//! Assignment hashes (campaign, profile id) with SHA-256: the same customer lands in the same
//! group on every retry, replay, sweeper run and function instance, with nothing stored, and
//! the groups of two campaigns are independent of each other.

use std::borrow::Cow;

use chrono::Duration;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use ember_core::attribution::{DEFAULT_GROUP, HOLDOUT};

use crate::campaign::{parse_duration, Campaign};

/// The largest holdout share: more would starve the campaign it measures.
pub const MAX_HOLDOUT_PERCENT: u8 = 50;
/// The attribution window when a campaign names none.
pub const DEFAULT_ATTRIBUTION_HOURS: u32 = 7 * 24;

/// One version of a campaign's email: its own subject line and/or template (neither: the
/// campaign's email as configured, the usual control).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// A fixed subject line instead of the template's.
    #[serde(default)]
    pub subject: Option<String>,
    /// Another template (its `.subject.txt`, `.html` and `.txt`).
    #[serde(default)]
    pub template: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Percent of customers (0–[`MAX_HOLDOUT_PERCENT`]) who are recorded but not sent.
    pub holdout_percent: u8,
    /// Empty: everyone not held out gets the campaign's email, as group `email`.
    pub variants: Vec<Variant>,
    /// How long after the send (or the holdout's would-be send) a purchase counts for it.
    pub attribution_hours: u32,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            holdout_percent: 0,
            variants: Vec::new(),
            attribution_hours: DEFAULT_ATTRIBUTION_HOURS,
        }
    }
}

/// Where a customer lands in one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group<'c> {
    Holdout,
    /// Sent, as this variant (`None`: the campaign has no variants).
    Sent(Option<&'c Variant>),
}

impl Group<'_> {
    pub fn name(&self) -> &str {
        match self {
            Group::Holdout => HOLDOUT,
            Group::Sent(Some(v)) => &v.name,
            Group::Sent(None) => DEFAULT_GROUP,
        }
    }
}

/// Two independent uniform draws for (campaign, profile).
fn draws(campaign: &str, profile_id: &str) -> (u64, u64) {
    let digest = Sha256::digest(format!("ember:assign\n{campaign}\n{profile_id}").as_bytes());
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest[i..i + 8]);
        u64::from_be_bytes(b)
    };
    (word(0), word(8))
}

impl Experiment {
    /// The group of `profile_id` in `campaign`.
    pub fn assign<'c>(&'c self, campaign: &str, profile_id: &str) -> Group<'c> {
        let (holdout, variant) = draws(campaign, profile_id);
        if holdout % 10_000 < u64::from(self.holdout_percent) * 100 {
            return Group::Holdout;
        }
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        if total == 0 {
            return Group::Sent(None);
        }
        let mut point = variant % total;
        for v in &self.variants {
            if point < u64::from(v.weight) {
                return Group::Sent(Some(v));
            }
            point -= u64::from(v.weight);
        }
        Group::Sent(self.variants.last())
    }

    /// Every group a report of the campaign has, holdout last.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = if self.variants.is_empty() {
            vec![DEFAULT_GROUP.to_owned()]
        } else {
            self.variants.iter().map(|v| v.name.clone()).collect()
        };
        if self.holdout_percent > 0 {
            out.push(HOLDOUT.to_owned());
        }
        out
    }
}

/// The experiment fields of a campaign as written.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawExperiment {
    #[serde(default)]
    pub holdout_percent: u8,
    #[serde(default)]
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub attribution_window: Option<String>,
}

pub(crate) fn parse_experiment(
    raw: RawExperiment,
    template_exists: &dyn Fn(&str) -> bool,
) -> Result<Experiment, String> {
    if raw.holdout_percent > MAX_HOLDOUT_PERCENT {
        return Err(format!(
            "holdout_percent {} is over {MAX_HOLDOUT_PERCENT}",
            raw.holdout_percent
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for v in &raw.variants {
        let valid_name = !v.name.is_empty()
            && v.name.len() <= 64
            && v.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name || v.name == HOLDOUT {
            return Err(format!(
                "variant name {:?} must be lowercase letters, digits and _ (and not {HOLDOUT:?})",
                v.name
            ));
        }
        if !names.insert(v.name.as_str()) {
            return Err(format!("variant {:?} defined twice", v.name));
        }
        if v.weight == 0 {
            return Err(format!("variant {:?} needs a weight of at least 1", v.name));
        }
        if v.subject.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(format!("variant {:?} has an empty subject", v.name));
        }
        if let Some(t) = v.template.as_deref().filter(|t| !template_exists(t)) {
            return Err(format!("variant {:?}: unknown template {t:?}", v.name));
        }
    }
    let attribution_hours = match raw.attribution_window.as_deref() {
        None => DEFAULT_ATTRIBUTION_HOURS,
        Some(text) => {
            let window = parse_duration(text)?;
            if window < Duration::hours(1) || window.num_seconds() % 3600 != 0 {
                return Err(format!(
                    "attribution_window {text:?} must be whole hours, at least 1h"
                ));
            }
            u32::try_from(window.num_hours()).map_err(|e| e.to_string())?
        }
    };
    Ok(Experiment {
        holdout_percent: raw.holdout_percent,
        variants: raw.variants,
        attribution_hours,
    })
}

impl Campaign {
    /// The campaign as `variant` sends it (its template, if it has one).
    pub fn as_variant(&self, variant: Option<&Variant>) -> Cow<'_, Campaign> {
        match variant.and_then(|v| v.template.as_ref()) {
            Some(template) => Cow::Owned(Campaign {
                template: template.clone(),
                ..self.clone()
            }),
            None => Cow::Borrowed(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(holdout: u8, weights: &[u32]) -> Experiment {
        Experiment {
            holdout_percent: holdout,
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    name: format!("v{i}"),
                    weight: *w,
                    subject: Some(format!("Subject {i}")),
                    template: None,
                })
                .collect(),
            attribution_hours: DEFAULT_ATTRIBUTION_HOURS,
        }
    }

    #[test]
    fn assignment_is_stable_and_splits_by_share_and_weight() {
        let e = experiment(10, &[1, 3]);
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for i in 0..20_000 {
            let id = format!("user-{i}");
            let group = e.assign("winback", &id);
            assert_eq!(group, e.assign("winback", &id), "stable");
            *counts.entry(group.name().to_owned()).or_default() += 1;
        }
        let share = |g: &str| f64::from(counts[g]) / 20_000.0;
        assert!((share(HOLDOUT) - 0.10).abs() < 0.01, "{counts:?}");
        assert!((share("v0") - 0.225).abs() < 0.015, "{counts:?}");
        assert!((share("v1") - 0.675).abs() < 0.015, "{counts:?}");
        // Independent across campaigns: being held out of one says nothing about another.
        let both = (0..20_000)
            .map(|i| format!("user-{i}"))
            .filter(|id| {
                e.assign("winback", id) == Group::Holdout && e.assign("heat", id) == Group::Holdout
            })
            .count();
        assert!((150..=260).contains(&both), "{both}");
        assert_eq!(experiment(0, &[]).assign("c", "u"), Group::Sent(None));
        assert_eq!(e.groups(), ["v0", "v1", "holdout"]);
    }

    #[test]
    fn invalid_experiments_are_named() {
        let exists = |t: &str| t == "heat_match";
        let raw = |json: serde_json::Value| serde_json::from_value::<RawExperiment>(json).unwrap();
        let err = |json| parse_experiment(raw(json), &exists).unwrap_err();
        assert!(err(serde_json::json!({"holdout_percent": 60})).contains("over 50"));
        assert!(
            err(serde_json::json!({"variants": [{"name": "holdout", "subject": "x"}]}))
                .contains("not \"holdout\"")
        );
        assert!(
            err(serde_json::json!({"variants": [{"name": "a", "weight": 0}]})).contains("weight")
        );
        assert!(
            err(serde_json::json!({"variants": [{"name": "a", "template": "nope"}]}))
                .contains("unknown template")
        );
        assert!(err(serde_json::json!({"attribution_window": "30m"})).contains("whole hours"));
        let ok = parse_experiment(
            raw(
                serde_json::json!({"holdout_percent": 10, "attribution_window": "3d",
                "variants": [{"name": "a", "template": "heat_match", "weight": 2}]}),
            ),
            &exists,
        )
        .unwrap();
        assert_eq!(ok.attribution_hours, 72);
    }
}
