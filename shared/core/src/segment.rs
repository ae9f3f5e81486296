//! Declarative segment rules: which segments a profile is in at a given time.
//!
//! Rules live in `rules/segments.yaml`, are embedded at build time (as JSON, converted by
//! `build.rs`, so no YAML parser ships) and validated when loaded
//! ([`RuleSet::embedded`], [`RuleSet::from_json`]): an unknown trait, an unknown operator, a
//! literal of the wrong type or a malformed duration fails with [`CoreError::Config`] naming
//! the rule.
//!
//! # Rule language
//!
//! ```yaml
//! segments:
//!   - name: cart_abandoner          # [a-z0-9_]+, unique
//!     description: free text
//!     delay: 30m                    # optional; `$delay` in conditions refers to it
//!     when:                         # one condition
//!       all:
//!         - { trait: cart.item_count, gt: 0 }
//!         - { trait: cart.updated_at, older_than: $delay }
//!         - any:
//!             - { trait: last_checkout_at, exists: false }
//!             - { trait: last_checkout_at, before: cart.updated_at }
//! ```
//!
//! A condition is one of
//! - `all: [conditions]`, `any: [conditions]`, `not: condition`;
//! - `{ trait: <name>, <operator>: <operand> }` with exactly one operator:
//!
//! | operator                         | operand                 | traits                    |
//! |----------------------------------|-------------------------|---------------------------|
//! | `eq`, `ne`                       | literal of the trait's type | all                   |
//! | `gt`, `gte`, `lt`, `lte`         | number / RFC 3339 time  | numbers, times            |
//! | `between`                        | `[low, high]` inclusive | numbers, times            |
//! | `exists`                         | `true` / `false`        | all                       |
//! | `within`                         | duration                | times: `now - t <= d`     |
//! | `older_than`                     | duration                | times: `now - t >= d`     |
//! | `before`, `after`                | another time trait      | times: `t < other`, `t > other` |
//!
//! Durations are an integer and a unit: `45s`, `30m`, `2h`, `7d`, `1w`, or `$delay`.
//! Every operator except `exists: false` is false when the trait (or the other trait) is
//! absent; use `not` or `exists` to say otherwise.
//!
//! # Traits
//!
//! Times: `created_at`, `last_seen`, `last_purchase_at`, `last_checkout_at`,
//! `cart.updated_at`, `email_status.last_clicked_at`, `email_status.suppressed_at`.
//! Numbers: `cart.item_count`, `cart.value_minor`, `purchase_count`, `purchase_total_minor`,
//! `heat_shu`, `events_7d`, `events_30d`, `page_views_7d`, `page_views_30d`,
//! `product_views_7d`, `product_views_30d`, `purchases_7d`, `purchases_30d`,
//! `revenue_30d_minor`, `counts.<event type>` (absent types count 0).
//! Texts: `email`, `name`, `timezone`, `currency`, `cart.currency`, `device`,
//! `email_status.last_clicked_campaign`, `poll.<question id>`, `utm.<utm_source|…>`.
//! Booleans: `consent.<email|sms|push>` (absent until stated), `email_status.suppressed`,
//! `identified` (the profile belongs to a user id, not an anonymous visitor).
//! Rolling windows (`_7d`, `_30d`) count calendar days (UTC) up to the evaluation time.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value as Doc;

use crate::consent::Channel;
use crate::error::{describe, CoreError, Problem};
use crate::event::{EventType, ANON_PREFIX};
use crate::ports::{BusEvent, Decided, SegmentChange};
use crate::profile::Profile;

/// The rules shipped with Ember: `rules/segments.yaml`, converted to JSON by `build.rs`.
pub const EMBEDDED_RULES: &str = include_str!(concat!(env!("OUT_DIR"), "/segments.json"));

/// The type of a trait's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    Time,
    Text,
    Bool,
}

/// A value of a trait or a literal in a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum TraitValue {
    Number(f64),
    Time(DateTime<Utc>),
    Text(String),
    Bool(bool),
}

