//! The pure fold of enriched events into a [`Profile`]: no I/O, no clock.
//!
//! Rules (see [`Profile::apply`]):
//! - **De-duplication**: an event id seen among the last [`RECENT_EVENT_IDS`] ids is a
//!   [`Applied::Duplicate`] and changes nothing.
//! - **Order independence** for independent events: counters are sums, `created_at`/`last_seen`
//!   are min/max, daily buckets are pruned relative to the newest event ever seen, the heat
//!   average is decayed to its newest statement, and last-writer-wins traits (consent, email,
//!   name, time zone, UTM, device, poll answers) compare `occurred_at` with a deterministic
//!   tie-break. Cart and attribution depend on order by nature (Kinesis keeps one profile's
//!   events in order).
//! - **Heat** is an exponentially time-decayed average: a statement made one half-life before
//!   the newest one weighs half as much.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use crate::digits;
use crate::enrich::{EnrichedEvent, Fact, LineItem, Utm};
use crate::event::{EventType, ANON_PREFIX};
use crate::profile::{Consent, DayCounters, DecayedValue, Profile, RECENT_EVENT_IDS};

/// Days of daily buckets kept (relative to the newest event seen).
pub const DAILY_WINDOW_DAYS: i64 = 30;

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

/// What [`Profile::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event id was processed before; nothing changed.
    Duplicate,
    /// The event was folded in (its id remembered, counters and traits updated).
    Changed,
}

/// `YYYY-MM-DD` (UTC) of a timestamp: the key of [`Profile::daily`].
pub fn day_key(at: DateTime<Utc>) -> String {
    let mut buf = [0u8; 10];
    match day_key_into(at, &mut buf) {
        Some(key) => key.to_owned(),
        None => at.format("%Y-%m-%d").to_string(),
    }
}

/// [`day_key`] written into `buf` with integer code, for years 0..=9999 (else `None`): the
/// fold looks a day up once per event without allocating its key.
fn day_key_into(at: DateTime<Utc>, buf: &mut [u8; 10]) -> Option<&str> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let put = |out: &mut [u8], mut n: u32| {
        for d in out.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(&mut buf[0..4], year);
    buf[4] = b'-';
    put(&mut buf[5..7], at.month());
    buf[7] = b'-';
    put(&mut buf[8..10], at.day());
    std::str::from_utf8(buf).ok()
}

/// Reads a [`day_key`]; anything else is `None`.
fn parse_day(key: &str) -> Option<NaiveDate> {
    let b = key.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |from: usize, to: usize| digits::number(&b[from..to]);
    NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)
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

impl DayCounters {
    fn add(&mut self, other: &DayCounters) {
        self.events += other.events;
        self.page_views += other.page_views;
        self.product_views += other.product_views;
        self.purchases += other.purchases;
        self.revenue_minor = self.revenue_minor.saturating_add(other.revenue_minor);
    }
}

