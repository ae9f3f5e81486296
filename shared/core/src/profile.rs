//! The customer profile: one DynamoDB item per profile key, versioned for optimistic locking.
//!
//! Field layout is the contract between enrichment (the only writer of traits), the email
//! function and the API's export/erasure endpoints. Folding events in lives in `fold.rs`.
//!
//! Nothing in a profile grows with the number of events a customer ever sent: counters are
//! numbers, the rolling windows are at most [`crate::daily::WINDOW_DAYS`] days, and every
//! collection that grows with input has a bound ([`MAX_CART_LINES`], [`MAX_POLL_ANSWERS`],
//! [`MAX_ANONYMOUS_IDS`], [`MAX_ABSORBED`], [`MAX_CURRENCIES`], [`MAX_ATTRIBUTED_CAMPAIGNS`],
//! [`crate::watermark::MAX_SHARDS`], [`crate::attribution::MAX_EXPOSURES`]). De-duplication keeps only a stream watermark here; event
//! ids live in time-bounded claims outside the profile (`ports::EventClaims`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::attribution::{Exposure, Tally};
pub use crate::daily::{Daily, DayCounters};
pub use crate::outbox::{Changes, Outbox};
pub use crate::stamped::Stamped;
pub use crate::watermark::{Position, Watermark};

/// Most distinct SKUs a cart holds; adding another drops the line with the smallest SKU.
pub const MAX_CART_LINES: usize = 25;
/// Most poll questions remembered; a new one drops the answer given longest ago.
pub const MAX_POLL_ANSWERS: usize = 20;
/// Most anonymous ids linked to a profile; a new one drops the smallest (ids are opaque).
pub const MAX_ANONYMOUS_IDS: usize = 10;
/// Merged anonymous profiles whose later stream records a profile recognises by position.
pub const MAX_ABSORBED: usize = 2;
/// Most currencies with a purchase total; a new one drops the smallest total.
pub const MAX_CURRENCIES: usize = 5;
/// Most campaigns with attributed purchases kept per profile.
pub const MAX_ATTRIBUTED_CAMPAIGNS: usize = 20;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// User id, or `anon:<anonymous id>` for visitors not identified yet.
    pub id: String,
    /// Incremented on every write; 0 means "never stored".
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Stamped<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Stamped<String>>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Stamped<String>>,
    /// Number of events seen per event type name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub purchase_count: u64,
    /// Purchase totals in minor units per currency (at most [`MAX_CURRENCIES`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub purchase_totals_minor: BTreeMap<String, i64>,
    /// Currency of the latest purchase: the one [`Profile::purchase_total_minor`] reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_purchase_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkout_at: Option<DateTime<Utc>>,
    /// Per-day counters of the last 30 days (UTC), for the rolling 7/30-day windows.
    #[serde(skip_serializing_if = "Daily::is_empty")]
    pub daily: Daily,
    /// Time-decayed heat preference in Scoville heat units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heat: Option<DecayedValue>,
    #[serde(skip_serializing_if = "Cart::is_empty")]
    pub cart: Cart,
    /// Consent per channel (`email`, `sms`, `push`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, Consent>,
    /// Anonymous ids linked to this profile by `identify` events (at most
    /// [`MAX_ANONYMOUS_IDS`]).
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub anonymous_ids: BTreeSet<String>,
    /// Set on an anonymous profile once it has been merged into a user profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// The `identify` event that merged this anonymous profile (only a retry of that event
    /// merges it again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_by: Option<String>,
    /// Latest answer per poll question id (at most [`MAX_POLL_ANSWERS`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub poll_answers: BTreeMap<String, Stamped<String>>,
    /// Last-touch UTM parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utm: Option<Stamped<BTreeMap<String, String>>>,
    /// Last device class seen (`mobile`, `tablet`, `desktop`, `bot`, `unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Stamped<String>>,
    #[serde(skip_serializing_if = "EmailStatus::is_empty")]
    pub email_status: EmailStatus,
    /// Segments the profile is currently in.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub segments: BTreeSet<String>,
    /// The configuration version whose rules last set `segments`: an evaluator running an
    /// older version (it has not seen a publish yet) leaves them alone, so a publish never
    /// makes memberships flap.
    #[serde(skip_serializing_if = "is_zero")]
    pub segments_version: u64,
    /// Bus events of the last write, until they are known to be published.
    #[serde(skip_serializing_if = "Outbox::is_empty")]
    pub outbox: Outbox,
    /// The newest stream record applied, per shard: a redelivered record is recognised by it.
    #[serde(skip_serializing_if = "Watermark::is_empty")]
    pub stream: Watermark,
    /// The same, for records of merged anonymous profiles folded here (their events reached
    /// the anonymous key after the merge), per anonymous profile id: only ids in
    /// `anonymous_ids`, at most [`MAX_ABSORBED`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub absorbed: BTreeMap<String, Watermark>,
    /// Campaign groups the customer is in, with the orders attributed to each (at most
    /// [`crate::attribution::MAX_EXPOSURES`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub campaigns: BTreeMap<String, Exposure>,
    /// Report counters the events folded since the last write add: written in the same
    /// transaction as the profile (`ProfileStore::put_tallied`), never stored in it.
    #[serde(skip)]
    pub tallies: Vec<Tally>,
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
    /// Items by SKU (at most [`MAX_CART_LINES`]).
    pub items: BTreeMap<String, CartItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Cart {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.currency.is_none() && self.updated_at.is_none()
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_clicked_campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_clicked_at: Option<DateTime<Utc>>,
    /// Purchases attributed to a campaign clicked within the attribution window, by campaign.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributed_purchases: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributed_revenue_minor: BTreeMap<String, i64>,
}