impl TraitValue {
    fn partial_cmp(&self, other: &TraitValue) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (TraitValue::Number(a), TraitValue::Number(b)) => a.partial_cmp(b),
            (TraitValue::Time(a), TraitValue::Time(b)) => Some(a.cmp(b)),
            (TraitValue::Text(a), TraitValue::Text(b)) => Some(a.cmp(b)),
            (TraitValue::Bool(a), TraitValue::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// A profile trait addressable by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trait {
    CreatedAt,
    LastSeen,
    LastPurchaseAt,
    LastCheckoutAt,
    CartUpdatedAt,
    LastClickedAt,
    SuppressedAt,
    CartItemCount,
    CartValueMinor,
    PurchaseCount,
    PurchaseTotalMinor,
    HeatShu,
    Events(u32),
    PageViews(u32),
    ProductViews(u32),
    Purchases(u32),
    Revenue(u32),
    Count(EventType),
    Email,
    Name,
    Timezone,
    Currency,
    CartCurrency,
    Device,
    LastClickedCampaign,
    Poll(String),
    Utm(String),
    Consent(Channel),
    Suppressed,
    Identified,
}

const FIXED_TRAITS: &[(&str, Trait)] = &[
    ("created_at", Trait::CreatedAt),
    ("last_seen", Trait::LastSeen),
    ("last_purchase_at", Trait::LastPurchaseAt),
    ("last_checkout_at", Trait::LastCheckoutAt),
    ("cart.updated_at", Trait::CartUpdatedAt),
    ("email_status.last_clicked_at", Trait::LastClickedAt),
    ("email_status.suppressed_at", Trait::SuppressedAt),
    ("cart.item_count", Trait::CartItemCount),
    ("cart.value_minor", Trait::CartValueMinor),
    ("purchase_count", Trait::PurchaseCount),
    ("purchase_total_minor", Trait::PurchaseTotalMinor),
    ("heat_shu", Trait::HeatShu),
    ("events_7d", Trait::Events(7)),
    ("events_30d", Trait::Events(30)),
    ("page_views_7d", Trait::PageViews(7)),
    ("page_views_30d", Trait::PageViews(30)),
    ("product_views_7d", Trait::ProductViews(7)),
    ("product_views_30d", Trait::ProductViews(30)),
    ("purchases_7d", Trait::Purchases(7)),
    ("purchases_30d", Trait::Purchases(30)),
    ("revenue_30d_minor", Trait::Revenue(30)),
    ("email", Trait::Email),
    ("name", Trait::Name),
    ("timezone", Trait::Timezone),
    ("currency", Trait::Currency),
    ("cart.currency", Trait::CartCurrency),
    ("device", Trait::Device),
    (
        "email_status.last_clicked_campaign",
        Trait::LastClickedCampaign,
    ),
    ("email_status.suppressed", Trait::Suppressed),
    ("identified", Trait::Identified),
];

impl Trait {
    /// Resolves a trait name; `None` if there is no such trait.
    pub fn parse(name: &str) -> Option<Trait> {
        if let Some((_, t)) = FIXED_TRAITS.iter().find(|(n, _)| *n == name) {
            return Some(t.clone());
        }
        if let Some(t) = name.strip_prefix("counts.") {
            return EventType::parse(t).map(Trait::Count);
        }
        if let Some(c) = name.strip_prefix("consent.") {
            return Channel::parse(c).map(Trait::Consent);
        }
        if let Some(q) = name.strip_prefix("poll.").filter(|q| !q.is_empty()) {
            return Some(Trait::Poll(q.to_owned()));
        }
        if let Some(u) = name.strip_prefix("utm.") {
            return matches!(
                u,
                "utm_source" | "utm_medium" | "utm_campaign" | "utm_term" | "utm_content"
            )
            .then(|| Trait::Utm(u.to_owned()));
        }
        None
    }

    pub fn kind(&self) -> Kind {
        use Trait::*;
        match self {
            CreatedAt | LastSeen | LastPurchaseAt | LastCheckoutAt | CartUpdatedAt
            | LastClickedAt | SuppressedAt => Kind::Time,
            CartItemCount | CartValueMinor | PurchaseCount | PurchaseTotalMinor | HeatShu
            | Events(_) | PageViews(_) | ProductViews(_) | Purchases(_) | Revenue(_) | Count(_) => {
                Kind::Number
            }
            Email | Name | Timezone | Currency | CartCurrency | Device | LastClickedCampaign
            | Poll(_) | Utm(_) => Kind::Text,
            Consent(_) | Suppressed | Identified => Kind::Bool,
        }
    }

