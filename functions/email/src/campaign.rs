//! Declarative campaigns (`campaigns.yaml`, embedded): trigger, template, delay, quiet hours,
//! frequency caps and priority. Validated once at start-up; every error names the campaign.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use ember_core::error::{describe, Problem};

use crate::error::EmailError;
use crate::experiment::{parse_experiment, Experiment, RawExperiment, Variant};

/// The campaigns shipped with Ember: `campaigns.yaml`, converted to JSON by `build.rs` (no
/// YAML parser in the bootstrap).
pub const EMBEDDED: &str = include_str!(concat!(env!("OUT_DIR"), "/campaigns.json"));

/// `campaigns.yaml` as written, for tests that derive variants of it.
#[cfg(test)]
pub(crate) const SOURCE: &str = include_str!("../campaigns.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    SegmentEntered,
    SegmentExited,
    CartUpdated,
}

/// A retention offer shown by a template (`offer.code`, `offer.percent`, `offer.valid_until`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub code: String,
    pub percent: u8,
    pub valid_days: u32,
}

/// A daily local-time window in which nothing is sent (may wrap midnight, e.g. 21:00–08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// `None` if `now` is outside the window in `tz`, else the instant the window ends.
    pub fn deferral(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz);
        if !self.contains(local.time()) {
            return None;
        }
        let mut day = local.date_naive();
        if local.time() >= self.end {
            day = day.succ_opt()?;
        }
        let end_local = day.and_time(self.end);
        // A DST gap may swallow the end time: move forward until it exists.
        (0..=2)
            .map(|h| end_local + Duration::hours(h))
            .find_map(|t| tz.from_local_datetime(&t).earliest())
            .map(|t| t.with_timezone(&Utc))
            .filter(|end| *end > now)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub name: String,
    pub trigger: Trigger,
    pub segment: Option<String>,
    pub template: String,
    pub delay: Duration,
    pub daily_cap: u64,
    pub priority: i32,
    pub quiet_hours: Option<QuietHours>,
    pub offer: Option<Offer>,
    /// Whether entries a configuration publish backfilled send this campaign.
    pub on_backfill: OnBackfill,
    /// Holdout share, variants and attribution window.
    pub experiment: Experiment,
}

/// What a campaign does with segment entries found by the re-evaluation a configuration
/// publish starts (customers who met the rule before it existed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBackfill {
    /// Publishing a segment never mass-mails existing customers by accident.
    #[default]
    Skip,
    Send,
}

impl Campaign {
    /// Whether a bus event of this kind (and segment) triggers the campaign.
    pub fn is_triggered_by(&self, trigger: Trigger, segment: Option<&str>) -> bool {
        self.trigger == trigger
            && (trigger == Trigger::CartUpdated || self.segment.as_deref() == segment)
    }

    /// Whether the profile (segments re-evaluated now) may still receive this campaign.
    pub fn still_applies(&self, segments: &BTreeSet<String>) -> bool {
        match (self.trigger, &self.segment) {
            (_, None) => true,
            (Trigger::SegmentExited, Some(s)) => !segments.contains(s),
            (_, Some(s)) => segments.contains(s),
        }
    }
}

/// All campaigns plus the defaults they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaigns {
    pub shop_name: String,
    pub timezone: Tz,
    pub global_daily_cap: u64,
    /// Sorted by priority, highest first.
    pub campaigns: Vec<Campaign>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    shop_name: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    quiet_hours: Option<RawQuiet>,
    global_daily_cap: u64,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawQuiet {
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    name: String,
    trigger: Trigger,
    #[serde(default)]
    segment: Option<String>,
    template: String,
    #[serde(default = "zero")]
    delay: String,
    daily_cap: u64,
    #[serde(default)]
    priority: i32,
    /// Absent: the default window; `null`: none for this campaign.
    #[serde(default, deserialize_with = "some")]
    quiet_hours: Option<Option<RawQuiet>>,
    #[serde(default)]
    offer: Option<Offer>,
    #[serde(default)]
    on_backfill: OnBackfill,
    #[serde(default)]
    holdout_percent: u8,
    #[serde(default)]
    variants: Vec<Variant>,
    #[serde(default)]
    attribution_window: Option<String>,
}