impl Profile {
    /// Folds one event into the profile. Pure: no I/O, no clock; `self.version` is untouched
    /// (the store bumps it).
    pub fn apply(&mut self, event: &EnrichedEvent, config: &FoldConfig) -> Applied {
        if !self
            .recent_event_ids
            .push(&event.header.event_id, RECENT_EVENT_IDS)
        {
            return Applied::Duplicate;
        }

        let at = event.header.occurred_at;
        let kind = event.header.event_type;
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
        self.add_day(at, &day);

        if !event.utm.is_empty()
            && lww_by(&mut self.trait_times, "utm", at, || {
                format!("{:?}", event.utm) > format!("{:?}", self.utm)
            })
            && !same_utm(&self.utm, &event.utm)
        {
            self.utm = event
                .utm
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        if let Some(device) = event.device {
            if lww(
                &mut self.trait_times,
                "device",
                at,
                device.as_str(),
                self.device.as_deref(),
            ) && self.device.as_deref() != Some(device.as_str())
            {
                self.device = Some(device.as_str().to_owned());
            }
        }

        self.apply_fact(&event.fact, at, config);

        Applied::Changed
    }

    fn apply_fact(&mut self, fact: &Fact, at: DateTime<Utc>, config: &FoldConfig) {
        match fact {
            Fact::PageView { .. } | Fact::ProductView { .. } | Fact::EmailOpened { .. } => {}
            Fact::AddToCart { item, currency } => {
                let entry = match self.cart.items.get_mut(&*item.sku) {
                    Some(entry) => entry,
                    None => self.cart.items.entry(item.sku.to_string()).or_default(),
                };
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
                total_minor,
                currency,
                items,
                ..
            } => {
                self.record_purchase(at, *total_minor, currency);
                let status = &mut self.email_status;
                if let (Some(campaign), Some(clicked)) =
                    (&status.last_clicked_campaign, status.last_clicked_at)
                {
                    if clicked <= at && at - clicked <= config.attribution_window {
                        *status
                            .attributed_purchases
                            .entry(campaign.clone())
                            .or_default() += 1;
                        let revenue = status
                            .attributed_revenue_minor
                            .entry(campaign.clone())
                            .or_default();
                        *revenue = revenue.saturating_add(*total_minor);
                    }
                }
                self.clear_purchased(at, items);
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
                let key = format!("poll:{question_id}");
                if lww(
                    &mut self.trait_times,
                    &key,
                    at,
                    answer,
                    self.poll_answers.get(&**question_id).map(String::as_str),
                ) {
                    self.poll_answers
                        .insert(question_id.to_string(), answer.to_string());
                }
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
                self.anonymous_ids.insert(anonymous_id.to_string());
            }
            Fact::ProfileUpdated {
                email,
                name,
                timezone,
            } => {
                if let Some(v) = email {
                    if lww(&mut self.trait_times, "email", at, v, self.email.as_deref()) {
                        self.email = Some(v.to_string());
                    }
                }
                if let Some(v) = name {
                    if lww(&mut self.trait_times, "name", at, v, self.name.as_deref()) {
                        self.name = Some(v.to_string());
                    }
                }
                if let Some(v) = timezone {
                    if lww(
                        &mut self.trait_times,
                        "timezone",
                        at,
                        v,
                        self.timezone.as_deref(),
                    ) {
                        self.timezone = Some(v.to_string());
                    }
                }
            }
            Fact::EmailSuppressed { reason, .. } => {
                self.suppress(reason.as_str(), at);
            }
        }
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
        let total = self
            .purchase_totals_minor
            .entry(currency.to_owned())
            .or_default();
        *total = total.saturating_add(total_minor);
        let latest = match (self.last_purchase_at, self.currency.as_deref()) {
            (Some(t), Some(c)) => at > t || (at == t && currency > c),
            _ => true,
        };
        if latest {
            self.currency = Some(currency.to_owned());
        }
        self.last_purchase_at = Some(self.last_purchase_at.map_or(at, |t| t.max(at)));
        self.sync_purchase_total();
    }

    fn sync_purchase_total(&mut self) {
        self.purchase_total_minor = self
            .currency
            .as_ref()
            .and_then(|c| self.purchase_totals_minor.get(c))
            .copied()
            .unwrap_or(0);
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

    fn add_day(&mut self, at: DateTime<Utc>, counters: &DayCounters) {
        let newest = self.last_seen.unwrap_or(at).max(at).date_naive();
        let cutoff = newest - Duration::days(DAILY_WINDOW_DAYS - 1);
        if at.date_naive() >= cutoff {
            let mut buf = [0u8; 10];
            match day_key_into(at, &mut buf).and_then(|k| self.daily.get_mut(k)) {
                Some(day) => day.add(counters),
                None => self.daily.entry(day_key(at)).or_default().add(counters),
            }
        }
        self.prune_daily();
    }

    /// Drops daily buckets older than [`DAILY_WINDOW_DAYS`] before the newest event seen.
    fn prune_daily(&mut self) {
        let Some(newest) = self.last_seen else { return };
        let cutoff = newest.date_naive() - Duration::days(DAILY_WINDOW_DAYS - 1);
        self.daily
            .retain(|k, _| parse_day(k).is_some_and(|d| d >= cutoff));
    }

    fn sum_days(&self, days: u32, now: DateTime<Utc>, pick: impl Fn(&DayCounters) -> i64) -> i64 {
        if days == 0 {
            return 0;
        }
        let today = now.date_naive();
        let from = today - Duration::days(i64::from(days) - 1);
        self.daily
            .iter()
            .filter(|(k, _)| parse_day(k).is_some_and(|d| d >= from && d <= today))
            .map(|(_, c)| pick(c))
            .sum()
    }

    /// Events on the last `days` calendar days (UTC) up to and including `now`'s day.
    /// Windows are limited to [`DAILY_WINDOW_DAYS`].
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
    /// Idempotent: merging the same profile again changes nothing.
    pub fn merge_anonymous(&mut self, anon: &Profile) {
        self.merge_anonymous_with(anon, &FoldConfig::default());
    }

    /// [`Profile::merge_anonymous`] with an explicit heat half-life.
    pub fn merge_anonymous_with(&mut self, anon: &Profile, config: &FoldConfig) {
        if anon.id == self.id || self.merged_profiles.contains(&anon.id) {
            return;
        }
        self.merged_profiles.insert(anon.id.clone());
        self.merged_profiles
            .extend(anon.merged_profiles.iter().cloned());
        let raw = anon.id.strip_prefix(ANON_PREFIX).unwrap_or(&anon.id);
        self.anonymous_ids.insert(raw.to_owned());
        self.anonymous_ids
            .extend(anon.anonymous_ids.iter().cloned());

        for (k, n) in &anon.counts {
            *self.counts.entry(k.clone()).or_default() += n;
        }
        self.created_at = min_opt(self.created_at, anon.created_at);
        self.last_seen = max_opt(self.last_seen, anon.last_seen);
        for (k, c) in &anon.daily {
            self.daily.entry(k.clone()).or_default().add(c);
        }
        self.prune_daily();

        self.purchase_count += anon.purchase_count;
        for (c, t) in &anon.purchase_totals_minor {
            let total = self.purchase_totals_minor.entry(c.clone()).or_default();
            *total = total.saturating_add(*t);
        }
        if anon.purchase_totals_minor.is_empty() && anon.purchase_total_minor != 0 {
            if let Some(c) = &anon.currency {
                let total = self.purchase_totals_minor.entry(c.clone()).or_default();
                *total = total.saturating_add(anon.purchase_total_minor);
            }
        }
        if anon.last_purchase_at > self.last_purchase_at && anon.currency.is_some() {
            self.currency.clone_from(&anon.currency);
        }
        self.last_purchase_at = max_opt(self.last_purchase_at, anon.last_purchase_at);
        self.sync_purchase_total();
        self.last_checkout_at = max_opt(self.last_checkout_at, anon.last_checkout_at);

        if let Some(h) = &anon.heat {
            self.heat
                .get_or_insert_with(DecayedValue::default)
                .merge(h, config.heat_half_life);
        }

        for (sku, item) in &anon.cart.items {
            let entry = self.cart.items.entry(sku.clone()).or_default();
            // The same product in both carts is one intention, not two.
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
        for (key, at) in &anon.trait_times {
            let value = match key.as_str() {
                "email" => anon.email.clone(),
                "name" => anon.name.clone(),
                "timezone" => anon.timezone.clone(),
                "device" => anon.device.clone(),
                "utm" => Some(format!("{:?}", anon.utm)),
                k => k
                    .strip_prefix("poll:")
                    .and_then(|q| anon.poll_answers.get(q).cloned()),
            };
            let Some(value) = value else { continue };
            let current = match key.as_str() {
                "email" => self.email.clone(),
                "name" => self.name.clone(),
                "timezone" => self.timezone.clone(),
                "device" => self.device.clone(),
                "utm" => Some(format!("{:?}", self.utm)),
                k => k
                    .strip_prefix("poll:")
                    .and_then(|q| self.poll_answers.get(q).cloned()),
            };
            if !lww(&mut self.trait_times, key, *at, &value, current.as_deref()) {
                continue;
            }
            match key.as_str() {
                "email" => self.email = Some(value),
                "name" => self.name = Some(value),
                "timezone" => self.timezone = Some(value),
                "device" => self.device = Some(value),
                "utm" => self.utm.clone_from(&anon.utm),
                k => {
                    if let Some(q) = k.strip_prefix("poll:") {
                        self.poll_answers.insert(q.to_owned(), value);
                    }
                }
            }
        }

        let clicked = &anon.email_status;
        if clicked.last_clicked_at > self.email_status.last_clicked_at {
            self.email_status.last_clicked_at = clicked.last_clicked_at;
            self.email_status
                .last_clicked_campaign
                .clone_from(&clicked.last_clicked_campaign);
        }
        for (c, n) in &clicked.attributed_purchases {
            *self
                .email_status
                .attributed_purchases
                .entry(c.clone())
                .or_default() += n;
        }
        for (c, r) in &clicked.attributed_revenue_minor {
            let total = self
                .email_status
                .attributed_revenue_minor
                .entry(c.clone())
                .or_default();
            *total = total.saturating_add(*r);
        }
        if let (Some(reason), Some(at)) = (&clicked.suppressed, clicked.suppressed_at) {
            self.suppress(reason, at);
        }
        self.recent_event_ids
            .absorb(&anon.recent_event_ids, RECENT_EVENT_IDS);
    }
}

/// Overwrites `target` with `value`, reusing its buffer.
fn set(target: &mut String, value: &str) {
    if target != value {
        target.clear();
        target.push_str(value);
    }
}

/// Whether a profile's UTM parameters are an event's.
fn same_utm(profile: &BTreeMap<String, String>, event: &Utm<'_>) -> bool {
    profile
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .eq(event.iter().map(|(k, v)| (&**k, &**v)))
}

/// Last-writer-wins check for trait `key`: true if a value stated at `at` replaces the
/// current one (newer wins; on equal times the greater value wins, so order never matters).
/// Records `at` when it wins.
fn lww(
    times: &mut BTreeMap<String, DateTime<Utc>>,
    key: &str,
    at: DateTime<Utc>,
    new: &str,
    current: Option<&str>,
) -> bool {
    lww_by(times, key, at, || current.is_none_or(|c| new > c))
}

/// Last writer wins on `at`; on equal times `new_wins_tie` decides (evaluated only then, so
/// a costly comparison is paid only on ties).
fn lww_by(
    times: &mut BTreeMap<String, DateTime<Utc>>,
    key: &str,
    at: DateTime<Utc>,
    new_wins_tie: impl FnOnce() -> bool,
) -> bool {
    match times.get_mut(key) {
        None => {
            times.insert(key.to_owned(), at);
            true
        }
        Some(t) if at > *t || (at == *t && new_wins_tie()) => {
            *t = at;
            true
        }
        Some(_) => false,
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
    use crate::enrich::{Channel, SuppressionReason};
    use crate::event::EventHeader;

    fn t(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
            + Duration::days(i64::from(day) - 1)
            + Duration::hours(i64::from(hour))
    }

    fn ev<'a>(id: &'a str, at: DateTime<Utc>, fact: Fact<'a>) -> EnrichedEvent<'a> {
        let event_type = match &fact {
            Fact::PageView { .. } => EventType::PageView,
            Fact::ProductView { .. } => EventType::ProductView,
            Fact::AddToCart { .. } => EventType::AddToCart,
            Fact::RemoveFromCart { .. } => EventType::RemoveFromCart,
            Fact::CheckoutStarted { .. } => EventType::CheckoutStarted,
            Fact::Purchase { .. } => EventType::Purchase,
            Fact::EmailOpened { .. } => EventType::EmailOpened,
            Fact::EmailClicked { .. } => EventType::EmailClicked,
            Fact::HeatPreference { .. } => EventType::HeatPreference,
            Fact::PollAnswer { .. } => EventType::PollAnswer,
            Fact::ConsentChanged { .. } => EventType::ConsentChanged,
            Fact::Identify { .. } => EventType::Identify,
            Fact::ProfileUpdated { .. } => EventType::ProfileUpdated,
            Fact::EmailSuppressed { .. } => EventType::EmailSuppressed,
        };
        EnrichedEvent {
            header: EventHeader {
                event_id: id.into(),
                event_type,
                version: 1,
                user_id: Some("u-1".into()),
                anonymous_id: None,
                occurred_at: at,
                source: "test".into(),
            },
            fact,
            utm: BTreeMap::new(),
            device: None,
        }
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
    fn duplicates_change_nothing() {
        let mut p = Profile::new("u-1");
        let e = ev("e1", t(1, 0), add("A", 1, 500));
        assert_eq!(p.apply(&e, &cfg()), Applied::Changed);
        let snapshot = p.clone();
        assert_eq!(p.apply(&e, &cfg()), Applied::Duplicate);
        assert_eq!(p, snapshot);
        assert_eq!(p.counts["add_to_cart"], 1);
    }

    #[test]
    fn recent_ids_are_bounded_and_drop_the_oldest() {
        let mut p = Profile::new("u-1");
        for i in 0..=RECENT_EVENT_IDS {
            p.apply(
                &ev(
                    &format!("e{i}"),
                    t(1, 0),
                    Fact::PageView {
                        url: None,
                        title: None,
                    },
                ),
                &cfg(),
            );
        }
        assert_eq!(p.recent_event_ids.len(), RECENT_EVENT_IDS);
        assert_eq!(p.recent_event_ids.front().as_deref(), Some("e1"));
        let again = ev(
            "e0",
            t(1, 0),
            Fact::PageView {
                url: None,
                title: None,
            },
        );
        assert_eq!(
            p.apply(&again, &cfg()),
            Applied::Changed,
            "forgotten id is processed again"
        );
        let last_id = format!("e{RECENT_EVENT_IDS}");
        let last = ev(
            &last_id,
            t(1, 0),
            Fact::PageView {
                url: None,
                title: None,
            },
        );
        assert_eq!(p.apply(&last, &cfg()), Applied::Duplicate);
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
        assert_eq!(p.purchase_total_minor, 1250);
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
    fn day_keys_round_trip_and_only_canonical_keys_parse() {
        for t in [
            "2026-11-23T23:59:59Z",
            "2026-01-05T00:00:00Z",
            "0999-12-31T12:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let at: DateTime<Utc> = t.parse().unwrap();
            let key = day_key(at);
            assert_eq!(key, at.format("%Y-%m-%d").to_string());
            assert_eq!(parse_day(&key), Some(at.date_naive()));
        }
        // Outside 0..=9999 the key is chrono's (and not canonical, so pruned).
        let at: DateTime<Utc> = "-0001-06-01T00:00:00Z".parse().unwrap();
        assert_eq!(day_key(at), "-0001-06-01");
        for bad in [
            "2026-1-05",
            "2026-13-01",
            "2026-02-30",
            "2026/01/05",
            "+026-01-05",
            "",
            "2026-01-0x",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn daily_buckets_keep_thirty_days_relative_to_the_newest_event() {
        let mut p = Profile::new("u-1");
        let pv = || Fact::PageView {
            url: None,
            title: None,
        };
        p.apply(&ev("1", t(1, 0), pv()), &cfg());
        p.apply(&ev("2", t(30, 0), pv()), &cfg());
        assert_eq!(p.daily.len(), 2);
        p.apply(&ev("3", t(31, 0), pv()), &cfg());
        assert_eq!(
            p.daily.keys().collect::<Vec<_>>(),
            vec!["2026-11-30", "2026-12-01"]
        );
        // An old event arriving late does not resurrect a pruned day.
        p.apply(&ev("4", t(1, 5), pv()), &cfg());
        assert_eq!(p.daily.len(), 2);
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
        assert_eq!(p.email.as_deref(), Some("new@example.com"));
        assert_eq!(p.name.as_deref(), Some("Ana"));
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
        assert_eq!(p.poll_answers["fav"], "smoky");
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
        assert_eq!(p.utm["utm_source"], "news", "last touch by time");
        assert_eq!(p.device.as_deref(), Some("mobile"));
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
        user.merge_anonymous(&anon);
        let once = user.clone();
        user.merge_anonymous(&anon);
        assert_eq!(user, once, "merging twice == once");

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
        assert!(
            user.recent_event_ids.contains("1"),
            "anon event ids stay deduplicated"
        );
    }
}