    /// The trait's value for `profile` at `now`, `None` when absent.
    pub fn value(&self, p: &Profile, now: DateTime<Utc>) -> Option<TraitValue> {
        use TraitValue as V;
        // Counters are far below 2^53, so the conversions are exact.
        let n = |x: u64| Some(V::Number(x as f64));
        let i = |x: i64| Some(V::Number(x as f64));
        let t = |x: Option<DateTime<Utc>>| x.map(V::Time);
        let s = |x: Option<&String>| x.map(|v| V::Text(v.clone()));
        match self {
            Trait::CreatedAt => t(p.created_at),
            Trait::LastSeen => t(p.last_seen),
            Trait::LastPurchaseAt => t(p.last_purchase_at),
            Trait::LastCheckoutAt => t(p.last_checkout_at),
            Trait::CartUpdatedAt => t(p.cart.updated_at),
            Trait::LastClickedAt => t(p.email_status.last_clicked_at),
            Trait::SuppressedAt => t(p.email_status.suppressed_at),
            Trait::CartItemCount => n(p.cart_item_count()),
            Trait::CartValueMinor => i(p.cart_value_minor()),
            Trait::PurchaseCount => n(p.purchase_count),
            Trait::PurchaseTotalMinor => i(p.purchase_total_minor()),
            Trait::HeatShu => p.heat_shu().map(V::Number),
            Trait::Events(d) => n(p.events_in_last(*d, now)),
            Trait::PageViews(d) => n(p.page_views_in_last(*d, now)),
            Trait::ProductViews(d) => n(p.product_views_in_last(*d, now)),
            Trait::Purchases(d) => n(p.purchases_in_last(*d, now)),
            Trait::Revenue(d) => i(p.revenue_in_last(*d, now)),
            Trait::Count(e) => n(p.counts.get(e.as_str()).copied().unwrap_or(0)),
            Trait::Email => s(p.email.as_ref().map(|v| &v.value)),
            Trait::Name => s(p.name.as_ref().map(|v| &v.value)),
            Trait::Timezone => s(p.timezone.as_ref().map(|v| &v.value)),
            Trait::Currency => s(p.currency.as_ref()),
            Trait::CartCurrency => s(p.cart.currency.as_ref()),
            Trait::Device => s(p.device.as_ref().map(|v| &v.value)),
            Trait::LastClickedCampaign => s(p.email_status.last_clicked_campaign.as_ref()),
            Trait::Poll(q) => s(p.poll_answers.get(q).map(|v| &v.value)),
            Trait::Utm(k) => s(p.utm().get(k)),
            Trait::Consent(c) => p.consent.get(c.as_str()).map(|c| V::Bool(c.granted)),
            Trait::Suppressed => Some(V::Bool(p.email_status.suppressed.is_some())),
            Trait::Identified => Some(V::Bool(!p.id.starts_with(ANON_PREFIX))),
        }
    }
}

/// A comparison operator and its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(TraitValue),
    Ne(TraitValue),
    Gt(TraitValue),
    Gte(TraitValue),
    Lt(TraitValue),
    Lte(TraitValue),
    Between(TraitValue, TraitValue),
    Exists(bool),
    Within(Duration),
    OlderThan(Duration),
    Before(Trait),
    After(Trait),
}

/// A parsed, validated condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test { subject: Trait, op: Op },
}

impl Condition {
    pub fn holds(&self, p: &Profile, now: DateTime<Utc>) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.holds(p, now)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(p, now)),
            Condition::Not(c) => !c.holds(p, now),
            Condition::Test { subject, op } => {
                let value = subject.value(p, now);
                if let Op::Exists(wanted) = op {
                    return value.is_some() == *wanted;
                }
                let Some(value) = value else { return false };
                let cmp = |lit: &TraitValue| value.partial_cmp(lit);
                match op {
                    Op::Eq(l) => cmp(l) == Some(Equal),
                    Op::Ne(l) => matches!(cmp(l), Some(Less | Greater)),
                    Op::Gt(l) => cmp(l) == Some(Greater),
                    Op::Gte(l) => matches!(cmp(l), Some(Greater | Equal)),
                    Op::Lt(l) => cmp(l) == Some(Less),
                    Op::Lte(l) => matches!(cmp(l), Some(Less | Equal)),
                    Op::Between(lo, hi) => {
                        matches!(cmp(lo), Some(Greater | Equal))
                            && matches!(cmp(hi), Some(Less | Equal))
                    }
                    Op::Within(d) => matches!(value, TraitValue::Time(t) if now - t <= *d),
                    Op::OlderThan(d) => matches!(value, TraitValue::Time(t) if now - t >= *d),
                    Op::Before(other) => other
                        .value(p, now)
                        .is_some_and(|o| value.partial_cmp(&o) == Some(Less)),
                    Op::After(other) => other
                        .value(p, now)
                        .is_some_and(|o| value.partial_cmp(&o) == Some(Greater)),
                    Op::Exists(_) => false,
                }
            }
        }
    }
}

/// One named segment rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: String,
    /// The delay the rule waits for (e.g. cart abandonment); the email function schedules its
    /// re-check this long after the triggering change.
    pub delay: Option<Duration>,
    pub when: Condition,
}

