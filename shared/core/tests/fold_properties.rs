//! Property tests of the profile fold: order independence, idempotence, decay, cart.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ember_core::consent::Channel;
use ember_core::enrich::{DeviceClass, EnrichedEvent, Fact, LineItem};
use ember_core::fold::FoldConfig;
use ember_core::profile::Profile;
use proptest::prelude::*;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap()
}

fn event(id: String, at: DateTime<Utc>, fact: Fact<'static>) -> EnrichedEvent<'static> {
    EnrichedEvent::of_user(id, "u-1", at, "proptest", fact)
}

/// Facts whose effect does not depend on the order they arrive in (no cart, no clicks).
fn independent_fact() -> impl Strategy<Value = Fact<'static>> {
    prop_oneof![
        Just(Fact::PageView {
            url: None,
            title: None
        }),
        "[A-C]".prop_map(|sku| Fact::ProductView {
            product: ember_core::enrich::Product {
                sku: sku.into(),
                name: None,
                price_minor: None,
                currency: None,
                url: None
            }
        }),
        (0u32..400_000).prop_map(|shu| Fact::HeatPreference {
            shu,
            stated: shu.to_string().into(),
            source: None
        }),
        (0usize..3, any::<bool>()).prop_map(|(c, granted)| Fact::ConsentChanged {
            channel: Channel::ALL[c],
            granted
        }),
        (1i64..100_000, prop_oneof![Just("EUR"), Just("USD")]).prop_map(|(total, c)| {
            Fact::Purchase {
                order_id: "o".into(),
                total_minor: total,
                currency: c.into(),
                items: vec![],
            }
        }),
        Just(Fact::CheckoutStarted {
            checkout_id: None,
            total_minor: None,
            currency: None
        }),
        Just(Fact::EmailOpened {
            campaign: "c".into(),
            message_id: "m".into()
        }),
        ("[a-c]", "(smoky|fruity|garlic)").prop_map(|(q, a)| Fact::PollAnswer {
            poll_id: None,
            question_id: q.into(),
            answer: a.into()
        }),
        (
            proptest::option::of("[a-c]@example\\.com"),
            proptest::option::of("(Ana|Bo|Cy)")
        )
            .prop_map(|(email, name)| {
                Fact::ProfileUpdated {
                    email: email.map(Into::into),
                    name: name.map(Into::into),
                    timezone: Some("Europe/Berlin".into()),
                }
            }),
        "[a-c]".prop_map(|a| Fact::Identify {
            user_id: "u-1".into(),
            anonymous_id: a.into()
        }),
    ]
}

/// Events with unique ids, timestamps within 90 days (coarse, so ties happen),
/// some with UTM and device context.
fn independent_events() -> impl Strategy<Value = Vec<EnrichedEvent<'static>>> {
    proptest::collection::vec(
        (
            independent_fact(),
            prop_oneof![0i64..4, 0i64..180],
            proptest::option::of("(news|ads)"),
            any::<bool>(),
        ),
        1..60,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (fact, slot, utm, mobile))| {
                // Half-day slots, often among the first few, make equal `occurred_at` common
                // (exercising tie-breaks) while spanning 90 days (exercising daily pruning).
                let at = base() + Duration::hours(12 * slot);
                let mut e = event(format!("e{i}"), at, fact);
                if let Some(source) = utm {
                    e.utm.insert("utm_source".into(), source.into());
                }
                e.device = Some(if mobile {
                    DeviceClass::Mobile
                } else {
                    DeviceClass::Desktop
                });
                e
            })
            .collect()
    })
}

fn fold(events: &[EnrichedEvent]) -> Profile {
    let mut p = Profile::new("u-1");
    for e in events {
        p.apply(e, &FoldConfig::default());
    }
    p
}

