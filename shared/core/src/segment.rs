//! Declarative segment rules.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::error::CoreError;
use crate::profile::Profile;

/// One named segment rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: String,
    /// Optional delay the rule depends on (e.g. cart abandonment), for re-check scheduling.
    pub delay: Option<chrono::Duration>,
}

/// All segment rules, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn embedded() -> Result<RuleSet, CoreError> {
        Ok(RuleSet::default())
    }

    pub fn from_yaml(_yaml: &str) -> Result<RuleSet, CoreError> {
        Ok(RuleSet::default())
    }

    pub fn evaluate(&self, _profile: &Profile, _now: DateTime<Utc>) -> BTreeSet<String> {
        BTreeSet::new()
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }
}