impl Rule {
    pub fn holds(&self, profile: &Profile, now: DateTime<Utc>) -> bool {
        self.when.holds(profile, now)
    }
}

/// All segment rules, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// The rules shipped in `rules/segments.yaml`.
    pub fn embedded() -> Result<RuleSet, CoreError> {
        RuleSet::from_json(EMBEDDED_RULES)
    }

    /// Parses and validates a rules document (see the module docs for the language) in its
    /// JSON form (`ember_build::json_of_yaml` turns the YAML file into it at build time).
    pub fn from_json(json: &str) -> Result<RuleSet, CoreError> {
        let doc: Doc = serde_json::from_str(json).map_err(|e| CoreError::Config {
            what: "segment rules".into(),
            reason: e.to_string(),
        })?;
        RuleSet::from_doc(&doc).map_err(|problems| CoreError::Config {
            what: "segment rules".into(),
            reason: describe(&problems),
        })
    }

    /// Validates a rules document, reporting every broken rule (`segments/<name>`), not
    /// just the first.
    pub fn from_doc(doc: &Doc) -> Result<RuleSet, Vec<Problem>> {
        let Some(list) = doc.get("segments").and_then(Doc::as_array) else {
            return Err(vec![Problem::new("segments", "expected a `segments` list")]);
        };
        let mut rules: Vec<Rule> = Vec::new();
        let mut problems = Vec::new();
        for (index, entry) in list.iter().enumerate() {
            let name = entry.get("name").and_then(Doc::as_str).unwrap_or_default();
            let path = if name.is_empty() {
                format!("segments/#{index}")
            } else {
                format!("segments/{name}")
            };
            match parse_rule(entry, index) {
                Ok(rule) if rules.iter().any(|r| r.name == rule.name) => {
                    problems.push(Problem::new(path, "defined twice"));
                }
                Ok(rule) => rules.push(rule),
                Err(CoreError::Config { reason, .. }) => problems.push(Problem::new(path, reason)),
                Err(other) => problems.push(Problem::new(path, other.to_string())),
            }
        }
        if problems.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(problems)
        }
    }

    /// The names of the segments that hold for `profile` at `now`.
    pub fn evaluate(&self, profile: &Profile, now: DateTime<Utc>) -> BTreeSet<String> {
        self.rules
            .iter()
            .filter(|r| r.holds(profile, now))
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The `delay` of rule `name` (e.g. how long a cart must sit before `cart_abandoner`).
    pub fn delay_of(&self, name: &str) -> Option<Duration> {
        self.get(name).and_then(|r| r.delay)
    }
}

fn config(rule: &str, reason: impl Into<String>) -> CoreError {
    CoreError::Config {
        what: format!("segment rule '{rule}'"),
        reason: reason.into(),
    }
}

fn parse_rule(entry: &Doc, index: usize) -> Result<Rule, CoreError> {
    let name = entry
        .get("name")
        .and_then(Doc::as_str)
        .unwrap_or_default()
        .to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(config(
            &format!("#{index} {name}"),
            "needs a `name` of lower-case letters, digits and `_`",
        ));
    }
    let map = entry
        .as_object()
        .ok_or_else(|| config(&name, "must be a mapping"))?;
    for key in map.keys() {
        if !matches!(key.as_str(), "name" | "description" | "delay" | "when") {
            return Err(config(&name, format!("unknown field `{key}`")));
        }
    }
    let description = entry
        .get("description")
        .and_then(Doc::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let delay = match entry.get("delay") {
        None => None,
        Some(d) => Some(parse_duration(d, None).map_err(|e| config(&name, format!("delay: {e}")))?),
    };
    let when = entry
        .get("when")
        .ok_or_else(|| config(&name, "needs a `when` condition"))?;
    let when = parse_condition(when, delay).map_err(|e| config(&name, e))?;
    Ok(Rule {
        name,
        description,
        delay,
        when,
    })
}