/// Equal up to float rounding of the heat average.
fn assert_equivalent(a: &Profile, b: &Profile) -> Result<(), TestCaseError> {
    match (a.heat_shu(), b.heat_shu()) {
        (Some(x), Some(y)) => {
            prop_assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "heat {x} vs {y}")
        }
        (x, y) => prop_assert_eq!(x, y),
    }
    let strip = |p: &Profile| {
        let mut p = p.clone();
        p.heat = p.heat.map(|h| ember_core::profile::DecayedValue {
            weighted_sum: 0.0,
            weight: 0.0,
            ..h
        });
        p
    };
    prop_assert_eq!(strip(a), strip(b));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn order_of_independent_events_does_not_matter(
        (events, shuffled) in independent_events().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let a = fold(&events);
        let b = fold(&shuffled);
        assert_equivalent(&a, &b)?;
        prop_assert_eq!(a.purchase_count, b.purchase_count);
        prop_assert_eq!(a.consent, b.consent);
    }

    #[test]
    fn rolling_windows_count_exactly_the_events_of_their_days(events in independent_events(), days in 1u32..40, offset in 0i64..100) {
        let p = fold(&events);
        let now = base() + Duration::days(offset);
        let newest = events.iter().map(|e| e.header.occurred_at.date_naive()).max().unwrap();
        let today = now.date_naive();
        let from = today - Duration::days(i64::from(days) - 1);
        // A day counts if it is in the window and within 30 days of the newest day seen.
        let expected = events
            .iter()
            .map(|e| e.header.occurred_at.date_naive())
            .filter(|d| *d >= from && *d <= today && (newest - *d).num_days() < 30)
            .count() as u64;
        prop_assert_eq!(p.events_in_last(days, now), expected);
    }

    #[test]
    fn decay_weighs_by_half_life(old in 0u32..1_000_000, new in 0u32..1_000_000, gap_hours in 0i64..(24 * 365), half_life_days in 1i64..90) {
        let config = FoldConfig::new(Duration::days(half_life_days), Duration::days(7));
        let heat = |shu: u32| Fact::HeatPreference { shu, stated: String::new().into(), source: None };
        let t0 = base();
        let t1 = t0 + Duration::hours(gap_hours);
        let mut p = Profile::new("u-1");
        p.apply(&event("old".into(), t0, heat(old)), &config);
        p.apply(&event("new".into(), t1, heat(new)), &config);
        let w = 0.5_f64.powf(gap_hours as f64 / (half_life_days as f64 * 24.0));
        let expected = (f64::from(old) * w + f64::from(new)) / (w + 1.0);
        let got = p.heat_shu().unwrap();
        prop_assert!((got - expected).abs() <= 1e-6 * expected.max(1.0), "{got} vs {expected}");
        // The result lies between the two statements.
        let (lo, hi) = (old.min(new) as f64, old.max(new) as f64);
        prop_assert!(got >= lo - 1e-6 && got <= hi + 1e-6);
    }

    #[test]
    fn cart_quantities_never_go_negative_and_match_a_model(ops in proptest::collection::vec((any::<bool>(), "[A-C]", proptest::option::of(1u32..5)), 1..60)) {
        let mut p = Profile::new("u-1");
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        for (i, (is_add, sku, qty)) in ops.into_iter().enumerate() {
            let at = base() + Duration::minutes(i as i64);
            let fact = if is_add {
                let q = qty.unwrap_or(1);
                *model.entry(sku.clone()).or_default() += q;
                Fact::AddToCart {
                    item: LineItem { sku: sku.clone().into(), name: sku.clone().into(), quantity: q, unit_price_minor: 100, url: None },
                    currency: "EUR".into(),
                }
            } else {
                match (model.get_mut(&sku), qty) {
                    (Some(have), Some(q)) if q < *have => *have -= q,
                    (Some(_), _) => { model.remove(&sku); }
                    (None, _) => {}
                }
                Fact::RemoveFromCart { sku: sku.clone().into(), quantity: qty }
            };
            p.apply(&event(format!("c{i}"), at, fact), &FoldConfig::default());
            let actual: BTreeMap<String, u32> = p.cart.items.iter().map(|(k, v)| (k.clone(), v.quantity)).collect();
            prop_assert_eq!(&actual, &model);
            prop_assert!(p.cart.items.values().all(|i| i.quantity > 0));
            let value: i64 = model.values().map(|q| i64::from(*q) * 100).sum();
            prop_assert_eq!(p.cart_value_minor(), value);
        }
        p.apply(&event("buy".into(), base() + Duration::days(1), Fact::Purchase {
            order_id: "o".into(), total_minor: 1, currency: "EUR".into(), items: vec![] }), &FoldConfig::default());
        prop_assert!(p.cart.items.is_empty());
    }
}
