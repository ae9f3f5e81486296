//! The customer profile: one DynamoDB item per profile key, versioned for optimistic locking.
//!
//! Field layout is the contract between enrichment (the only writer of traits), the email
//! function and the API's export/erasure endpoints. Folding events in lives in `fold.rs`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::BusEvent;

pub use crate::event_ids::{EventIds, PACKED_FORMAT};

/// How many processed event ids a profile remembers for de-duplication.
pub const RECENT_EVENT_IDS: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// User id, or `anon:<anonymous id>` for visitors not identified yet.
    pub id: String,
    /// Incremented on every write; 0 means "never stored".
    pub version: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    /// Number of events seen per event type name.
    pub counts: BTreeMap<String, u64>,
    pub purchase_count: u64,
    /// Sum of purchase amounts in minor units of `currency`.
    pub purchase_total_minor: i64,
    pub currency: Option<String>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub last_checkout_at: Option<DateTime<Utc>>,
    /// Per-day buckets (`YYYY-MM-DD`, UTC) kept for the rolling 7/30-day windows.
    pub daily: BTreeMap<String, DayCounters>,
    /// Time-decayed heat preference in Scoville heat units.
    pub heat: Option<DecayedValue>,
    pub cart: Cart,
    /// Consent per channel (`email`, `sms`, `push`, …).
    pub consent: BTreeMap<String, Consent>,
    /// Anonymous ids merged into this profile by `identify` events.
    pub anonymous_ids: BTreeSet<String>,
    /// Set on an anonymous profile once it has been merged into a user profile.
    pub merged_into: Option<String>,
    /// Latest answer per poll question id.
    pub poll_answers: BTreeMap<String, String>,
    /// Last-touch UTM parameters.
    pub utm: BTreeMap<String, String>,
    /// Last device class seen (`mobile`, `tablet`, `desktop`, `bot`, `unknown`).
    pub device: Option<String>,
    pub email_status: EmailStatus,
    /// Segments the profile is currently in.
    pub segments: BTreeSet<String>,
    /// Bus events written but not yet confirmed as published (outbox); re-published on retry.
    pub outbox: Vec<BusEvent>,
    /// The most recent processed event ids, oldest first, at most [`RECENT_EVENT_IDS`].
    pub recent_event_ids: EventIds,
    /// Purchase totals in minor units per currency; `purchase_total_minor` is the entry for
    /// `currency` (the currency of the latest purchase).
    pub purchase_totals_minor: BTreeMap<String, i64>,
    /// When each last-writer-wins trait was last set (event `occurred_at`): `email`, `name`,
    /// `timezone`, `utm`, `device`, `poll:<question id>`.
    pub trait_times: BTreeMap<String, DateTime<Utc>>,
    /// Ids of (anonymous) profiles already merged into this one; merging is idempotent.
    pub merged_profiles: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DayCounters {
    pub events: u64,
    pub page_views: u64,
    pub product_views: u64,
    pub purchases: u64,
    pub revenue_minor: i64,
}

/// An exponentially time-decayed average: `sum / weight`, both decayed to `as_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecayedValue {
    pub weighted_sum: f64,
    pub weight: f64,
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cart {
    /// Items by SKU.
    pub items: BTreeMap<String, CartItem>,
    pub currency: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CartItem {
    pub name: String,
    pub quantity: u32,
    pub unit_price_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consent {
    pub granted: bool,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailStatus {
    /// `hard_bounce`, `complaint`, `erasure`, … once the address must not be mailed again.
    pub suppressed: Option<String>,
    pub suppressed_at: Option<DateTime<Utc>>,
    pub last_clicked_campaign: Option<String>,
    pub last_clicked_at: Option<DateTime<Utc>>,
    /// Purchases attributed to a campaign clicked within the attribution window, by campaign.
    pub attributed_purchases: BTreeMap<String, u64>,
    pub attributed_revenue_minor: BTreeMap<String, i64>,
}

impl Profile {
    pub fn new(id: impl Into<String>) -> Self {
        Profile {
            id: id.into(),
            ..Default::default()
        }
    }

    pub fn cart_value_minor(&self) -> i64 {
        self.cart
            .items
            .values()
            .map(|i| i.unit_price_minor * i64::from(i.quantity))
            .sum()
    }

    pub fn has_consent(&self, channel: &str) -> bool {
        self.consent.get(channel).is_some_and(|c| c.granted)
    }

    /// The decayed heat preference in SHU at its `as_of` time, if any was ever stated.
    pub fn heat_shu(&self) -> Option<f64> {
        self.heat
            .as_ref()
            .filter(|h| h.weight > 0.0)
            .map(|h| h.weighted_sum / h.weight)
    }
}