fn parse_condition(y: &Doc, delay: Option<Duration>) -> Result<Condition, String> {
    let map = y.as_object().ok_or("a condition must be a mapping")?;
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    let list = |v: &Doc, what: &str| -> Result<Vec<Condition>, String> {
        let items = v
            .as_array()
            .filter(|s| !s.is_empty())
            .ok_or(format!("`{what}` needs a non-empty list"))?;
        items.iter().map(|c| parse_condition(c, delay)).collect()
    };
    match keys.as_slice() {
        ["all"] => Ok(Condition::All(list(&map["all"], "all")?)),
        ["any"] => Ok(Condition::Any(list(&map["any"], "any")?)),
        ["not"] => Ok(Condition::Not(Box::new(parse_condition(
            &map["not"],
            delay,
        )?))),
        _ if keys.contains(&"trait") => {
            let name = map["trait"].as_str().ok_or("`trait` must be a name")?;
            let subject = Trait::parse(name).ok_or(format!("unknown trait '{name}'"))?;
            let ops: Vec<&str> = keys.iter().copied().filter(|k| *k != "trait").collect();
            let [op] = ops.as_slice() else {
                return Err(format!(
                    "trait '{name}' needs exactly one operator, found {}",
                    ops.len()
                ));
            };
            let operand = &map[*op];
            let op = parse_op(op, operand, &subject, delay)
                .map_err(|e| format!("trait '{name}': {e}"))?;
            Ok(Condition::Test { subject, op })
        }
        _ => Err(format!(
            "unknown condition with keys {keys:?} (expected all, any, not or trait)"
        )),
    }
}

fn parse_op(
    op: &str,
    operand: &Doc,
    subject: &Trait,
    delay: Option<Duration>,
) -> Result<Op, String> {
    let kind = subject.kind();
    let ordered = matches!(kind, Kind::Number | Kind::Time);
    let time_only = |o: Op| {
        if kind == Kind::Time {
            Ok(o)
        } else {
            Err(format!("`{op}` needs a time trait"))
        }
    };
    let lit = |v: &Doc| literal(v, kind);
    match op {
        "eq" => Ok(Op::Eq(lit(operand)?)),
        "ne" => Ok(Op::Ne(lit(operand)?)),
        "gt" | "gte" | "lt" | "lte" | "between" if !ordered => Err(format!(
            "`{op}` needs a number or time trait; use eq/ne for {kind:?}"
        )),
        "gt" => Ok(Op::Gt(lit(operand)?)),
        "gte" => Ok(Op::Gte(lit(operand)?)),
        "lt" => Ok(Op::Lt(lit(operand)?)),
        "lte" => Ok(Op::Lte(lit(operand)?)),
        "between" => match operand.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => {
                let (lo, hi) = (lit(lo)?, lit(hi)?);
                if lo.partial_cmp(&hi) == Some(std::cmp::Ordering::Greater) {
                    return Err("`between` needs [low, high] with low <= high".into());
                }
                Ok(Op::Between(lo, hi))
            }
            _ => Err("`between` needs a list [low, high]".into()),
        },
        "exists" => operand
            .as_bool()
            .map(Op::Exists)
            .ok_or_else(|| "`exists` needs true or false".into()),
        "within" => time_only(Op::Within(parse_duration(operand, delay)?)),
        "older_than" => time_only(Op::OlderThan(parse_duration(operand, delay)?)),
        "before" | "after" => {
            let other_name = operand
                .as_str()
                .ok_or(format!("`{op}` needs another trait's name"))?;
            let other = Trait::parse(other_name).ok_or(format!("unknown trait '{other_name}'"))?;
            if other.kind() != Kind::Time {
                return Err(format!(
                    "`{op}` needs a time trait, '{other_name}' is not one"
                ));
            }
            time_only(if op == "before" {
                Op::Before(other)
            } else {
                Op::After(other)
            })
        }
        other => Err(format!("unknown operator '{other}'")),
    }
}

fn literal(v: &Doc, kind: Kind) -> Result<TraitValue, String> {
    let wrong = || {
        format!(
            "expected a {} literal, got {}",
            format!("{kind:?}").to_lowercase(),
            v
        )
    };
    match kind {
        Kind::Number => match v {
            Doc::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(TraitValue::Number)
                .ok_or_else(wrong),
            Doc::String(s) => s
                .replace('_', "")
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(TraitValue::Number)
                .ok_or_else(wrong),
            _ => Err(wrong()),
        },
        Kind::Time => v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| TraitValue::Time(t.with_timezone(&Utc)))
            .ok_or_else(wrong),
        Kind::Text => v
            .as_str()
            .map(|s| TraitValue::Text(s.to_owned()))
            .ok_or_else(wrong),
        Kind::Bool => v.as_bool().map(TraitValue::Bool).ok_or_else(wrong),
    }
}

/// Parses `45s`, `30m`, `2h`, `7d`, `1w` (or `$delay` when the rule has a delay).
pub fn parse_duration(v: &Doc, delay: Option<Duration>) -> Result<Duration, String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("bad duration {}: expected e.g. 30m, 2h, 7d", v))?;
    let bad = || format!("bad duration '{text}': expected e.g. 45s, 30m, 2h, 7d, 1w");
    if text == "$delay" {
        return delay.ok_or_else(|| "`$delay` used but the rule has no `delay`".to_owned());
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n > 100_000 {
        return Err(bad());
    }
    match unit {
        "s" => Ok(Duration::seconds(n)),
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        "w" => Ok(Duration::weeks(n)),
        _ => Err(bad()),
    }
}

