//! The pure fold of enriched events into a [`Profile`].

use chrono::Duration;

use crate::enrich::EnrichedEvent;
use crate::profile::Profile;

/// Tunables of the fold.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldConfig {
    /// Half-life of the heat preference's exponential decay.
    pub heat_half_life: Duration,
    /// How long after an email click a purchase is attributed to its campaign.
    pub attribution_window: Duration,
}

impl Default for FoldConfig {
    fn default() -> Self {
        FoldConfig { heat_half_life: Duration::days(30), attribution_window: Duration::days(7) }
    }
}

/// What [`Profile::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event id was processed before; nothing changed.
    Duplicate,
    Changed,
    Unchanged,
}

impl Profile {
    /// Folds one event into the profile. Pure: no I/O, no clock.
    pub fn apply(&mut self, event: &EnrichedEvent, _config: &FoldConfig) -> Applied {
        let _ = event;
        Applied::Unchanged
    }

    /// Folds an anonymous visitor's profile into this (user) profile.
    pub fn merge_anonymous(&mut self, anon: &Profile) {
        self.anonymous_ids.insert(anon.id.clone());
    }
}
