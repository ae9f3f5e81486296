//! template.yaml stays in step with the code it deploys: the HTTP API routes are exactly the
//! api function's route table, every function names a binary the workspace builds and the
//! local runner can host, and the event sources carry the settings the handlers rely on.

use std::collections::BTreeSet;

use ember_local::template::{EventSource, Template};
use ember_tests::emulator::workspace_root;

struct NoNames;
impl ember_local::template::Names for NoNames {
    fn reference(&self, _: &str) -> Option<String> {
        None
    }
    fn attribute(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

fn template() -> Template {
    Template::load(&workspace_root().join("template.yaml")).expect("template.yaml parses")
}

#[test]
fn http_routes_match_the_api_route_table() {
    let t = template();
    let mut in_template = BTreeSet::new();
    for f in t.functions().expect("functions") {
        for e in &f.events {
            if let EventSource::HttpApi { method, path, .. } = e {
                assert_eq!(
                    f.binary, "api",
                    "route {method} {path} is not served by the api binary"
                );
                in_template.insert((method.clone(), path.clone()));
            }
        }
    }
    assert!(
        in_template.remove(&("ANY".to_owned(), "/{proxy+}".to_owned())),
        "the catch-all route sends unknown paths to the api function for JSON 404/405"
    );
    let in_code: BTreeSet<(String, String)> = ember_api::router::ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(move |m| (m.to_string(), r.path.to_string()))
        })
        .collect();
    assert_eq!(in_template, in_code);
}

#[test]
fn functions_use_binaries_the_workspace_builds() {
    let t = template();
    let built = [
        "api",
        "archive-eraser",
        "enrich",
        "reevaluate",
        "email",
        "feedback",
    ];
    for f in t.functions().expect("functions") {
        assert!(
            built.contains(&f.binary.as_str()),
            "{} uses unknown binary {}",
            f.logical_id,
            f.binary
        );
        let props = &t.resources[&f.logical_id].properties;
        assert_eq!(
            props["CodeUri"], "./",
            "{}: cargo-lambda builds from the workspace root",
            f.logical_id
        );
    }
}

#[test]
fn event_sources_carry_the_settings_the_handlers_rely_on() {
    let t = template();
    let fns = t.functions().expect("functions");
    let enrich = fns.iter().find(|f| f.binary == "enrich").expect("enrich");
    let kinesis: Vec<_> = enrich
        .events
        .iter()
        .filter_map(|e| {
            if let EventSource::Kinesis(k) = e {
                Some(k)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(kinesis.len(), 1);
    let k = kinesis[0];
    assert!(
        k.report_batch_item_failures,
        "enrich returns batch item failures"
    );
    assert!(k.bisect_on_error);
    // The retry limits are parameters, resolved with the template's defaults.
    let required = [
        "SenderAddress",
        "SenderIdentity",
        "PublicBaseUrl",
        "ApiKeyHashes",
        "AdminKeyHashes",
        "PaymentsWebhookSecrets",
        "PollsWebhookSecrets",
        "UnsubscribeSecrets",
    ]
    .map(|p| (p.to_owned(), "x".to_owned()))
    .into();
    let ctx = ember_local::template::Context {
        parameters: t.parameter_values(&required).expect("defaults"),
        conditions: t.conditions.clone(),
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        stack_name: "s".into(),
    };
    let mut k = k.clone();
    k.resolve_limits(&ctx, &NoNames).expect("limits resolve");
    // Retried until the age limit (-1: no retry count), well inside the stream's retention.
    assert_eq!((k.max_retries, k.max_record_age_secs), (None, Some(21_600)));
    let retention: u64 = ctx.parameters["StreamRetentionHours"].parse().unwrap();
    assert!(21_600 * 2 < retention * 3600);
    assert!(k.on_failure.is_some());
    for name in ["PROFILES_TABLE", "EVENT_BUS_NAME", "DEAD_LETTER_QUEUE_URL"] {
        assert!(enrich.environment.contains_key(name), "enrich needs {name}");
    }
    let email = fns
        .iter()
        .find(|f| f.logical_id == "EmailFunction")
        .expect("email");
    for name in [
        "PROFILES_TABLE",
        "LEDGER_TABLE",
        "STREAM_NAME",
        "EMBER_SENDER",
        "SES_CONFIGURATION_SET",
        "EMBER_PUBLIC_BASE_URL",
        "EMBER_UNSUBSCRIBE_SECRETS",
    ] {
        assert!(email.environment.contains_key(name), "email needs {name}");
    }
    assert!(email.async_on_failure.is_some());
    let api = fns.iter().find(|f| f.binary == "api").expect("api");
    for name in [
        "STREAM_NAME",
        "PROFILES_TABLE",
        "LEDGER_TABLE",
        "EMBER_API_KEY_HASHES",
        "EMBER_ADMIN_KEY_HASHES",
        "EMBER_PAYMENTS_WEBHOOK_SECRETS",
        "EMBER_POLLS_WEBHOOK_SECRETS",
        "EMBER_UNSUBSCRIBE_SECRETS",
    ] {
        assert!(api.environment.contains_key(name), "api needs {name}");
    }
    let scheduled = |logical_id: &str| {
        let f = fns
            .iter()
            .find(|f| f.logical_id == logical_id)
            .unwrap_or_else(|| panic!("{logical_id} is in the template"));
        assert!(
            f.events
                .iter()
                .any(|e| matches!(e, EventSource::Schedule { .. })),
            "{logical_id} runs on a schedule"
        );
        f
    };
    let sweeper = scheduled("SweeperFunction");
    assert_eq!(
        sweeper.binary, "email",
        "the email binary sweeps on its schedule"
    );
    let reevaluate = scheduled("ReevaluateFunction");
    assert_eq!(
        reevaluate.binary, "reevaluate",
        "time-based segments are re-evaluated by the reevaluate binary"
    );
    for name in [
        "PROFILES_TABLE",
        "EVENT_BUS_NAME",
        "LEDGER_TABLE",
        "SCAN_TOTAL_SEGMENTS",
    ] {
        assert!(
            reevaluate.environment.contains_key(name),
            "reevaluate needs {name}"
        );
    }
    let total = reevaluate.environment["SCAN_TOTAL_SEGMENTS"]
        .as_str()
        .expect("SCAN_TOTAL_SEGMENTS is a string");
    assert!(
        ember_enrich::ReevaluateSettings::from_lookup(|n| match n {
            "SCAN_TOTAL_SEGMENTS" => Some(total.to_owned()),
            "CONFIG_TTL_SECONDS" => None,
            _ => Some("x".to_owned()),
        })
        .is_ok(),
        "SCAN_TOTAL_SEGMENTS {total:?} is accepted by the binary"
    );
    let eraser = scheduled("ArchiveEraserFunction");
    assert_eq!(eraser.binary, "archive-eraser");
    let env = |name: &str| eraser.environment.get(name).map(|_| "1".to_owned());
    let settings = ember_api::archive_eraser::EraserSettings::from_lookup(env)
        .expect("the eraser's environment is complete");
    assert!(
        settings.retention_days.is_some(),
        "the eraser enforces the retention"
    );
}