/// The bus events for a segment membership change, with deterministic ids
/// (`<profile id>:<segment>:<entered|exited>:<profile version>`, see [`SegmentChange`]), so a
/// retried publish carries the same ids. Entered events come first, each group by name.
pub fn transitions(
    profile_id: &str,
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    at: DateTime<Utc>,
    profile_version: u64,
    cause_event_id: Option<&str>,
    decided: Decided,
) -> Vec<BusEvent> {
    let change = |segment: &str, what: &str| SegmentChange {
        id: format!("{profile_id}:{segment}:{what}:{profile_version}"),
        profile_id: profile_id.to_owned(),
        segment: segment.to_owned(),
        at,
        profile_version,
        cause_event_id: cause_event_id.map(str::to_owned),
        config_version: decided.config_version,
        backfill: decided.backfill,
        ingested_at: None,
        trace: None,
    };
    let entered = after
        .difference(before)
        .map(|s| BusEvent::SegmentEntered(change(s, "entered")));
    let exited = before
        .difference(after)
        .map(|s| BusEvent::SegmentExited(change(s, "exited")));
    entered.chain(exited).collect()
}

#[cfg(test)]
mod tests {

    use crate::profile::Stamped;
    use chrono::TimeZone;

    use super::*;
    use crate::enrich::{EnrichedEvent, Fact, LineItem};
    use crate::fold::FoldConfig;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
    }

    fn rules() -> RuleSet {
        RuleSet::embedded().unwrap()
    }

    fn apply(p: &mut Profile, id: &str, at: DateTime<Utc>, fact: Fact) {
        let e = EnrichedEvent::of_user(id, p.id.clone(), at, "test", fact);
        p.apply(&e, &FoldConfig::default());
    }

    fn add_to_cart(p: &mut Profile, id: &str, at: DateTime<Utc>) {
        let item = LineItem {
            sku: "HS-1".into(),
            name: "Ghost".into(),
            quantity: 1,
            unit_price_minor: 1250,
            url: None,
        };
        apply(
            p,
            id,
            at,
            Fact::AddToCart {
                item,
                currency: "EUR".into(),
            },
        );
    }

    fn purchase(p: &mut Profile, id: &str, at: DateTime<Utc>, total_minor: i64) {
        let fact = Fact::Purchase {
            order_id: id.into(),
            total_minor,
            currency: "EUR".into(),
            items: vec![],
        };
        apply(p, id, at, fact);
    }

    fn heat(p: &mut Profile, id: &str, at: DateTime<Utc>, shu: u32) {
        apply(
            p,
            id,
            at,
            Fact::HeatPreference {
                shu,
                stated: String::new().into(),
                source: None,
            },
        );
    }

    fn holds(rule: &str, p: &Profile, now: DateTime<Utc>) -> bool {
        rules().evaluate(p, now).contains(rule)
    }

    #[test]
    fn embedded_rules_load() {
        let r = rules();
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            vec![
                "cart_abandoner",
                "high_heat_lover",
                "mild_explorer",
                "churn_risk",
                "big_spender"
            ]
        );
        assert_eq!(r.delay_of("cart_abandoner"), Some(Duration::minutes(30)));
        assert_eq!(r.delay_of("high_heat_lover"), None);
        assert!(r
            .get("cart_abandoner")
            .is_some_and(|rule| !rule.description.is_empty()));
    }

    #[test]
    fn cart_abandoner_waits_for_the_delay_and_clears_on_checkout() {
        let mut p = Profile::new("u-1");
        add_to_cart(&mut p, "1", t0());
        assert!(
            !holds("cart_abandoner", &p, t0() + Duration::minutes(29)),
            "before the delay"
        );
        assert!(
            holds("cart_abandoner", &p, t0() + Duration::minutes(30)),
            "at the delay"
        );
        assert!(
            holds("cart_abandoner", &p, t0() + Duration::hours(5)),
            "after the delay"
        );

        apply(
            &mut p,
            "2",
            t0() + Duration::minutes(40),
            Fact::CheckoutStarted {
                checkout_id: None,
                total_minor: None,
                currency: None,
            },
        );
        assert!(
            !holds("cart_abandoner", &p, t0() + Duration::hours(5)),
            "checkout since the cart change"
        );

        // A later cart change restarts the clock; the old checkout no longer counts.
        add_to_cart(&mut p, "3", t0() + Duration::hours(1));
        assert!(!holds("cart_abandoner", &p, t0() + Duration::minutes(80)));
        assert!(holds("cart_abandoner", &p, t0() + Duration::minutes(90)));

        purchase(&mut p, "4", t0() + Duration::hours(2), 1250);
        assert!(
            !holds("cart_abandoner", &p, t0() + Duration::hours(5)),
            "purchase empties the cart"
        );
    }

    #[test]
    fn empty_cart_is_never_abandoned() {
        let p = Profile::new("u-1");
        assert!(!holds("cart_abandoner", &p, t0()));
    }

    #[test]
    fn heat_segments() {
        let mut hot = Profile::new("u-1");
        heat(&mut hot, "1", t0(), 300_000);
        assert!(holds("high_heat_lover", &hot, t0()));
        heat(&mut hot, "2", t0() + Duration::days(1), 1_000);
        // (~0.977 * 300k + 1k) / ~1.977 ≈ 149k: still a heat lover.
        assert!(holds("high_heat_lover", &hot, t0() + Duration::days(1)));

        let mut mild = Profile::new("u-2");
        heat(&mut mild, "1", t0(), 1_000);
        assert!(!holds("high_heat_lover", &mild, t0()));
        assert!(!holds("mild_explorer", &mild, t0()), "needs product views");
        for i in 0..3 {
            let product = crate::enrich::Product {
                sku: "A".into(),
                name: None,
                price_minor: None,
                currency: None,
                url: None,
            };
            apply(
                &mut mild,
                &format!("pv{i}"),
                t0() + Duration::hours(i),
                Fact::ProductView { product },
            );
        }
        assert!(holds("mild_explorer", &mild, t0() + Duration::days(1)));
        assert!(
            !holds("mild_explorer", &mild, t0() + Duration::days(31)),
            "views fell out of the window"
        );
        assert!(
            !holds("mild_explorer", &Profile::new("u-3"), t0()),
            "no stated heat"
        );
    }

    #[test]
    fn churn_risk_needs_repeat_purchases_and_absence() {
        let mut p = Profile::new("u-1");
        purchase(&mut p, "1", t0(), 1000);
        assert!(
            !holds("churn_risk", &p, t0() + Duration::days(40)),
            "one purchase"
        );
        purchase(&mut p, "2", t0() + Duration::days(1), 1000);
        assert!(!holds("churn_risk", &p, t0() + Duration::days(30)));
        assert!(holds("churn_risk", &p, t0() + Duration::days(31)));
    }

    #[test]
    fn big_spender_lifetime_or_recent() {
        let mut p = Profile::new("u-1");
        purchase(&mut p, "1", t0(), 19_999);
        assert!(!holds("big_spender", &p, t0()));
        purchase(&mut p, "2", t0(), 1);
        assert!(holds("big_spender", &p, t0()), "200.00 in 30 days");
        assert!(
            !holds("big_spender", &p, t0() + Duration::days(31)),
            "recent spend expired"
        );
        purchase(&mut p, "3", t0() + Duration::days(40), 30_000);
        assert!(
            holds("big_spender", &p, t0() + Duration::days(100)),
            "500.00 lifetime"
        );
    }

    #[test]
    fn operators_cover_the_language() {
        let yaml = r#"
segments:
  - name: eqs
    when:
      all:
        - { trait: device, eq: mobile }
        - { trait: consent.email, eq: true }
        - { trait: email_status.suppressed, ne: true }
        - { trait: counts.page_view, between: [1, 3] }
        - { trait: counts.purchase, lte: 0 }
        - { trait: last_seen, within: 1h }
        - { trait: created_at, gte: "2026-01-01T00:00:00Z" }
        - not: { trait: email, exists: true }
        - { trait: identified, eq: true }
        - { trait: poll.fav, eq: smoky }
"#;
        let r = from_yaml(yaml).unwrap();
        let mut p = Profile::new("u-1");
        p.device = Some(Stamped::new("mobile".into(), t0()));
        p.consent.insert(
            "email".into(),
            crate::profile::Consent {
                granted: true,
                at: Some(t0()),
            },
        );
        p.counts.insert("page_view".into(), 2);
        p.created_at = Some(t0());
        p.last_seen = Some(t0());
        p.poll_answers
            .insert("fav".into(), Stamped::new("smoky".into(), t0()));
        assert!(r.evaluate(&p, t0() + Duration::minutes(59)).contains("eqs"));
        assert!(!r.evaluate(&p, t0() + Duration::minutes(61)).contains("eqs"));
        p.email = Some(Stamped::new("a@example.com".into(), t0()));
        assert!(r.evaluate(&p, t0()).is_empty());
    }

    /// The YAML form people write, through the same conversion as `build.rs`.
    fn from_yaml(yaml: &str) -> Result<RuleSet, CoreError> {
        RuleSet::from_json(&ember_build::json_of_yaml(yaml).expect("test YAML is well-formed"))
    }

    fn config_error(yaml: &str) -> String {
        match from_yaml(yaml) {
            Err(CoreError::Config { what, reason }) => format!("{what}: {reason}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_rules_are_rejected_with_the_rule_name() {
        let rule = |when: &str| format!("segments:\n  - name: broken\n    when: {when}\n");
        for (when, needle) in [
            ("{ trait: nope, gt: 1 }", "unknown trait 'nope'"),
            (
                "{ trait: counts.nope, gt: 1 }",
                "unknown trait 'counts.nope'",
            ),
            (
                "{ trait: heat_shu, bigger: 1 }",
                "unknown operator 'bigger'",
            ),
            ("{ trait: heat_shu, gt: hot }", "expected a number literal"),
            ("{ trait: last_seen, older_than: 30 }", "bad duration"),
            ("{ trait: last_seen, older_than: 3x }", "bad duration '3x'"),
            ("{ trait: last_seen, within: $delay }", "no `delay`"),
            ("{ trait: heat_shu, within: 3d }", "needs a time trait"),
            ("{ trait: email, gt: a }", "needs a number or time trait"),
            ("{ trait: heat_shu, gt: 1, lt: 5 }", "exactly one operator"),
            ("{ trait: heat_shu, between: [5, 1] }", "low <= high"),
            (
                "{ trait: last_seen, before: heat_shu }",
                "needs a time trait",
            ),
            ("{ all: [] }", "non-empty list"),
            ("{ some: [] }", "unknown condition"),
        ] {
            let err = config_error(&rule(when));
            assert!(
                err.starts_with("segment rules: segments/broken: "),
                "{when}: {err}"
            );
            assert!(err.contains(needle), "{when}: {err}");
        }
        let err = config_error(
            "segments:\n  - name: a\n    delay: soon\n    when: { trait: heat_shu, gt: 1 }\n",
        );
        assert!(
            err.contains("segments/a: ") && err.contains("bad duration 'soon'"),
            "{err}"
        );
        let err = config_error(
            "segments:\n  - { name: a, when: { trait: heat_shu, gt: 1 } }\n  - { name: a, when: { trait: heat_shu, gt: 1 } }\n",
        );
        assert!(err.contains("defined twice"), "{err}");
        let err = config_error(
            "segments:\n  - { name: a, when: { trait: heat_shu, gt: 1 }, delya: 3m }\n",
        );
        assert!(err.contains("unknown field `delya`"), "{err}");
        assert!(config_error("nope: []").contains("segments"));
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(&Doc::String(s.into()), Some(Duration::minutes(7)));
        assert_eq!(d("45s"), Ok(Duration::seconds(45)));
        assert_eq!(d("30m"), Ok(Duration::minutes(30)));
        assert_eq!(d("2h"), Ok(Duration::hours(2)));
        assert_eq!(d("7d"), Ok(Duration::days(7)));
        assert_eq!(d("1w"), Ok(Duration::weeks(1)));
        assert_eq!(d("$delay"), Ok(Duration::minutes(7)));
        for bad in ["", "m", "5", "5y", "-5m", "1.5h", "999999999d"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transitions_have_deterministic_ids() {
        let before: BTreeSet<String> = ["a", "b"].into_iter().map(String::from).collect();
        let after: BTreeSet<String> = ["b", "c"].into_iter().map(String::from).collect();
        let events = transitions(
            "u-1",
            &before,
            &after,
            t0(),
            7,
            Some("e-9"),
            Decided::default(),
        );
        assert_eq!(events.len(), 2);
        match &events[0] {
            BusEvent::SegmentEntered(c) => {
                assert_eq!(c.id, "u-1:c:entered:7");
                assert_eq!(
                    (
                        c.segment.as_str(),
                        c.profile_version,
                        c.cause_event_id.as_deref()
                    ),
                    ("c", 7, Some("e-9"))
                );
            }
            other => panic!("{other:?}"),
        }
        match &events[1] {
            BusEvent::SegmentExited(c) => assert_eq!(c.id, "u-1:a:exited:7"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            transitions("u-1", &before, &before, t0(), 8, None, Decided::default()),
            vec![]
        );
    }
}
