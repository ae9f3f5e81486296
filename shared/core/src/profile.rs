//! The customer profile: one DynamoDB item per profile key, versioned for optimistic locking.
//!
//! Field layout is the contract between enrichment (the only writer of traits), the email
//! function and the API's export/erasure endpoints. Folding events in lives in `fold.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::BusEvent;

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

/// The most recent processed event ids, oldest first, at most a bound; with a hash index so
/// the duplicate check on the hot path is O(1). Stored (and compared) as the ordered list.
/// The list and the index share each id (one allocation per remembered event). The index
/// hashes with foldhash (seeded per process), several times cheaper than SipHash on ids this
/// short; its output never leaves the process.
#[derive(Debug, Clone, Default)]
pub struct EventIds {
    order: VecDeque<Arc<str>>,
    index: foldhash::HashSet<Arc<str>>,
}

impl EventIds {
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains(id)
    }

    /// Remembers `id` (if new), dropping the oldest ids beyond `bound`.
    pub fn push(&mut self, id: &str, bound: usize) {
        if self.index.contains(id) {
            return;
        }
        self.insert(Arc::from(id));
        while self.order.len() > bound {
            if let Some(old) = self.order.pop_front() {
                self.index.remove(&old);
            }
        }
    }

    /// Appends `id` unless the index has it; hashes it once.
    fn insert(&mut self, id: Arc<str>) {
        if self.index.insert(Arc::clone(&id)) {
            self.order.push_back(id);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn front(&self) -> Option<&str> {
        self.order.front().map(as_str)
    }

    pub fn back(&self) -> Option<&str> {
        self.order.back().map(as_str)
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.into_iter()
    }
}

fn as_str(id: &Arc<str>) -> &str {
    id
}

impl PartialEq for EventIds {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Serialize for EventIds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for EventIds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ids = Vec::<String>::deserialize(deserializer)?;
        // A stored ring is usually full (1,000 ids): size both halves once; a repeated id
        // keeps its first position.
        let mut out = EventIds {
            order: VecDeque::with_capacity(ids.len()),
            index: foldhash::HashSet::with_capacity_and_hasher(ids.len(), Default::default()),
        };
        for id in ids {
            out.insert(Arc::from(id));
        }
        Ok(out)
    }
}

impl<'a> IntoIterator for &'a EventIds {
    type Item = &'a str;
    type IntoIter =
        std::iter::Map<std::collections::vec_deque::Iter<'a, Arc<str>>, fn(&Arc<str>) -> &str>;
    fn into_iter(self) -> Self::IntoIter {
        self.order.iter().map(as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stored_as_their_ordered_list_and_read_back_with_their_index() {
        let mut ids = EventIds::default();
        for id in ["e1", "e2", "e3", "e2"] {
            ids.push(id, 3);
        }
        ids.push("e4", 3);
        let stored = serde_json::to_string(&ids).unwrap();
        assert_eq!(
            stored, r#"["e2","e3","e4"]"#,
            "oldest first, bounded, no repeats"
        );
        let back: EventIds = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, ids);
        assert!(back.contains("e3") && !back.contains("e1"));

        // A stored list with a repeated id (written by hand, or by an older version) keeps
        // the id once, at its first position, and the index agrees with the list.
        let back: EventIds = serde_json::from_str(r#"["a","b","a","c"]"#).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(back.len(), 3);
        let mut more = back.clone();
        more.push("a", 10);
        assert_eq!(more, back, "a known id is not remembered twice");
        more.push("d", 3);
        assert_eq!(more.iter().collect::<Vec<_>>(), ["b", "c", "d"]);
        assert!(!more.contains("a"), "the dropped id left the index too");
    }
}
