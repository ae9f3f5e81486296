//! The pure fold of enriched events into a [`Profile`]: no I/O, no clock.
//!
//! Rules (see [`Profile::apply`]):
//! - **De-duplication is not done here**: the caller folds each event once (the enrich
//!   handler checks the stream watermark and the event-id claim first).
//! - **Order independence** for independent events: counters are sums, `created_at`/`last_seen`
//!   are min/max, the rolling windows are relative to the newest day seen, the heat average is
//!   decayed to its newest statement, and last-writer-wins traits (consent, email, name, time
//!   zone, UTM, device, poll answers: [`Stamped`]) compare `occurred_at` with a deterministic
//!   tie-break. Cart and attribution depend on order by nature (Kinesis keeps one profile's
//!   events in order).
//! - **Heat** is an exponentially time-decayed average: a statement made one half-life before
//!   the newest one weighs half as much.
//! - **Bounds**: every collection that grows with input is capped (see `profile.rs`), so a
//!   profile item stays small however long the customer's history.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use crate::attribution::Attribution;
use crate::daily::DayCounters;
use crate::enrich::{EnrichedEvent, Fact, LineItem};
use crate::event::{EventType, ANON_PREFIX};
use crate::profile::{
    Consent, DecayedValue, Profile, MAX_ANONYMOUS_IDS, MAX_ATTRIBUTED_CAMPAIGNS, MAX_CART_LINES,
    MAX_CURRENCIES, MAX_POLL_ANSWERS,
};
use crate::stamped::{self, Stamped};

/// Tunables of the fold.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldConfig {
    /// Half-life of the heat preference's exponential decay (default 30 days).
    pub heat_half_life: Duration,
    /// How long after an email click a purchase is attributed to its campaign (default 7 days).
    pub attribution_window: Duration,
}

impl Default for FoldConfig {
    fn default() -> Self {
        FoldConfig {
            heat_half_life: Duration::days(30),
            attribution_window: Duration::days(7),
        }
    }
}

impl FoldConfig {
    pub fn new(heat_half_life: Duration, attribution_window: Duration) -> Self {
        FoldConfig {
            heat_half_life,
            attribution_window,
        }
    }
}

/// `0.5^(age / half_life)`; a non-positive half-life keeps only the newest statements.
fn decay_factor(age: Duration, half_life: Duration) -> f64 {
    let hl = half_life.num_milliseconds();
    if hl <= 0 {
        return if age.num_milliseconds() > 0 { 0.0 } else { 1.0 };
    }
    // Milliseconds fit f64 exactly for any realistic span.
    0.5_f64.powf(age.num_milliseconds() as f64 / hl as f64)
}

impl DecayedValue {
    /// Adds `value` stated at `at` with weight 1, keeping everything decayed to the newest time.
    pub fn add(&mut self, value: f64, at: DateTime<Utc>, half_life: Duration) {
        self.merge(
            &DecayedValue {
                weighted_sum: value,
                weight: 1.0,
                as_of: Some(at),
            },
            half_life,
        );
    }

    /// Combines two decayed values, decaying both to the later `as_of`.
    pub fn merge(&mut self, other: &DecayedValue, half_life: Duration) {
        let (Some(mine), Some(theirs)) = (self.as_of, other.as_of) else {
            if self.as_of.is_none() {
                *self = other.clone();
            }
            return;
        };
        let as_of = mine.max(theirs);
        let a = decay_factor(as_of - mine, half_life);
        let b = decay_factor(as_of - theirs, half_life);
        self.weighted_sum = self.weighted_sum * a + other.weighted_sum * b;
        self.weight = self.weight * a + other.weight * b;
        self.as_of = Some(as_of);
    }

    /// The average, if any weight is left.
    pub fn value(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.weighted_sum / self.weight)
    }
}

