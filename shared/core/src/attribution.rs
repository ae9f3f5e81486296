//! What a campaign earns: the groups a customer is exposed in, purchases and refunds
//! attributed to them, and the report counters ([`Tally`]) each change adds.
//!
//! Rules:
//! - A `campaign_assigned` event opens an **exposure**: the customer is in `group` (a variant
//!   that was sent, or [`HOLDOUT`], who would have been) from `at` until `at` plus the
//!   campaign's attribution window. A second assignment of the campaign inside the window is
//!   the same trial and changes nothing; after it, a new trial starts and the customer counts
//!   as a recipient again.
//! - A **purchase** inside an exposure's window counts for that exposure: its revenue, and a
//!   conversion the first time the exposure has a paid order. An order id is counted once per
//!   exposure however often it is re-sent under new event ids.
//! - A **refund** of an attributed order (any time while the exposure is kept, up to
//!   [`REFUND_DAYS`] after its window) subtracts from the revenue, at most the order's amount;
//!   an exposure whose orders are all refunded no longer counts as a conversion.
//! - Bounds: an exposure is dropped at the first event after nothing can change it (its
//!   window is over and it has no paid order, or its refund period is over); at most
//!   [`MAX_EXPOSURES`] exposures per profile (the one whose window ended first goes) and
//!   [`MAX_ORDERS`] tracked orders per exposure (a later order still counts, but a refund of
//!   it is not subtracted).
//!
//! The fold is exactly-once (the enrich handler applies each event once), and the tallies are
//! written in the same transaction as the profile, so the counters are exactly-once too.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The group of customers a campaign leaves out on purpose.
pub const HOLDOUT: &str = "holdout";
/// The group name of a campaign without variants.
pub const DEFAULT_GROUP: &str = "email";
/// Most open exposures kept per profile.
pub const MAX_EXPOSURES: usize = 12;
/// Most orders tracked per exposure for refunds.
pub const MAX_ORDERS: usize = 4;
/// How long after its attribution window an exposure is kept, for refunds of its orders.
pub const REFUND_DAYS: i64 = 60;

/// One customer in one campaign group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    pub group: String,
    pub at: DateTime<Utc>,
    /// End of the attribution window.
    pub until: DateTime<Utc>,
    /// Attributed orders and the amount of each still counted (refunds shrink it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub orders: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub converted: bool,
}

impl Exposure {
    fn pays(&self) -> bool {
        self.orders.values().any(|&net| net > 0)
    }
}

/// What one write adds to one (campaign, group) report counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub campaign: String,
    pub group: String,
    pub recipients: i64,
    pub conversions: i64,
    /// Revenue in minor units, per currency.
    pub revenue_minor: BTreeMap<String, i64>,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.recipients == 0
            && self.conversions == 0
            && self.revenue_minor.values().all(|&v| v == 0)
    }
}

/// Ledger partition of a campaign's report counters: one record per group (sort key).
pub fn report_pk(campaign: &str) -> String {
    format!("report#{campaign}")
}

/// The counter attribute of revenue in `currency`.
pub fn revenue_attribute(currency: &str) -> String {
    format!("revenue_{currency}")
}

/// Adds `t` to a report record's attributes (as DynamoDB's `ADD` does).
pub fn add_to_record(record: &mut serde_json::Value, t: &Tally) {
    if !record.is_object() {
        *record = serde_json::json!({});
    }
    let mut add = |name: String, by: i64| {
        let now = record
            .get(&name)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        record[name] = serde_json::json!(now + by);
    };
    add("recipients".into(), t.recipients);
    add("conversions".into(), t.conversions);
    for (currency, by) in &t.revenue_minor {
        add(revenue_attribute(currency), *by);
    }
}