impl EmailStatus {
    pub fn is_empty(&self) -> bool {
        *self == EmailStatus::default()
    }
}

impl Profile {
    pub fn new(id: impl Into<String>) -> Self {
        Profile {
            id: id.into(),
            ..Default::default()
        }
    }

    /// Whether the record at `position`, keyed `source` on the stream, has been applied to
    /// this profile: its own records by `stream`, a merged anonymous profile's by `absorbed`.
    pub fn has_applied(&self, source: &str, position: &Position<'_>) -> bool {
        if source == self.id {
            self.stream.covers(position)
        } else {
            self.absorbed
                .get(source)
                .is_some_and(|w| w.covers(position))
        }
    }

    /// Records that the record at `position`, keyed `source`, has been applied.
    pub fn mark_applied(&mut self, source: &str, position: &Position<'_>) {
        if source == self.id {
            self.stream.advance(position);
        } else {
            self.absorbed
                .entry(source.to_owned())
                .or_default()
                .advance(position);
            // Ids no longer linked take their positions with them; beyond the bound another
            // id's go (its redelivered records are then caught by their event-id claims,
            // while those last).
            let anonymous_ids = &self.anonymous_ids;
            self.absorbed.retain(|id, _| {
                id.strip_prefix(crate::event::ANON_PREFIX)
                    .is_some_and(|a| anonymous_ids.contains(a))
            });
            while self.absorbed.len() > MAX_ABSORBED {
                match self.absorbed.keys().find(|id| *id != source).cloned() {
                    Some(id) => self.absorbed.remove(&id),
                    None => break,
                };
            }
        }
    }

    /// The email address, if one was ever given.
    pub fn email(&self) -> Option<&str> {
        self.email.as_ref().map(|s| s.value.as_str())
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(|s| s.value.as_str())
    }

    pub fn timezone(&self) -> Option<&str> {
        self.timezone.as_ref().map(|s| s.value.as_str())
    }

    pub fn device(&self) -> Option<&str> {
        self.device.as_ref().map(|s| s.value.as_str())
    }

    /// The last-touch UTM parameters (empty if none were seen).
    pub fn utm(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.utm.as_ref().map_or(&EMPTY, |s| &s.value)
    }

    pub fn poll_answer(&self, question: &str) -> Option<&str> {
        self.poll_answers.get(question).map(|s| s.value.as_str())
    }

    /// Sum of purchase amounts in minor units of `currency` (the latest purchase's).
    pub fn purchase_total_minor(&self) -> i64 {
        self.currency
            .as_ref()
            .and_then(|c| self.purchase_totals_minor.get(c))
            .copied()
            .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbed_positions_are_kept_apart_and_bounded() {
        let mut p = Profile::new("u-1");
        for a in ["a-1", "a-2", "a-3"] {
            p.anonymous_ids.insert(a.to_owned());
        }
        let at = |seq| Position::new("shardId-000000000001", seq);
        p.mark_applied("u-1", &at("10"));
        p.mark_applied("anon:a-1", &at("20"));
        assert!(p.has_applied("u-1", &at("10")) && !p.has_applied("u-1", &at("20")));
        assert!(p.has_applied("anon:a-1", &at("20")) && !p.has_applied("anon:a-2", &at("1")));
        p.mark_applied("anon:a-2", &at("30"));
        p.mark_applied("anon:a-3", &at("40"));
        assert_eq!(p.absorbed.len(), MAX_ABSORBED);
        assert!(p.has_applied("anon:a-3", &at("40")), "the newest is kept");
        // An id no longer linked takes its positions with it.
        p.anonymous_ids.remove("a-3");
        p.mark_applied("anon:a-2", &at("31"));
        assert!(!p.absorbed.contains_key("anon:a-3"));
    }
}
