//! Items written before profiles stopped keeping event ids: they held a ring of up to 1,000
//! event ids (`recent_event_ids`), last-writer-wins times in a separate `trait_times` map,
//! daily counters as a map of day keys, and an outbox list. [`upgrade`] reads such an item
//! into today's [`Profile`]; the next write stores it in the current form.
//!
//! The ring's ids are not carried over: from the upgrade on, duplicates are recognised by the
//! stream watermark and the event-id claims (see the README's upgrade notes).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Utc};
use ember_core::ports::{BusEvent, PortError, PortResult};
use ember_core::profile::{DayCounters, Outbox, Profile, Stamped};
use serde::Deserialize;

/// Attributes whose form changed, read by [`Legacy`].
const CHANGED: [&str; 9] = [
    "email",
    "name",
    "timezone",
    "device",
    "utm",
    "poll_answers",
    "trait_times",
    "daily",
    "outbox",
];
/// Attributes that are no longer kept.
const DROPPED: [&str; 3] = [
    "recent_event_ids",
    "merged_profiles",
    "purchase_total_minor",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Legacy {
    email: Option<String>,
    name: Option<String>,
    timezone: Option<String>,
    device: Option<String>,
    utm: BTreeMap<String, String>,
    poll_answers: BTreeMap<String, String>,
    trait_times: BTreeMap<String, DateTime<Utc>>,
    daily: BTreeMap<String, LegacyDay>,
    outbox: Vec<BusEvent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LegacyDay {
    events: u64,
    page_views: u64,
    product_views: u64,
    purchases: u64,
    revenue_minor: i64,
}

/// Whether `item` is in a legacy form (every legacy item has both attributes).
pub fn is_legacy(item: &HashMap<String, AttributeValue>) -> bool {
    item.contains_key("recent_event_ids") || item.contains_key("trait_times")
}

fn decode_error(e: impl std::fmt::Display) -> PortError {
    PortError::Permanent {
        stage: "profile.decode",
        reason: format!("stored profile (legacy form) cannot be decoded: {e}"),
    }
}

/// Reads a legacy item.
pub fn upgrade(mut item: HashMap<String, AttributeValue>) -> PortResult<Profile> {
    let mut changed = HashMap::new();
    for name in CHANGED {
        if let Some(v) = item.remove(name) {
            changed.insert(name.to_owned(), v);
        }
    }
    for name in DROPPED {
        item.remove(name);
    }
    let mut profile: Profile =
        serde_dynamo::aws_sdk_dynamodb_1::from_item(item).map_err(decode_error)?;
    let legacy: Legacy =
        serde_dynamo::aws_sdk_dynamodb_1::from_item(changed).map_err(decode_error)?;

    // A trait without a recorded time counts as stated at the profile's last event.
    let fallback = profile.last_seen.unwrap_or(DateTime::UNIX_EPOCH);
    let at = |key: &str| legacy.trait_times.get(key).copied().unwrap_or(fallback);
    let stamp = |value: Option<String>, key: &str| value.map(|v| Stamped::new(v, at(key)));
    profile.email = stamp(legacy.email, "email");
    profile.name = stamp(legacy.name, "name");
    profile.timezone = stamp(legacy.timezone, "timezone");
    profile.device = stamp(legacy.device, "device");
    if !legacy.utm.is_empty() {
        profile.utm = Some(Stamped::new(legacy.utm, at("utm")));
    }
    for (question, answer) in legacy.poll_answers {
        let stamped = Stamped::new(answer, at(&format!("poll:{question}")));
        profile.poll_answers.insert(question, stamped);
    }
    for (day, c) in &legacy.daily {
        let Ok(date) = day.parse::<NaiveDate>() else {
            continue; // an unreadable day key never counted in a window
        };
        profile.daily.add(
            date,
            &DayCounters {
                events: c.events,
                page_views: c.page_views,
                product_views: c.product_views,
                purchases: c.purchases,
                revenue_minor: c.revenue_minor,
            },
        );
    }
    // Legacy outbox entries were stored because publishing had failed: publish them first.
    profile.outbox = Outbox {
        events: legacy.outbox,
        ..Outbox::default()
    };
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_legacy_item_reads_into_the_current_form() {
        let old = json!({
            "id": "u-7", "version": 12, "last_seen": "2026-11-20T10:00:00Z",
            "email": "ada@example.com", "name": null, "timezone": "Europe/Berlin",
            "device": "mobile",
            "counts": {"page_view": 3, "purchase": 1},
            "purchase_count": 1, "purchase_total_minor": 2599,
            "purchase_totals_minor": {"EUR": 2599}, "currency": "EUR",
            "daily": {
                "2026-11-20": {"events": 2, "page_views": 2, "product_views": 0, "purchases": 0, "revenue_minor": 0},
                "2026-11-18": {"events": 2, "page_views": 1, "product_views": 0, "purchases": 1, "revenue_minor": 2599},
                "garbage": {"events": 9}
            },
            "utm": {"utm_source": "news"},
            "poll_answers": {"fav": "smoky"},
            "trait_times": {"email": "2026-11-18T09:00:00Z", "poll:fav": "2026-11-19T09:00:00Z"},
            "recent_event_ids": ["e1", "e2"],
            "merged_profiles": ["anon:a-1"],
            "anonymous_ids": ["a-1"],
            "outbox": [],
            "segments": ["big_spender"]
        });
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::aws_sdk_dynamodb_1::to_item(old).unwrap();
        item.insert(
            "recent_event_ids".into(),
            AttributeValue::B(vec![1u8, 3, b'e', b'1'].into()),
        );
        assert!(is_legacy(&item));
        let p = super::super::from_item(item).unwrap();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(p.version, 12);
        assert_eq!(
            p.email,
            Some(Stamped::new(
                "ada@example.com".into(),
                t("2026-11-18T09:00:00Z")
            ))
        );
        assert_eq!(p.name, None);
        assert_eq!(p.timezone(), Some("Europe/Berlin"));
        assert_eq!(
            p.timezone.as_ref().unwrap().at,
            t("2026-11-20T10:00:00Z"),
            "no recorded time: last_seen"
        );
        assert_eq!(p.poll_answers["fav"].at, t("2026-11-19T09:00:00Z"));
        assert_eq!(p.utm()["utm_source"], "news");
        assert_eq!(p.purchase_total_minor(), 2599);
        assert_eq!(
            p.daily.to,
            Some(NaiveDate::from_ymd_opt(2026, 11, 20).unwrap())
        );
        assert_eq!(p.daily.events, vec![2, 0, 2]);
        assert_eq!(p.daily.revenue_minor, vec![0, 0, 2599]);
        assert!(p.anonymous_ids.contains("a-1"));
        // Written again, it is in the current form.
        let item = super::super::to_item(&p).unwrap();
        assert!(!is_legacy(&item));
        for gone in DROPPED {
            assert!(!item.contains_key(gone), "{gone}");
        }
        assert_eq!(super::super::from_item(item).unwrap(), p);
    }
}