fn zero() -> String {
    "0s".into()
}

fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<RawQuiet>>, D::Error> {
    Option::<RawQuiet>::deserialize(d).map(Some)
}

/// Parses `"0s"`, `"45m"`, `"1h30m"`, `"2d"` (units s, m, h, d; at most 30 days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::zero();
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("bad duration {s:?}: number expected before {c:?}"))?;
        digits.clear();
        let part = match c {
            's' => Duration::try_seconds(n),
            'm' => Duration::try_minutes(n),
            'h' => Duration::try_hours(n),
            'd' => Duration::try_days(n),
            _ => {
                return Err(format!(
                    "bad duration {s:?}: unit {c:?} is not one of s, m, h, d"
                ))
            }
        };
        total += part.ok_or_else(|| format!("bad duration {s:?}: too large"))?;
    }
    if !digits.is_empty() {
        return Err(format!("bad duration {s:?}: unit missing after {digits}"));
    }
    if total > Duration::days(30) {
        return Err(format!("bad duration {s:?}: longer than 30 days"));
    }
    Ok(total)
}

fn parse_quiet(q: &RawQuiet) -> Result<QuietHours, String> {
    let t = |v: &str| {
        NaiveTime::parse_from_str(v.trim(), "%H:%M")
            .map_err(|_| format!("quiet hours time {v:?} is not HH:MM"))
    };
    let quiet = QuietHours {
        start: t(&q.start)?,
        end: t(&q.end)?,
    };
    if quiet.start == quiet.end {
        return Err("quiet hours start and end are equal".into());
    }
    Ok(quiet)
}

/// The defaults' time zone and quiet hours.
fn parse_defaults(d: &RawDefaults) -> Result<(Tz, Option<QuietHours>), String> {
    let timezone: Tz = d
        .timezone
        .parse()
        .map_err(|_| format!("unknown time zone {:?}", d.timezone))?;
    let quiet = d.quiet_hours.as_ref().map(parse_quiet).transpose()?;
    if d.global_daily_cap == 0 {
        return Err("global_daily_cap must be at least 1".into());
    }
    Ok((timezone, quiet))
}

/// One campaign, checked against the segments and templates that exist.
fn parse_campaign(
    c: RawCampaign,
    default_quiet: Option<QuietHours>,
    known: &Known<'_>,
) -> Result<Campaign, String> {
    if c.name.is_empty()
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    {
        return Err("name must be lowercase letters, digits and _".into());
    }
    let delay = parse_duration(&c.delay)?;
    if c.daily_cap == 0 {
        return Err("daily_cap must be at least 1".into());
    }
    if !(known.template)(&c.template) {
        return Err(format!("unknown template {:?}", c.template));
    }
    match (&c.segment, c.trigger) {
        (None, Trigger::SegmentEntered | Trigger::SegmentExited) => {
            return Err("segment triggers need a segment".into())
        }
        (Some(s), _) => match (known.segment)(s) {
            None => return Err(format!("unknown segment {s:?}")),
            Some(Some(rule_delay)) if c.trigger == Trigger::CartUpdated && delay < rule_delay => {
                return Err(format!(
                    "delay {} is shorter than segment {s:?} needs ({}s): it could never match",
                    c.delay,
                    rule_delay.num_seconds()
                ))
            }
            Some(_) => {}
        },
        (None, Trigger::CartUpdated) => {}
    }
    if let Some(offer) = &c.offer {
        if offer.code.trim().is_empty() || offer.percent == 0 || offer.percent > 100 {
            return Err("offer needs a code and a percent in 1..=100".into());
        }
    }
    let quiet_hours = match &c.quiet_hours {
        None => default_quiet,
        Some(None) => None,
        Some(Some(q)) => Some(parse_quiet(q)?),
    };
    let experiment = parse_experiment(
        RawExperiment {
            holdout_percent: c.holdout_percent,
            variants: c.variants,
            attribution_window: c.attribution_window,
        },
        known.template,
    )?;
    Ok(Campaign {
        experiment,
        name: c.name,
        trigger: c.trigger,
        segment: c.segment,
        template: c.template,
        delay,
        daily_cap: c.daily_cap,
        priority: c.priority,
        quiet_hours,
        offer: c.offer,
        on_backfill: c.on_backfill,
    })
}