/// Inserts into a bounded map: a new key beyond `max` evicts the entry `evict` picks (never
/// the new key).
fn insert_bounded<'m, V>(
    map: &'m mut BTreeMap<String, V>,
    key: &str,
    max: usize,
    evict: impl Fn(&BTreeMap<String, V>, &str) -> Option<String>,
) -> &'m mut V
where
    V: Default,
{
    if !map.contains_key(key) {
        while map.len() >= max.max(1) {
            match evict(map, key) {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
    }
    map.entry(key.to_owned()).or_default()
}

/// The key (other than `keep`) whose value is smallest by `f`.
fn smallest_by<V, K: Ord>(
    map: &BTreeMap<String, V>,
    keep: &str,
    f: impl Fn(&V) -> K,
) -> Option<String> {
    map.iter()
        .filter(|(k, _)| k.as_str() != keep)
        .min_by_key(|(_, v)| f(v))
        .map(|(k, _)| k.clone())
}

impl Profile {
    /// Folds one event into the profile. Pure: no I/O, no clock, no de-duplication (the caller
    /// folds each event once); `self.version` is untouched (the store bumps it).
    pub fn apply(&mut self, event: &EnrichedEvent, config: &FoldConfig) {
        let at = event.header.occurred_at;
        let kind = event.header.event_type;
        if kind == EventType::CampaignAssigned {
            // Ember's own record of a send, not something the customer did: it must not
            // make them look active (`last_seen`, counts, daily windows), or a win-back
            // email would take its recipient out of `churn_risk`.
            self.apply_fact(&event.fact, at, config);
            return;
        }
        match self.counts.get_mut(kind.as_str()) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(kind.as_str().to_owned(), 1);
            }
        }
        self.created_at = Some(self.created_at.map_or(at, |c| c.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |s| s.max(at)));

        let mut day = DayCounters {
            events: 1,
            ..Default::default()
        };
        match kind {
            EventType::PageView => day.page_views = 1,
            EventType::ProductView => day.product_views = 1,
            _ => {}
        }
        if let Fact::Purchase { total_minor, .. } = &event.fact {
            day.purchases = 1;
            day.revenue_minor = *total_minor;
        }
        self.daily.add(at.date_naive(), &day);

        if !event.utm.is_empty() {
            let utm: BTreeMap<String, String> = event
                .utm
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            stamped::offer(&mut self.utm, &utm, at, || utm.clone());
        }
        if let Some(device) = event.device {
            let device = device.as_str().to_owned();
            stamped::offer(&mut self.device, &device, at, || device.clone());
        }

        self.apply_fact(&event.fact, at, config);
    }

    fn apply_fact(&mut self, fact: &Fact, at: DateTime<Utc>, config: &FoldConfig) {
        self.attribution().prune(at);
        match fact {
            Fact::PageView { .. } | Fact::ProductView { .. } | Fact::EmailOpened { .. } => {}
            Fact::AddToCart { item, currency } => {
                let entry = insert_bounded(
                    &mut self.cart.items,
                    &item.sku,
                    MAX_CART_LINES,
                    |m, keep| m.keys().find(|k| k.as_str() != keep).cloned(),
                );
                entry.quantity = entry.quantity.saturating_add(item.quantity);
                set(&mut entry.name, &item.name);
                entry.unit_price_minor = item.unit_price_minor;
                if let Some(url) = &item.url {
                    set(entry.url.get_or_insert_default(), url);
                }
                set(self.cart.currency.get_or_insert_default(), currency);
                self.touch_cart(at);
            }
            Fact::RemoveFromCart { sku, quantity } => {
                let Some(line) = self.cart.items.get_mut(&**sku) else {
                    return;
                };
                match quantity {
                    Some(q) if *q < line.quantity => line.quantity -= q,
                    _ => {
                        self.cart.items.remove(&**sku);
                    }
                }
                if self.cart.items.is_empty() {
                    self.cart.currency = None;
                }
                self.touch_cart(at);
            }
            Fact::CheckoutStarted { .. } => {
                self.last_checkout_at = Some(self.last_checkout_at.map_or(at, |c| c.max(at)));
            }
            Fact::Purchase {
                order_id,
                total_minor,
                currency,
                items,
            } => {
                self.record_purchase(at, *total_minor, currency);
                self.attribute_purchase(at, *total_minor, config);
                self.attribution()
                    .purchase(order_id, *total_minor, currency, at);
                self.clear_purchased(at, items);
            }
            Fact::Refund {
                order_id,
                amount_minor,
                currency,
            } => {
                // Revenue net of refunds: `big_spender` and the totals are not overstated.
                if let Some(total) = self.purchase_totals_minor.get_mut(&**currency) {
                    *total = (*total - amount_minor).max(0);
                }
                self.attribution().refund(order_id, *amount_minor, currency);
            }
            Fact::CampaignAssigned {
                campaign,
                group,
                attribution_hours,
            } => {
                let window = Duration::hours(i64::from(*attribution_hours));
                self.attribution().assign(campaign, group, window, at);
            }
            Fact::EmailClicked { campaign, .. } => {
                let status = &mut self.email_status;
                let newer = match (
                    status.last_clicked_at,
                    status.last_clicked_campaign.as_deref(),
                ) {
                    (Some(t), Some(c)) => at > t || (at == t && &**campaign > c),
                    _ => true,
                };
                if newer {
                    status.last_clicked_at = Some(at);
                    status.last_clicked_campaign = Some(campaign.to_string());
                }
            }
            Fact::HeatPreference { shu, .. } => {
                self.heat.get_or_insert_with(DecayedValue::default).add(
                    f64::from(*shu),
                    at,
                    config.heat_half_life,
                );
            }
            Fact::PollAnswer {
                question_id,
                answer,
                ..
            } => {
                let answer = answer.to_string();
                self.offer_poll_answer(question_id, Stamped::new(answer, at));
            }
            Fact::ConsentChanged { channel, granted } => {
                self.set_consent(
                    channel.as_str(),
                    &Consent {
                        granted: *granted,
                        at: Some(at),
                    },
                );
            }
            Fact::Identify { anonymous_id, .. } => {
                self.link_anonymous_id(anonymous_id);
            }
            Fact::ProfileUpdated {
                email,
                name,
                timezone,
            } => {
                for (slot, value) in [
                    (&mut self.email, email),
                    (&mut self.name, name),
                    (&mut self.timezone, timezone),
                ] {
                    if let Some(v) = value {
                        let v = v.to_string();
                        stamped::offer(slot, &v, at, || v.clone());
                    }
                }
            }
            Fact::EmailSuppressed { reason, .. } => {
                self.suppress(reason.as_str(), at);
            }
        }
    }

    /// Adds an anonymous id (bounded: beyond [`MAX_ANONYMOUS_IDS`] the smallest other id goes).
    pub fn link_anonymous_id(&mut self, anonymous_id: &str) {
        if self.anonymous_ids.insert(anonymous_id.to_owned()) {
            while self.anonymous_ids.len() > MAX_ANONYMOUS_IDS {
                let drop = self
                    .anonymous_ids
                    .iter()
                    .find(|a| a.as_str() != anonymous_id)
                    .cloned();
                match drop {
                    Some(a) => self.anonymous_ids.remove(&a),
                    None => break,
                };
            }
        }
    }

    /// A poll answer, last writer wins per question; a new question beyond
    /// [`MAX_POLL_ANSWERS`] drops the answer given longest ago.
    fn offer_poll_answer(&mut self, question: &str, answer: Stamped<String>) {
        if let Some(current) = self.poll_answers.get_mut(question) {
            if current.yields_to(&answer.value, answer.at) {
                *current = answer;
            }
            return;
        }
        while self.poll_answers.len() >= MAX_POLL_ANSWERS {
            let Some(oldest) = smallest_by(&self.poll_answers, question, |s| s.at) else {
                break;
            };
            self.poll_answers.remove(&oldest);
        }
        self.poll_answers.insert(question.to_owned(), answer);
    }

    fn attribution(&mut self) -> Attribution<'_> {
        Attribution {
            exposures: &mut self.campaigns,
            tallies: &mut self.tallies,
        }
    }

    /// A purchase within the attribution window after the last click counts for its campaign.
    fn attribute_purchase(&mut self, at: DateTime<Utc>, total_minor: i64, config: &FoldConfig) {
        let status = &mut self.email_status;
        let (Some(campaign), Some(clicked)) =
            (&status.last_clicked_campaign, status.last_clicked_at)
        else {
            return;
        };
        if clicked > at || at - clicked > config.attribution_window {
            return;
        }
        let campaign = campaign.clone();
        *insert_bounded(
            &mut status.attributed_purchases,
            &campaign,
            MAX_ATTRIBUTED_CAMPAIGNS,
            |m, keep| smallest_by(m, keep, |n| *n),
        ) += 1;
        let revenue = insert_bounded(
            &mut status.attributed_revenue_minor,
            &campaign,
            MAX_ATTRIBUTED_CAMPAIGNS,
            |m, keep| smallest_by(m, keep, |n| *n),
        );
        *revenue = revenue.saturating_add(total_minor);
    }

    /// Consent is last-writer-wins by time; on equal times a withdrawal wins.
    fn set_consent(&mut self, channel: &str, new: &Consent) {
        let replace = match self.consent.get(channel) {
            None => true,
            Some(old) => match (old.at, new.at) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(o), Some(n)) => n > o || (n == o && !new.granted),
            },
        };
        if replace {
            self.consent.insert(channel.to_owned(), new.clone());
        }
    }

    /// Suppression is sticky; the earliest one (by time, then reason) is kept.
    fn suppress(&mut self, reason: &str, at: DateTime<Utc>) {
        let status = &mut self.email_status;
        let replace = match (&status.suppressed, status.suppressed_at) {
            (Some(r), Some(t)) => at < t || (at == t && reason < r.as_str()),
            _ => true,
        };
        if replace {
            status.suppressed = Some(reason.to_owned());
            status.suppressed_at = Some(at);
        }
    }

    fn touch_cart(&mut self, at: DateTime<Utc>) {
        self.cart.updated_at = Some(self.cart.updated_at.map_or(at, |u| u.max(at)));
    }

    fn record_purchase(&mut self, at: DateTime<Utc>, total_minor: i64, currency: &str) {
        self.purchase_count += 1;
        let latest = match (self.last_purchase_at, self.currency.as_deref()) {
            (Some(t), Some(c)) => at > t || (at == t && currency > c),
            _ => true,
        };
        if latest {
            self.currency = Some(currency.to_owned());
        }
        self.add_purchase_total(currency, total_minor);
        self.last_purchase_at = Some(self.last_purchase_at.map_or(at, |t| t.max(at)));
    }

    /// Adds to a currency's purchase total; a new currency beyond [`MAX_CURRENCIES`] drops
    /// the smallest total other than the latest purchase's currency.
    fn add_purchase_total(&mut self, currency: &str, amount_minor: i64) {
        let keep = self.currency.clone().unwrap_or_default();
        let total = insert_bounded(
            &mut self.purchase_totals_minor,
            currency,
            MAX_CURRENCIES,
            |m, new| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != new && **k != keep)
                    .min_by_key(|(_, v)| **v)
                    .map(|(k, _)| k.clone())
            },
        );
        *total = total.saturating_add(amount_minor);
    }

    /// A purchase empties the cart, unless the cart changed after the purchase happened; then
    /// only the purchased lines are removed.
    fn clear_purchased(&mut self, at: DateTime<Utc>, items: &[LineItem]) {
        if self.cart.items.is_empty() {
            return;
        }
        if self.cart.updated_at.is_none_or(|u| u <= at) {
            self.cart.items.clear();
        } else {
            for item in items {
                self.cart.items.remove(&*item.sku);
            }
        }
        if self.cart.items.is_empty() {
            self.cart.currency = None;
        }
        self.touch_cart(at);
    }

    fn sum_days(&self, days: u32, now: DateTime<Utc>, pick: impl Fn(&DayCounters) -> i64) -> i64 {
        self.daily.sum(days, now.date_naive(), pick)
    }

    /// Events on the last `days` calendar days (UTC) up to and including `now`'s day.
    /// Windows are limited to [`crate::daily::WINDOW_DAYS`].
    pub fn events_in_last(&self, days: u32, now: DateTime<Utc>) -> u64 {
        self.sum_days(days, now, |c| i64::try_from(c.events).unwrap_or(i64::MAX))
            .unsigned_abs()
    }

    pub fn purchases_in_last(&self, days: u32, now: DateTime<Utc>) -> u64 {
        self.sum_days(days, now, |c| {
            i64::try_from(c.purchases).unwrap_or(i64::MAX)
        })
        .unsigned_abs()
    }

    pub fn page_views_in_last(&self, days: u32, now: DateTime<Utc>) -> u64 {
        self.sum_days(days, now, |c| {
            i64::try_from(c.page_views).unwrap_or(i64::MAX)
        })
        .unsigned_abs()
    }

    pub fn product_views_in_last(&self, days: u32, now: DateTime<Utc>) -> u64 {
        self.sum_days(days, now, |c| {
            i64::try_from(c.product_views).unwrap_or(i64::MAX)
        })
        .unsigned_abs()
    }

    /// Purchase revenue (minor units, all currencies summed) on the last `days` days.
    pub fn revenue_in_last(&self, days: u32, now: DateTime<Utc>) -> i64 {
        self.sum_days(days, now, |c| c.revenue_minor)
    }

    /// Number of items (sum of quantities) in the cart.
    pub fn cart_item_count(&self) -> u64 {
        self.cart
            .items
            .values()
            .map(|i| u64::from(i.quantity))
            .sum()
    }

    /// Folds an anonymous visitor's profile into this (user) profile, e.g. after `identify`.
    /// Not idempotent by itself: the enrich handler merges an anonymous profile once (it marks
    /// the anonymous profile with the identify event that merged it).
    pub fn merge_anonymous(&mut self, anon: &Profile, config: &FoldConfig) {
        if anon.id == self.id {
            return;
        }
        let raw = anon.id.strip_prefix(ANON_PREFIX).unwrap_or(&anon.id);
        self.link_anonymous_id(raw);
        for a in &anon.anonymous_ids {
            self.link_anonymous_id(a);
        }

        for (k, n) in &anon.counts {
            *self.counts.entry(k.clone()).or_default() += n;
        }
        self.created_at = min_opt(self.created_at, anon.created_at);
        self.last_seen = max_opt(self.last_seen, anon.last_seen);
        self.daily.merge(&anon.daily);

        self.purchase_count += anon.purchase_count;
        for (c, t) in &anon.purchase_totals_minor {
            self.add_purchase_total(c, *t);
        }
        if anon.last_purchase_at > self.last_purchase_at && anon.currency.is_some() {
            self.currency.clone_from(&anon.currency);
        }
        self.last_purchase_at = max_opt(self.last_purchase_at, anon.last_purchase_at);
        self.last_checkout_at = max_opt(self.last_checkout_at, anon.last_checkout_at);

        if let Some(h) = &anon.heat {
            self.heat
                .get_or_insert_with(DecayedValue::default)
                .merge(h, config.heat_half_life);
        }

        for (sku, item) in &anon.cart.items {
            // The same product in both carts is one intention, not two.
            let entry = insert_bounded(&mut self.cart.items, sku, MAX_CART_LINES, |m, keep| {
                m.keys().find(|k| k.as_str() != keep).cloned()
            });
            if item.quantity > entry.quantity {
                *entry = item.clone();
            }
        }
        if self.cart.currency.is_none() {
            self.cart.currency.clone_from(&anon.cart.currency);
        }
        if !anon.cart.items.is_empty() {
            self.cart.updated_at = max_opt(self.cart.updated_at, anon.cart.updated_at);
        }

        for (channel, consent) in &anon.consent {
            self.set_consent(channel, consent);
        }
        stamped::merge(&mut self.email, &anon.email);
        stamped::merge(&mut self.name, &anon.name);
        stamped::merge(&mut self.timezone, &anon.timezone);
        stamped::merge(&mut self.device, &anon.device);
        stamped::merge(&mut self.utm, &anon.utm);
        for (question, answer) in &anon.poll_answers {
            self.offer_poll_answer(question, answer.clone());
        }

        let clicked = &anon.email_status;
        if clicked.last_clicked_at > self.email_status.last_clicked_at {
            self.email_status.last_clicked_at = clicked.last_clicked_at;
            self.email_status
                .last_clicked_campaign
                .clone_from(&clicked.last_clicked_campaign);
        }
        let status = &mut self.email_status;
        for (c, n) in &clicked.attributed_purchases {
            *insert_bounded(
                &mut status.attributed_purchases,
                c,
                MAX_ATTRIBUTED_CAMPAIGNS,
                |m, keep| smallest_by(m, keep, |n| *n),
            ) += n;
        }
        for (c, r) in &clicked.attributed_revenue_minor {
            let total = insert_bounded(
                &mut status.attributed_revenue_minor,
                c,
                MAX_ATTRIBUTED_CAMPAIGNS,
                |m, keep| smallest_by(m, keep, |n| *n),
            );
            *total = total.saturating_add(*r);
        }
        if let (Some(reason), Some(at)) = (&clicked.suppressed, clicked.suppressed_at) {
            self.suppress(reason, at);
        }
    }
}

