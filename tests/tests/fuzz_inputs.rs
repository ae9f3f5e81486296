//! Property tests (short; they run in `make test`) on everything that parses untrusted input:
//! the event decoder and schema validation, the fold and segment evaluation of whatever the
//! validator lets through, the API router, webhook signature headers and unsubscribe tokens.
//! The property is always the same: never panic, and answer with a clear result — `Ok`, or
//! a non-empty list of problems / a 4xx error. Longer coverage-guided runs of the same entry
//! points live in `fuzz/` (cargo-fuzz, outside the workspace).

use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use ember_api::config::Secrets;
use ember_api::webhooks::signature::{sign_hex, verify_body, verify_timestamped};
use ember_benches::workload::Workload;
use ember_core::enrich::decode;
use ember_core::fold::FoldConfig;
use ember_core::profile::Profile;
use ember_core::schema::Registry;
use ember_core::segment::RuleSet;
use proptest::prelude::*;
use serde_json::Value;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::embedded().expect("embedded schemas compile"))
}

fn rules() -> &'static RuleSet {
    static R: OnceLock<RuleSet> = OnceLock::new();
    R.get_or_init(|| RuleSet::embedded().expect("embedded rules compile"))
}

/// Valid events of every type the workload produces, as JSON values.
fn valid_events() -> &'static Vec<Value> {
    static E: OnceLock<Vec<Value>> = OnceLock::new();
    E.get_or_init(|| {
        Workload::new(64, 8)
            .records()
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
            .collect()
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("2026-11-20T10:00:00Z")),
        Just(Value::from("page_view")),
        Just(Value::from("add_to_cart")),
        Just(Value::from("EUR")),
        Just(Value::from("12.50")),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event_id".to_owned()),
                    Just("type".to_owned()),
                    Just("version".to_owned()),
                    Just("user_id".to_owned()),
                    Just("occurred_at".to_owned()),
                    Just("payload".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Checks the contract of a decode result, and that whatever passes can be folded and
/// evaluated without panicking.
fn check_decoded(
    result: Result<ember_core::enrich::EnrichedEvent, Vec<ember_core::error::Problem>>,
) {
    match result {
        Ok(event) => {
            let mut profile = Profile::new(event.header.profile_key().unwrap_or_default());
            profile.apply(&event, &FoldConfig::default());
            rules().evaluate(&profile, event.header.occurred_at);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an error must say what is wrong");
            assert!(
                problems.iter().all(|p| !p.message.is_empty()),
                "{problems:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_decoded(decode(&bytes, registry()));
    }

    #[test]
    fn arbitrary_json_is_validated_with_reasons(value in arb_json()) {
        match registry().validate(&value) {
            Ok(_) => {}
            Err(problems) => prop_assert!(!problems.is_empty()),
        }
        check_decoded(decode(value.to_string().as_bytes(), registry()));
    }

    #[test]
    fn mutated_valid_events_decode_or_explain(
        which in 0usize..64,
        path in prop::sample::select(vec![
            "/event_id", "/type", "/version", "/user_id", "/occurred_at", "/source", "/context",
            "/context/user_agent", "/context/page_url", "/payload", "/payload/price",
            "/payload/quantity", "/payload/currency", "/payload/sku", "/payload/total",
            "/payload/items", "/payload/value",
        ]),
        replacement in prop::option::of(arb_json()),
    ) {
        let events = valid_events();
        let mut event = events[which % events.len()].clone();
        let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some(Value::Object(map)) = event.pointer_mut(parent) {
            match replacement {
                Some(v) => { map.insert(key.to_owned(), v); }
                None => { map.remove(key); }
            }
        }
        check_decoded(decode(event.to_string().as_bytes(), registry()));
    }

    #[test]
    fn valid_events_with_extreme_values_fold(
        which in 0usize..64,
        price in prop_oneof![Just("0".to_owned()), Just("99999999999.99".to_owned()), "[0-9]{1,12}\\.[0-9]{2}"],
        quantity in 1u32..=1000,
        seconds in -4_000_000_000i64..4_000_000_000i64,
    ) {
        let events = valid_events();
        let mut event = events[which % events.len()].clone();
        if let Some(Value::Object(p)) = event.get_mut("payload") {
            for k in ["price", "total"] {
                if p.contains_key(k) { p.insert(k.into(), Value::from(price.clone())); }
            }
            if p.contains_key("quantity") { p.insert("quantity".into(), Value::from(quantity)); }
        }
        if let Some(t) = DateTime::from_timestamp(seconds, 0) {
            event["occurred_at"] = Value::from(t.to_rfc3339());
        }
        check_decoded(decode(event.to_string().as_bytes(), registry()));
    }

    #[test]
    fn the_router_answers_404_or_405_for_anything_unknown(
        method in prop_oneof![
            Just("GET".to_owned()),
            Just("POST".to_owned()),
            Just("DELETE".to_owned()),
            "[A-Za-z]{0,8}",
        ],
        path in prop_oneof![
            "/v1/[a-z/%0-9{}._-]{0,40}",
            ".{0,60}",
            Just("/v1/profiles/%ZZ".to_owned()),
            Just("/v1/webhooks/".to_owned()),
        ],
    ) {
        match ember_api::router::resolve(&method, &path) {
            Ok(_) => {}
            Err(e) => {
                let status = e.status().as_u16();
                prop_assert!((400..500).contains(&status), "{path}: {status} {e}");
            }
        }
    }

    #[test]
    fn webhook_signature_headers_never_panic_and_forgeries_fail(
        header in prop::option::of(".{0,120}"),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let secrets = Secrets::parse("whsec_new,whsec_old");
        let now = DateTime::from_timestamp(1_763_634_000, 0).unwrap_or_default();
        let r = verify_timestamped(header.as_deref(), &body, &secrets, now, Duration::seconds(300));
        if let Err(e) = &r { prop_assert_eq!(e.status().as_u16(), 401); }
        prop_assert!(r.is_err(), "an unsigned header was accepted: {header:?}");
        let r = verify_body(header.as_deref(), &body, &secrets);
        prop_assert!(r.is_err());
    }

    #[test]
    fn correctly_signed_webhooks_verify_and_any_changed_byte_fails(
        body in prop::collection::vec(any::<u8>(), 1..256),
        flip in any::<prop::sample::Index>(),
        skew in -300i64..=300,
    ) {
        let secrets = Secrets::parse("whsec_new,whsec_old");
        let now = DateTime::from_timestamp(1_763_634_000, 0).unwrap_or_default();
        let t = (now.timestamp() + skew).to_string();
        let sig = sign_hex(b"whsec_old", &[t.as_bytes(), b".", &body]);
        let header = format!("t={t},v1={sig}");
        prop_assert!(verify_timestamped(Some(&header), &body, &secrets, now, Duration::seconds(300)).is_ok());
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x01;
        prop_assert!(verify_timestamped(Some(&header), &tampered, &secrets, now, Duration::seconds(300)).is_err());

        let poll = format!("sha256={}", sign_hex(b"whsec_new", &[&body]));
        prop_assert!(verify_body(Some(&poll), &body, &secrets).is_ok());
        prop_assert!(verify_body(Some(&poll), &tampered, &secrets).is_err());
    }

    #[test]
    fn unsubscribe_tokens_never_panic_and_forgeries_fail(token in ".{0,200}") {
        let keys = ember_core::unsubscribe::Keys::parse("unsubscribe-secret-current-0123456789,unsubscribe-secret-previous-0123456789").expect("keys");
        prop_assert!(ember_core::unsubscribe::verify(&keys, &token).is_err());
    }

    #[test]
    fn unsubscribe_tokens_round_trip(profile in "[a-z0-9:-]{1,40}", campaign in "[a-z_]{1,20}", t in 0i64..4_000_000_000) {
        let keys = ember_core::unsubscribe::Keys::parse("unsubscribe-secret-current-0123456789,unsubscribe-secret-previous-0123456789").expect("keys");
        let at: DateTime<Utc> = DateTime::from_timestamp(t, 0).unwrap_or_default();
        let claims = ember_core::unsubscribe::Unsubscribe::new(profile, campaign, at);
        let token = ember_core::unsubscribe::sign(&keys, &claims);
        prop_assert_eq!(ember_core::unsubscribe::verify(&keys, &token), Ok(claims));
    }
}