/// Adds to the tally of (campaign, group) in `tallies`, one entry per counter (a DynamoDB
/// transaction may touch each item once).
fn tally<'t>(tallies: &'t mut Vec<Tally>, campaign: &str, group: &str) -> &'t mut Tally {
    let i = match tallies
        .iter()
        .position(|t| t.campaign == campaign && t.group == group)
    {
        Some(i) => i,
        None => {
            tallies.push(Tally {
                campaign: campaign.to_owned(),
                group: group.to_owned(),
                ..Tally::default()
            });
            tallies.len() - 1
        }
    };
    &mut tallies[i]
}

/// A profile's exposures by campaign, and the tallies of changes not yet written.
#[derive(Debug)]
pub struct Attribution<'p> {
    pub exposures: &'p mut BTreeMap<String, Exposure>,
    pub tallies: &'p mut Vec<Tally>,
}

impl Attribution<'_> {
    /// Drops exposures nothing can change any more at `now` (event time): past their window
    /// with no paid order to refund, or past their refund period. Run on every event, so the
    /// profile item stays small: most exposures end with their window. (A purchase arriving
    /// later than an event after the window, with a time inside it, no longer counts.)
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.exposures.retain(|_, e| {
            let open = now <= e.until;
            let refundable = e.pays() && now <= e.until + Duration::days(REFUND_DAYS);
            open || refundable
        });
    }

    /// `campaign_assigned`: opens an exposure unless one of the campaign is still open.
    pub fn assign(&mut self, campaign: &str, group: &str, window: Duration, at: DateTime<Utc>) {
        self.prune(at);
        if self.exposures.get(campaign).is_some_and(|e| at <= e.until) {
            return;
        }
        if !self.exposures.contains_key(campaign) && self.exposures.len() >= MAX_EXPOSURES {
            let first_ended = self
                .exposures
                .iter()
                .min_by_key(|(name, e)| (e.until, name.to_string()))
                .map(|(name, _)| name.clone());
            if let Some(name) = first_ended {
                self.exposures.remove(&name);
            }
        }
        self.exposures.insert(
            campaign.to_owned(),
            Exposure {
                group: group.to_owned(),
                at,
                until: at + window,
                orders: BTreeMap::new(),
                converted: false,
            },
        );
        tally(self.tallies, campaign, group).recipients += 1;
    }

    /// A purchase at `at`: counts for every exposure whose window holds `at`.
    pub fn purchase(
        &mut self,
        order_id: &str,
        total_minor: i64,
        currency: &str,
        at: DateTime<Utc>,
    ) {
        self.prune(at);
        for (campaign, e) in self.exposures.iter_mut() {
            if at < e.at || at > e.until || e.orders.contains_key(order_id) {
                continue;
            }
            if e.orders.len() < MAX_ORDERS {
                e.orders.insert(order_id.to_owned(), total_minor.max(0));
            }
            let t = tally(self.tallies, campaign, &e.group);
            *t.revenue_minor.entry(currency.to_owned()).or_default() += total_minor;
            if !e.converted && total_minor > 0 {
                e.converted = true;
                t.conversions += 1;
            }
        }
    }

    /// A refund of `order_id`: subtracted from every exposure it was attributed to.
    pub fn refund(&mut self, order_id: &str, amount_minor: i64, currency: &str) {
        for (campaign, e) in self.exposures.iter_mut() {
            let Some(net) = e.orders.get_mut(order_id) else {
                continue;
            };
            let taken = amount_minor.clamp(0, *net);
            *net -= taken;
            let t = tally(self.tallies, campaign, &e.group);
            *t.revenue_minor.entry(currency.to_owned()).or_default() -= taken;
            if e.converted && !e.pays() {
                e.converted = false;
                t.conversions -= 1;
            }
        }
        self.tallies.retain(|t| !t.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + Duration::hours(h)
    }

    struct Fixture {
        exposures: BTreeMap<String, Exposure>,
        tallies: Vec<Tally>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                exposures: BTreeMap::new(),
                tallies: Vec::new(),
            }
        }
        fn a(&mut self) -> Attribution<'_> {
            Attribution {
                exposures: &mut self.exposures,
                tallies: &mut self.tallies,
            }
        }
        fn take(&mut self) -> Vec<(String, i64, i64, i64)> {
            std::mem::take(&mut self.tallies)
                .into_iter()
                .map(|t| {
                    let eur = t.revenue_minor.get("EUR").copied().unwrap_or(0);
                    (t.group, t.recipients, t.conversions, eur)
                })
                .collect()
        }
    }

    #[test]
    fn purchases_in_the_window_count_once_per_order_and_refunds_take_them_back() {
        let mut f = Fixture::new();
        f.a().assign("winback", "b", Duration::days(7), t(0));
        assert_eq!(f.take(), vec![("b".into(), 1, 0, 0)]);
        // A second send inside the window is the same trial.
        f.a().assign("winback", "b", Duration::days(7), t(5));
        assert_eq!(f.take(), vec![]);

        f.a().purchase("o1", 2_000, "EUR", t(24));
        f.a().purchase("o1", 2_000, "EUR", t(25));
        f.a().purchase("o2", 500, "EUR", t(26));
        // One counter per (campaign, group) per write.
        assert_eq!(f.take(), vec![("b".into(), 0, 1, 2_500)]);
        // Refunds: partial, then beyond what is left of the order, then the other order.
        f.a().refund("o1", 1_500, "EUR");
        f.a().refund("o1", 1_000, "EUR");
        assert_eq!(f.take(), vec![("b".into(), 0, 0, -2_000)]);
        f.a().refund("o2", 500, "EUR");
        assert_eq!(f.take(), vec![("b".into(), 0, -1, -500)]);
        f.a().refund("o-unknown", 500, "EUR");
        assert_eq!(f.take(), vec![]);

        // Outside the window nothing counts; after it a new trial starts.
        f.a().purchase("o3", 900, "EUR", t(24 * 8));
        assert_eq!(f.take(), vec![]);
        f.a().assign("winback", "b", Duration::days(7), t(24 * 9));
        assert_eq!(f.take(), vec![("b".into(), 1, 0, 0)]);
    }

    #[test]
    fn a_purchase_counts_for_every_open_exposure_and_exposures_are_bounded() {
        let mut f = Fixture::new();
        f.a().assign("a", HOLDOUT, Duration::days(7), t(0));
        f.a().assign("b", "email", Duration::days(1), t(1));
        f.take();
        f.a().purchase("o1", 100, "EUR", t(2));
        assert_eq!(
            f.take(),
            vec![(HOLDOUT.into(), 0, 1, 100), ("email".into(), 0, 1, 100)]
        );
        for i in 0..2 * MAX_EXPOSURES {
            f.a().assign(
                &format!("c{i:02}"),
                "email",
                Duration::days(7),
                t(3 + i as i64),
            );
        }
        assert_eq!(f.exposures.len(), MAX_EXPOSURES);
        // Exposures past their refund period go.
        f.a()
            .purchase("o2", 100, "EUR", t(24 * (8 + REFUND_DAYS) + 100));
        assert!(f.exposures.is_empty());
    }

    #[test]
    fn an_exposure_is_kept_only_while_something_can_change_it() {
        let mut f = Fixture::new();
        f.a().assign("paid", "email", Duration::days(1), t(0));
        f.a().purchase("o1", 700, "EUR", t(2));
        f.a().assign("unpaid", "email", Duration::days(1), t(3));
        f.take();
        // The next event after the window: nothing can change the unpaid exposure any more.
        f.a().purchase("o2", 100, "EUR", t(30));
        assert_eq!(f.exposures.keys().collect::<Vec<_>>(), ["paid"]);
        // The paid one still takes a refund in its refund period, then goes.
        f.a().refund("o1", 700, "EUR");
        assert_eq!(f.take(), vec![("email".into(), 0, -1, -700)]);
        f.a().purchase("o3", 100, "EUR", t(40));
        assert!(f.exposures.is_empty(), "{:?}", f.exposures);
        assert_eq!(f.take(), vec![]);
    }
}