/// Overwrites `target` with `value`, reusing its buffer.
fn set(target: &mut String, value: &str) {
    if target != value {
        target.clear();
        target.push_str(value);
    }
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::consent::{Channel, SuppressionReason};
    use crate::profile::{MAX_ANONYMOUS_IDS, MAX_CART_LINES, MAX_CURRENCIES, MAX_POLL_ANSWERS};

    fn t(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
            + Duration::days(i64::from(day) - 1)
            + Duration::hours(i64::from(hour))
    }

    fn ev<'a>(id: &'a str, at: DateTime<Utc>, fact: Fact<'a>) -> EnrichedEvent<'a> {
        EnrichedEvent::of_user(id, "u-1", at, "test", fact)
    }

    fn add(sku: &str, qty: u32, price: i64) -> Fact<'_> {
        Fact::AddToCart {
            item: LineItem {
                sku: sku.into(),
                name: format!("Sauce {sku}").into(),
                quantity: qty,
                unit_price_minor: price,
                url: None,
            },
            currency: "EUR".into(),
        }
    }

    fn purchase(total: i64) -> Fact<'static> {
        Fact::Purchase {
            order_id: "o".into(),
            total_minor: total,
            currency: "EUR".into(),
            items: vec![],
        }
    }

    fn heat(shu: u32) -> Fact<'static> {
        Fact::HeatPreference {
            shu,
            stated: shu.to_string().into(),
            source: None,
        }
    }

    fn cfg() -> FoldConfig {
        FoldConfig::default()
    }

    #[test]
    fn cart_add_remove_and_purchase() {
        let mut p = Profile::new("u-1");
        p.apply(&ev("1", t(1, 0), add("A", 2, 500)), &cfg());
        p.apply(&ev("2", t(1, 1), add("A", 1, 500)), &cfg());
        p.apply(&ev("3", t(1, 2), add("B", 1, 1200)), &cfg());
        assert_eq!(p.cart.items["A"].quantity, 3);
        assert_eq!(p.cart_item_count(), 4);
        assert_eq!(p.cart_value_minor(), 2700);
        assert_eq!(p.cart.updated_at, Some(t(1, 2)));
        assert_eq!(p.cart.currency.as_deref(), Some("EUR"));

        // Unknown SKU: no-op on the cart (the event is still counted).
        p.apply(
            &ev(
                "4",
                t(1, 3),
                Fact::RemoveFromCart {
                    sku: "Z".into(),
                    quantity: None,
                },
            ),
            &cfg(),
        );
        assert_eq!(p.cart.updated_at, Some(t(1, 2)));
        assert_eq!(p.cart_item_count(), 4);

        p.apply(
            &ev(
                "5",
                t(1, 4),
                Fact::RemoveFromCart {
                    sku: "A".into(),
                    quantity: Some(2),
                },
            ),
            &cfg(),
        );
        assert_eq!(p.cart.items["A"].quantity, 1);
        p.apply(
            &ev(
                "6",
                t(1, 5),
                Fact::RemoveFromCart {
                    sku: "A".into(),
                    quantity: Some(1),
                },
            ),
            &cfg(),
        );
        assert!(
            !p.cart.items.contains_key("A"),
            "quantity 0 removes the line"
        );
        p.apply(
            &ev(
                "7",
                t(1, 6),
                Fact::RemoveFromCart {
                    sku: "B".into(),
                    quantity: None,
                },
            ),
            &cfg(),
        );
        assert!(p.cart.items.is_empty());
        assert_eq!(p.cart.currency, None);

        p.apply(&ev("8", t(1, 7), add("C", 1, 900)), &cfg());
        p.apply(&ev("9", t(1, 8), purchase(900)), &cfg());
        assert!(p.cart.items.is_empty(), "purchase clears the cart");
        assert_eq!(p.cart.updated_at, Some(t(1, 8)));
        assert_eq!(p.counts["remove_from_cart"], 4);
    }

    #[test]
    fn a_late_purchase_only_removes_its_own_lines_from_a_newer_cart() {
        let mut p = Profile::new("u-1");
        p.apply(&ev("1", t(2, 0), add("A", 1, 500)), &cfg());
        p.apply(&ev("2", t(2, 1), add("B", 1, 500)), &cfg());
        let items = vec![LineItem {
            sku: "A".into(),
            name: "A".into(),
            quantity: 1,
            unit_price_minor: 500,
            url: None,
        }];
        let late = Fact::Purchase {
            order_id: "o".into(),
            total_minor: 500,
            currency: "EUR".into(),
            items,
        };
        p.apply(&ev("3", t(1, 0), late), &cfg());
        assert_eq!(p.cart.items.keys().collect::<Vec<_>>(), vec!["B"]);
    }

    #[test]
    fn purchases_accumulate() {
        let mut p = Profile::new("u-1");
        p.apply(&ev("1", t(3, 0), purchase(1000)), &cfg());
        p.apply(&ev("2", t(1, 0), purchase(250)), &cfg());
        p.apply(
            &ev(
                "3",
                t(2, 0),
                Fact::CheckoutStarted {
                    checkout_id: None,
                    total_minor: None,
                    currency: None,
                },
            ),
            &cfg(),
        );
        assert_eq!(p.purchase_count, 2);
        assert_eq!(p.purchase_total_minor(), 1250);
        assert_eq!(p.currency.as_deref(), Some("EUR"));
        assert_eq!(p.last_purchase_at, Some(t(3, 0)));
        assert_eq!(p.last_checkout_at, Some(t(2, 0)));
        assert_eq!(p.created_at, Some(t(1, 0)));
        assert_eq!(p.last_seen, Some(t(3, 0)));
        assert_eq!(p.purchases_in_last(7, t(3, 12)), 2);
        assert_eq!(p.purchases_in_last(1, t(3, 12)), 1);
        assert_eq!(p.revenue_in_last(30, t(3, 12)), 1250);
    }

    #[test]
    fn heat_decays_with_the_half_life() {
        let mut p = Profile::new("u-1");
        p.apply(&ev("1", t(1, 0), heat(100_000)), &cfg());
        p.apply(&ev("2", t(31, 0), heat(10_000)), &cfg());
        // The statement 30 days older weighs half: (0.5 * 100k + 10k) / 1.5 = 40k.
        let shu = p.heat_shu().unwrap();
        assert!((shu - 40_000.0).abs() < 1e-6, "{shu}");

        let mut q = Profile::new("u-1");
        q.apply(&ev("2", t(31, 0), heat(10_000)), &cfg());
        q.apply(&ev("1", t(1, 0), heat(100_000)), &cfg());
        assert!((q.heat_shu().unwrap() - 40_000.0).abs() < 1e-6);
        assert_eq!(q.heat.as_ref().unwrap().as_of, Some(t(31, 0)));
    }

    #[test]
    fn heat_half_life_is_configurable() {
        let config = FoldConfig::new(Duration::days(1), Duration::days(7));
        let mut p = Profile::new("u-1");
        p.apply(&ev("1", t(1, 0), heat(90_000)), &config);
        p.apply(&ev("2", t(3, 0), heat(0)), &config);
        // Two half-lives: weight 1/4 -> 90k * 0.25 / 1.25 = 18k.
        assert!((p.heat_shu().unwrap() - 18_000.0).abs() < 1e-6);
    }

    #[test]
    fn daily_buckets_keep_thirty_days_relative_to_the_newest_event() {
        let mut p = Profile::new("u-1");
        let pv = || Fact::PageView {
            url: None,
            title: None,
        };
        let days = |p: &Profile| {
            p.daily
                .days()
                .map(|(d, _)| d.to_string())
                .collect::<Vec<_>>()
        };
        p.apply(&ev("1", t(1, 0), pv()), &cfg());
        p.apply(&ev("2", t(30, 0), pv()), &cfg());
        assert_eq!(days(&p).len(), 2);
        p.apply(&ev("3", t(31, 0), pv()), &cfg());
        assert_eq!(days(&p), vec!["2026-12-01", "2026-11-30"]);
        // An old event arriving late does not resurrect a pruned day.
        p.apply(&ev("4", t(1, 5), pv()), &cfg());
        assert_eq!(days(&p).len(), 2);
        assert_eq!(p.counts["page_view"], 4);
        assert_eq!(p.page_views_in_last(7, t(31, 23)), 2);
        assert_eq!(p.page_views_in_last(1, t(31, 23)), 1);
        assert_eq!(p.events_in_last(30, t(60, 0)), 1);
        assert_eq!(p.events_in_last(30, t(61, 0)), 0);
        assert_eq!(p.events_in_last(0, t(31, 0)), 0);
    }

    #[test]
    fn consent_is_last_writer_wins_and_withdrawal_wins_ties() {
        let mut p = Profile::new("u-1");
        let c = |g| Fact::ConsentChanged {
            channel: Channel::Email,
            granted: g,
        };
        p.apply(&ev("1", t(2, 0), c(true)), &cfg());
        p.apply(&ev("2", t(1, 0), c(false)), &cfg());
        assert!(p.has_consent("email"), "older withdrawal loses");
        p.apply(&ev("3", t(2, 0), c(false)), &cfg());
        assert!(!p.has_consent("email"), "withdrawal wins a tie");
        p.apply(&ev("4", t(2, 0), c(true)), &cfg());
        assert!(!p.has_consent("email"));
    }

    #[test]
    fn profile_attributes_are_last_writer_wins_per_field() {
        let mut p = Profile::new("u-1");
        let upd = |e: Option<&'static str>, n: Option<&'static str>| Fact::ProfileUpdated {
            email: e.map(Into::into),
            name: n.map(Into::into),
            timezone: None,
        };
        p.apply(
            &ev("1", t(2, 0), upd(Some("new@example.com"), None)),
            &cfg(),
        );
        p.apply(
            &ev("2", t(1, 0), upd(Some("old@example.com"), Some("Ana"))),
            &cfg(),
        );
        assert_eq!(p.email(), Some("new@example.com"));
        assert_eq!(p.name(), Some("Ana"));
    }

    #[test]
    fn clicks_attribute_purchases_within_the_window() {
        let mut p = Profile::new("u-1");
        let click = Fact::EmailClicked {
            campaign: "cart_abandoner".into(),
            message_id: "m".into(),
            link: None,
        };
        p.apply(&ev("1", t(1, 0), click), &cfg());
        assert_eq!(
            p.email_status.last_clicked_campaign.as_deref(),
            Some("cart_abandoner")
        );
        p.apply(&ev("2", t(3, 0), purchase(2000)), &cfg());
        p.apply(&ev("3", t(9, 0), purchase(500)), &cfg());
        assert_eq!(p.email_status.attributed_purchases["cart_abandoner"], 1);
        assert_eq!(
            p.email_status.attributed_revenue_minor["cart_abandoner"],
            2000
        );
    }

    #[test]
    fn a_campaign_assignment_opens_a_window_without_making_the_customer_look_active() {
        let mut p = Profile::new("u-1");
        p.apply(&ev("1", t(1, 0), purchase(2000)), &cfg());
        let seen = (p.last_seen, p.counts.clone(), p.daily.clone());
        let assigned = Fact::CampaignAssigned {
            campaign: "churn_winback".into(),
            group: "email".into(),
            attribution_hours: 72,
        };
        p.apply(&ev("2", t(40, 0), assigned), &cfg());
        assert_eq!((p.last_seen, p.counts.clone(), p.daily.clone()), seen);
        assert_eq!(p.campaigns["churn_winback"].group, "email");
        assert_eq!(p.tallies.len(), 1);
        // A purchase in the window counts for it; a refund of it takes it back, and comes
        // off the purchase totals.
        p.apply(&ev("3", t(41, 0), purchase(1500)), &cfg());
        assert!(p.campaigns["churn_winback"].converted);
        let refund = Fact::Refund {
            order_id: "o".into(),
            amount_minor: 1500,
            currency: "EUR".into(),
        };
        p.apply(&ev("4", t(42, 0), refund), &cfg());
        assert!(!p.campaigns["churn_winback"].converted);
        assert_eq!(p.purchase_totals_minor["EUR"], 2000);
    }

    #[test]
    fn suppression_is_sticky() {
        let mut p = Profile::new("u-1");
        p.apply(
            &ev(
                "1",
                t(2, 0),
                Fact::EmailSuppressed {
                    reason: SuppressionReason::Complaint,
                    message_id: None,
                },
            ),
            &cfg(),
        );
        p.apply(
            &ev(
                "2",
                t(3, 0),
                Fact::EmailSuppressed {
                    reason: SuppressionReason::HardBounce,
                    message_id: None,
                },
            ),
            &cfg(),
        );
        assert_eq!(p.email_status.suppressed.as_deref(), Some("complaint"));
        assert_eq!(p.email_status.suppressed_at, Some(t(2, 0)));
    }

    #[test]
    fn identify_poll_utm_and_device() {
        let mut p = Profile::new("u-1");
        p.apply(
            &ev(
                "1",
                t(1, 0),
                Fact::Identify {
                    user_id: "u-1".into(),
                    anonymous_id: "a-1".into(),
                },
            ),
            &cfg(),
        );
        assert!(p.anonymous_ids.contains("a-1"));
        let answer = |a: &'static str| Fact::PollAnswer {
            poll_id: None,
            question_id: "fav".into(),
            answer: a.into(),
        };
        p.apply(&ev("2", t(2, 0), answer("smoky")), &cfg());
        p.apply(&ev("3", t(1, 0), answer("fruity")), &cfg());
        assert_eq!(p.poll_answer("fav"), Some("smoky"));
        let mut e = ev(
            "4",
            t(3, 0),
            Fact::PageView {
                url: None,
                title: None,
            },
        );
        e.utm.insert("utm_source".into(), "news".into());
        e.device = Some(crate::enrich::DeviceClass::Mobile);
        p.apply(&e, &cfg());
        let mut older = ev(
            "5",
            t(2, 0),
            Fact::PageView {
                url: None,
                title: None,
            },
        );
        older.utm.insert("utm_source".into(), "ads".into());
        older.device = Some(crate::enrich::DeviceClass::Desktop);
        p.apply(&older, &cfg());
        assert_eq!(p.utm()["utm_source"], "news", "last touch by time");
        assert_eq!(p.device(), Some("mobile"));
    }

    #[test]
    fn merge_folds_an_anonymous_profile_in_once() {
        let mut anon = Profile::new("anon:a-1");
        anon.apply(&ev("1", t(1, 0), add("A", 1, 500)), &cfg());
        anon.apply(&ev("2", t(1, 1), heat(50_000)), &cfg());
        anon.apply(
            &ev(
                "3",
                t(1, 2),
                Fact::ConsentChanged {
                    channel: Channel::Email,
                    granted: true,
                },
            ),
            &cfg(),
        );
        anon.apply(
            &ev(
                "4",
                t(1, 3),
                Fact::PageView {
                    url: None,
                    title: None,
                },
            ),
            &cfg(),
        );

        let mut user = Profile::new("u-1");
        user.apply(
            &ev(
                "5",
                t(2, 0),
                Fact::PageView {
                    url: None,
                    title: None,
                },
            ),
            &cfg(),
        );
        user.apply(&ev("6", t(2, 1), heat(50_000)), &cfg());
        user.merge_anonymous(&anon, &cfg());

        assert!(user.anonymous_ids.contains("a-1"));
        assert_eq!(user.counts["page_view"], 2);
        assert_eq!(user.counts["add_to_cart"], 1);
        assert_eq!(user.cart.items["A"].quantity, 1);
        assert_eq!(user.cart.updated_at, Some(t(1, 0)));
        assert!(user.has_consent("email"));
        assert_eq!(user.created_at, Some(t(1, 0)));
        assert_eq!(user.last_seen, Some(t(2, 1)));
        assert_eq!(user.events_in_last(30, t(2, 2)), 6);
        assert!((user.heat_shu().unwrap() - 50_000.0).abs() < 1e-6);
    }

    #[test]
    fn collections_that_grow_with_input_are_bounded() {
        let mut p = Profile::new("u-1");
        for i in 0..(MAX_CART_LINES + 5) {
            p.apply(&ev("c", t(1, 0), add(&format!("S{i:03}"), 1, 100)), &cfg());
        }
        assert_eq!(p.cart.items.len(), MAX_CART_LINES);
        assert!(
            p.cart
                .items
                .contains_key(&format!("S{:03}", MAX_CART_LINES + 4)),
            "the newest line stays"
        );
        for i in 0..(MAX_POLL_ANSWERS + 3) {
            let q = format!("q{i}");
            let fact = Fact::PollAnswer {
                poll_id: None,
                question_id: q.as_str().into(),
                answer: "x".into(),
            };
            p.apply(
                &ev("p", t(1, 0) + Duration::minutes(i as i64), fact),
                &cfg(),
            );
        }
        assert_eq!(p.poll_answers.len(), MAX_POLL_ANSWERS);
        assert!(p.poll_answer("q0").is_none(), "the oldest answer goes");
        for i in 0..(MAX_ANONYMOUS_IDS + 4) {
            let a = format!("a-{i:02}");
            let fact = Fact::Identify {
                user_id: "u-1".into(),
                anonymous_id: a.as_str().into(),
            };
            p.apply(&ev("i", t(1, 0), fact), &cfg());
        }
        assert_eq!(p.anonymous_ids.len(), MAX_ANONYMOUS_IDS);
        for (i, c) in ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG"]
            .iter()
            .enumerate()
        {
            let fact = Fact::Purchase {
                order_id: "o".into(),
                total_minor: 100,
                currency: (*c).into(),
                items: vec![],
            };
            p.apply(
                &ev("b", t(2, 0) + Duration::minutes(i as i64), fact),
                &cfg(),
            );
        }
        assert_eq!(p.purchase_totals_minor.len(), MAX_CURRENCIES);
        assert_eq!(p.currency.as_deref(), Some("GGG"));
        assert_eq!(p.purchase_total_minor(), 100);
    }
}