/// What validation needs to know about the rest of the system.
pub struct Known<'a> {
    /// Segment names with the delay their rule depends on, if any.
    pub segment: &'a dyn Fn(&str) -> Option<Option<Duration>>,
    pub template: &'a dyn Fn(&str) -> bool,
}

impl Campaigns {
    /// Parses and validates a campaigns document in its JSON form (`ember_build::json_of_yaml`
    /// of `campaigns.yaml`, done at build time for [`EMBEDDED`]).
    pub fn from_json(json: &str, known: &Known<'_>) -> Result<Campaigns, EmailError> {
        let doc: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| EmailError::Config(format!("campaigns file: {e}")))?;
        Campaigns::from_doc(&doc, known).map_err(|problems| EmailError::Config(describe(&problems)))
    }

    /// Validates a campaigns document, reporting every problem with its path
    /// (`campaigns/defaults/...`, `campaigns/<name>`), not just the first.
    pub fn from_doc(doc: &serde_json::Value, known: &Known<'_>) -> Result<Campaigns, Vec<Problem>> {
        let mut problems = Vec::new();
        if let Some(extra) = doc.as_object().and_then(|o| {
            o.keys()
                .find(|k| !matches!(k.as_str(), "defaults" | "campaigns"))
        }) {
            problems.push(Problem::new(
                "campaigns",
                format!("unknown field `{extra}`"),
            ));
        }
        let defaults = serde_json::from_value::<RawDefaults>(doc["defaults"].clone())
            .map_err(|e| e.to_string())
            .and_then(|d| parse_defaults(&d).map(|parsed| (d, parsed)));
        let defaults = match defaults {
            Ok(d) => Some(d),
            Err(reason) => {
                problems.push(Problem::new("campaigns/defaults", reason));
                None
            }
        };
        let Some(list) = doc["campaigns"].as_array() else {
            problems.push(Problem::new("campaigns", "expected a `campaigns` list"));
            return Err(problems);
        };
        let default_quiet = defaults.as_ref().and_then(|(_, (_, quiet))| *quiet);
        let mut campaigns: Vec<Campaign> = Vec::with_capacity(list.len());
        for (index, entry) in list.iter().enumerate() {
            let name = entry["name"].as_str().unwrap_or_default();
            let path = if name.is_empty() {
                format!("campaigns/#{index}")
            } else {
                format!("campaigns/{name}")
            };
            let parsed = serde_json::from_value::<RawCampaign>(entry.clone())
                .map_err(|e| e.to_string())
                .and_then(|raw| parse_campaign(raw, default_quiet, known));
            match parsed {
                Ok(c) if campaigns.iter().any(|o| o.name == c.name) => {
                    problems.push(Problem::new(path, "defined twice"));
                }
                Ok(c) => campaigns.push(c),
                Err(reason) => problems.push(Problem::new(path, reason)),
            }
        }
        let Some((raw, (timezone, _))) = defaults.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        campaigns.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(Campaigns {
            shop_name: raw.shop_name,
            timezone,
            global_daily_cap: raw.global_daily_cap,
            campaigns,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| c.name == name)
    }

    /// Campaigns a trigger starts, highest priority first.
    pub fn triggered_by(&self, trigger: Trigger, segment: Option<&str>) -> Vec<&Campaign> {
        self.campaigns
            .iter()
            .filter(|c| c.is_triggered_by(trigger, segment))
            .collect()
    }

    /// The profile's time zone, else the default.
    pub fn zone(&self, tz: Option<&str>) -> Tz {
        tz.and_then(|t| t.parse().ok()).unwrap_or(self.timezone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known<'static> {
        Known {
            segment: &|s| match s {
                "cart_abandoner" => Some(Some(Duration::minutes(30))),
                "churn_risk" | "high_heat_lover" | "mild_explorer" => Some(None),
                _ => None,
            },
            template: &|t| ["cart_abandonment", "churn_winback", "heat_match"].contains(&t),
        }
    }

    fn from_yaml(yaml: &str, known: &Known<'_>) -> Result<Campaigns, EmailError> {
        Campaigns::from_json(&ember_build::json_of_yaml(yaml).unwrap(), known)
    }

    fn with(campaign: &str) -> String {
        format!("defaults: {{shop_name: S, global_daily_cap: 2}}\ncampaigns:\n{campaign}")
    }

    #[test]
    fn embedded_campaigns_are_valid_and_sorted() {
        let c = Campaigns::from_json(EMBEDDED, &known()).unwrap();
        assert_eq!(c.campaigns[0].name, "cart_abandonment");
        assert_eq!(c.campaigns[0].delay, Duration::hours(1));
        assert!(c.campaigns[0].quiet_hours.is_some());
        assert_eq!(
            c.triggered_by(Trigger::SegmentEntered, Some("churn_risk"))
                .len(),
            1
        );
        assert!(c
            .triggered_by(Trigger::SegmentEntered, Some("cart_abandoner"))
            .is_empty());
        for (segment, campaign) in [
            ("high_heat_lover", "heat_match"),
            ("mild_explorer", "mild_discovery"),
        ] {
            let found = c.triggered_by(Trigger::SegmentEntered, Some(segment));
            assert_eq!(found.len(), 1, "{segment}");
            assert_eq!(found[0].name, campaign);
        }
    }

    #[test]
    fn errors_name_the_campaign() {
        let cases = [
            ("  - {name: a, trigger: segment_entered, segment: nope, template: churn_winback, daily_cap: 1}", "unknown segment"),
            ("  - {name: b, trigger: segment_entered, segment: churn_risk, template: nope, daily_cap: 1}", "unknown template"),
            ("  - {name: c, trigger: segment_entered, segment: churn_risk, template: churn_winback, delay: 5x, daily_cap: 1}", "unit"),
            ("  - {name: d, trigger: cart_updated, segment: cart_abandoner, template: cart_abandonment, delay: 10m, daily_cap: 1}", "shorter"),
            ("  - {name: e, trigger: segment_entered, segment: churn_risk, template: churn_winback, daily_cap: 0}", "daily_cap"),
            ("  - {name: f, trigger: segment_entered, segment: churn_risk, template: churn_winback, daily_cap: 1, quiet_hours: {start: '25:00', end: '08:00'}}", "HH:MM"),
        ];
        for (yaml, needle) in cases {
            let e = from_yaml(&with(yaml), &known()).unwrap_err().to_string();
            let name = &yaml[11..12];
            assert!(
                e.contains(&format!("campaigns/{name}: ")) && e.contains(needle),
                "{e}"
            );
        }
    }

    #[test]
    fn every_broken_campaign_is_reported_with_its_path() {
        let yaml = "defaults: {shop_name: S, global_daily_cap: 0}\ncampaigns:\n\
            - {name: a, trigger: segment_entered, segment: nope, template: churn_winback, daily_cap: 1}\n\
            - {name: b, trigger: segment_entered, segment: churn_risk, template: churn_winback, daily_cap: 1}\n\
            - {name: c, trigger: segment_entered, segment: churn_risk, template: churn_winback, daily_cap: 1, typo: 1}\n\
            - {name: b, trigger: segment_entered, segment: churn_risk, template: churn_winback, daily_cap: 1}\n";
        let doc: serde_json::Value =
            serde_json::from_str(&ember_build::json_of_yaml(yaml).unwrap()).unwrap();
        let problems = Campaigns::from_doc(&doc, &known()).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "campaigns/defaults",
                "campaigns/a",
                "campaigns/c",
                "campaigns/b"
            ],
            "{problems:?}"
        );
        assert!(problems[2].message.contains("typo"), "{problems:?}");
        assert_eq!(problems[3].message, "defined twice");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::zero());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("31d").is_err());
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_users_zone() {
        let q = QuietHours {
            start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        };
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 21:30 UTC = 22:30 in Berlin (winter): deferred to 08:00 Berlin = 07:00 UTC next day.
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 21, 30, 0).unwrap();
        assert_eq!(
            q.deferral(now, berlin),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 7, 0, 0).unwrap())
        );
        // 05:00 UTC = 06:00 Berlin: deferred to 07:00 UTC the same day.
        let early = Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap();
        assert_eq!(
            q.deferral(early, berlin),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 7, 0, 0).unwrap())
        );
        // Noon is fine.
        assert_eq!(
            q.deferral(
                Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap(),
                berlin
            ),
            None
        );
    }
}
