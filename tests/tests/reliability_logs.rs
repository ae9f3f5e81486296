//! No raw email address and no secret in the logs: the enrich handler runs the fixture
//! batches (a profile with an email address, poison records) against the emulator, with
//! faults injected so the warning and error paths log too; then every function (enrich,
//! re-evaluation, email and its sweeper, feedback, the API's events, privacy and unsubscribe
//! endpoints) handles a customer whose profile id *is* an email address. Every log line
//! (JSON, as in production, at debug level for Ember's crates) is captured and scanned.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::retry::Backoff;
use ember_tests::emulator::{kinesis_fixture, Aws, ProfilesAndBus};
use ember_tests::faults::{op, Fault, FaultProxy, Rule, Schedule};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Spans of text that look like an email address (`local@domain.tld`).
fn email_like(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || b".-".contains(&c);
    let mut found = Vec::new();
    for (at, _) in text.match_indices('@') {
        let start = (0..at).rev().take_while(|&i| local(bytes[i])).last();
        let end = (at + 1..bytes.len())
            .take_while(|&i| domain(bytes[i]))
            .last();
        if let (Some(s), Some(e)) = (start, end) {
            let candidate = &text[s..=e];
            let host = &text[at + 1..=e];
            if host.contains('.') && !host.ends_with('.') {
                found.push(candidate.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_scanner_finds_addresses() {
    assert_eq!(
        email_like(r#"{"to":"alice@example.com"}"#),
        vec!["alice@example.com"]
    );
    assert!(email_like("profile u-1 @ 10:00, sha256 ab12").is_empty());
}

#[tokio::test]
async fn logs_carry_no_email_addresses_or_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish()
        .with(ember_aws::telemetry::filter(Some(
            "info,ember_enrich=debug,ember_aws=debug,ember_core=debug,ember_email=debug,ember_api=debug",
        )))
        .try_init()
        .expect("the only subscriber of this test binary");

    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    let aws = Aws::from_config(proxy.sdk_config(1, Duration::from_secs(3)).await);
    let base = ProfilesAndBus::on(aws).await.unwrap();
    let dlq = base.aws.create_queue("logs-dlq").await.unwrap();
    let quick = Backoff::new(2, Duration::from_millis(1), Duration::from_millis(5));
    let metrics = ember_core::memory::MemoryMetrics::default();
    let mut handler = base.enricher(&dlq.url, quick);
    handler.metrics = metrics.metrics();

    // Faults first, so error paths (with SDK error texts) are logged, then a clean pass.
    proxy.add(Rule::new(op::DDB_PUT_ITEM, Fault::ServerError).first(2));
    proxy.add(Rule::new(op::DDB_GET_ITEM, Fault::Throttle).first(1));
    proxy.add(Rule::new(op::SQS_SEND_MESSAGE_BATCH, Fault::ServerError).first(1));
    proxy.add(
        Rule::new(
            op::EVENTS_PUT_EVENTS,
            Fault::PartialFailure {
                entries: Schedule::Every(2),
            },
        )
        .first(4),
    );
    let mut inputs = Vec::new();
    for fixture in ["several-users.json", "identify.json", "poison.json"] {
        inputs.push(kinesis_fixture(fixture).unwrap());
    }
    let raw: String = inputs
        .iter()
        .flat_map(|e| e.records.iter())
        .map(|r| String::from_utf8_lossy(&r.kinesis.data.0).into_owned())
        .collect();
    let addresses = email_like(&raw);
    assert!(
        !addresses.is_empty(),
        "the fixtures must contain email addresses to leak"
    );
    for event in &inputs {
        for _ in 0..3 {
            handler.handle(event, "req-logs").await;
        }
    }

    proxy.clear_rules();
    every_function_with_an_address_as_profile_id(&proxy, &base, &metrics).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 5, "nothing was logged:\n{logs}");
    for target in [
        "ember_enrich::handler",
        "ember_enrich::reevaluate",
        "ember_email::handler",
        "ember_email::timers",
        "ember_email::feedback",
        "ember_api",
    ] {
        assert!(
            logs.contains(&format!("\"target\":\"{target}")),
            "{target} logged nothing:\n{logs}"
        );
    }
    for event in [
        "profile erased",
        "profile exported",
        "events written",
        "send outcome unknown",
    ] {
        assert!(logs.contains(event), "no {event:?} line:\n{logs}");
    }
    let leaked = email_like(&logs);
    assert!(
        leaked.is_empty(),
        "raw email addresses in the logs: {leaked:?}\n{logs}"
    );
    // Credentials: the emulator's are short dummies, so only check real-looking ones.
    if let Ok(value) = std::env::var("AWS_SECRET_ACCESS_KEY") {
        assert!(
            value.len() < 8 || !logs.contains(&value),
            "the AWS secret key is in the logs"
        );
    }
    assert!(
        !logs.to_lowercase().contains("authorization"),
        "request headers logged"
    );

    // Metric lines (their dimensions) name no one either, and every function wrote some.
    let lines: String = metrics
        .documents()
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    let leaked = email_like(&lines);
    assert!(
        leaked.is_empty(),
        "addresses in metrics: {leaked:?}\n{lines}"
    );
    for name in [
        "EventsApplied",
        "DeadLetters",
        "SegmentEntered",
        "EventsAccepted",
        "EmailOutcomeUnknown",
        "SesFeedback",
    ] {
        assert!(metrics.sum(name, &[]) > 0.0, "no {name} written:\n{lines}");
    }
}

/// Every function, for a customer whose profile id is an email address.
async fn every_function_with_an_address_as_profile_id(
    proxy: &FaultProxy,
    base: &ProfilesAndBus,
    metrics: &ember_core::memory::MemoryMetrics,
) {
    let ProfilesAndBus {
        aws,
        table,
        ledger,
        bus,
        ..
    } = base;
    use chrono::{Duration as Days, Utc};
    use ember_api::{handle as api, ApiConfig, Deps as ApiDeps, FixedClock};
    use ember_aws::kinesis::KinesisEventStream;
    use ember_core::clock::SystemClock;
    use ember_core::ports::ProfileStore;
    use ember_core::profile::{Consent, Profile, Stamped};
    use ember_core::unsubscribe::{sign, Keys, Unsubscribe};
    use ember_email::{timers, Deps, FeedbackDeps, FeedbackSettings, MessageSettings, Settings};
    use serde_json::json;

    let who = "ana.lopez@example.com";
    // Yesterday noon (UTC, the profile's zone): outside the campaigns' quiet hours, so the
    // email is sent (not deferred) whatever time the test runs.
    let now = (Utc::now() - Days::days(1))
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .expect("noon exists")
        .and_utc();
    let quick = Backoff::new(2, Duration::from_millis(1), Duration::from_millis(5));
    let profiles = DynamoProfileStore::new(aws.dynamodb.clone(), table);

    // Enrich and the re-evaluation.
    let dlq = aws.create_queue("logs-dlq-2").await.unwrap();
    let mut enrich = base.enricher(&dlq.url, quick);
    enrich.metrics = metrics.metrics();
    let events: Vec<(String, Vec<u8>)> = [
        json!({"type": "profile_updated", "version": 1, "payload": {"email": who, "name": "Ana"}}),
        json!({"type": "add_to_cart", "version": 1, "payload": {"sku": "SAU-001", "name": "Smoked",
               "price": "8.90", "currency": "EUR", "quantity": 1}}),
        json!({"type": "page_view", "version": 1, "payload": {"url": format!("https://shop.example/?email={who}")}}),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, mut e)| {
        e["event_id"] = json!(format!("logs-{i}-{}", now.timestamp_millis()));
        e["user_id"] = json!(who);
        e["occurred_at"] = json!(now.to_rfc3339());
        e["source"] = json!("web");
        (who.to_owned(), serde_json::to_vec(&e).unwrap())
    })
    .collect();
    let batch = ember_tests::emulator::kinesis_event("shardId-000000000007", 0, &events);
    proxy.add(Rule::new(op::DDB_PUT_ITEM, Fault::ServerError).first(1));
    enrich.handle(&batch, "req-address").await;
    enrich.handle(&batch, "req-address").await;
    let mut reevaluate = ember_enrich::Reevaluator::new(
        DynamoProfileStore::new(aws.dynamodb.clone(), table),
        EventBridgeBus::new(aws.eventbridge.clone(), bus),
        1,
    )
    .unwrap();
    let schedule: aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value> =
        serde_json::from_value(json!({
            "version": "0", "id": "logs-schedule", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": now + Days::days(45),
            "region": "us-east-1", "resources": [], "detail": {}
        }))
        .unwrap();
    reevaluate.metrics = metrics.metrics();
    let _ = reevaluate.handle(&schedule, "req-reevaluate").await;

    // The email function: a churn email, its SES answer lost (logged as unknown), a sweep.
    let mut churner = profiles
        .get(who)
        .await
        .unwrap()
        .unwrap_or_else(|| Profile::new(who));
    let expected = churner.version;
    churner.version += 1;
    churner.email = Some(Stamped::undated(who));
    churner.purchase_count = 3;
    churner.last_seen = Some(now - Days::days(40));
    churner.consent.insert(
        "email".into(),
        Consent {
            granted: true,
            at: Some(now - Days::days(100)),
        },
    );
    profiles.put(&churner, expected).await.unwrap();
    let stream = aws.create_stream("logs-stream", 1).await.unwrap();
    let domain = format!("{}.example", ember_tests::emulator::unique("logs"));
    aws_sdk_sesv2::Client::new(&aws.config)
        .create_email_identity()
        .email_identity(&domain)
        .send()
        .await
        .unwrap();
    let keys = Keys::parse("log-test-unsubscribe-secret-01").unwrap();
    let settings = Settings {
        profiles_table: table.to_owned(),
        ledger_table: ledger.to_owned(),
        stream_name: stream.clone(),
        configuration_set: None,
        config_ttl: std::time::Duration::ZERO,
        send_rate: ember_email::send_rate::SendRate::UNLIMITED,
        stage: "test".into(),
        message: MessageSettings {
            sender: format!("Shop <shop@{domain}>"),
            public_base_url: "https://shop.example".into(),
            unsubscribe_keys: keys.clone(),
        },
    };
    let mut email = Deps::build(&aws.config, settings, SystemClock::shared()).unwrap();
    email.metrics = metrics.metrics();
    let entered: aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value> =
        serde_json::from_value(json!({
            "version": "0", "id": "logs-1", "detail-type": "SegmentEntered", "source": "ember.enrich",
            "account": "123456789012", "time": now, "region": "us-east-1", "resources": [],
            "detail": {"id": format!("{who}:churn_risk:entered:9"), "profile_id": who,
                       "segment": "churn_risk", "at": now, "profile_version": 9}
        }))
        .unwrap();
    proxy.add(Rule::new(op::SESV2_SEND_EMAIL, Fault::DropAfterForward).first(1));
    let _ = email.handle(&entered, now).await;
    let _ = email.handle(&entered, now).await;
    let _ = timers::sweep(&email, now).await;

    // Feedback: a hard bounce tagged with the customer's profile id.
    let mut feedback = FeedbackDeps::build(
        &aws.config,
        FeedbackSettings {
            ledger_table: ledger.to_owned(),
            stream_name: stream.clone(),
            stage: "test".into(),
        },
        SystemClock::shared(),
    );
    feedback.metrics = metrics.metrics();
    let path = ember_tests::emulator::workspace_root().join("events/ses/eventbridge-bounce.json");
    let mut bounce: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    bounce["detail"]["mail"]["tags"]["profile_id"] =
        json!([ember_email::tags::encode_profile_id(who).unwrap()]);
    bounce["detail"]["bounce"]["bouncedRecipients"][0]["emailAddress"] = json!(who);
    let _ = feedback.handle(&bounce, now).await;

    // The API: an event, export, erasure, and an old unsubscribe link, all naming the address.
    let admin = "log-test-admin-key";
    let config = ApiConfig::from_lookup(|name| match name {
        "EMBER_API_KEY_HASHES" | "EMBER_ADMIN_KEY_HASHES" => {
            Some(ember_api::auth::KeyHashes::hash_key(admin))
        }
        "EMBER_UNSUBSCRIBE_SECRETS" => Some("log-test-unsubscribe-secret-01".into()),
        _ => None,
    })
    .unwrap();
    let deps = ApiDeps {
        stream: Box::new(KinesisEventStream::new(aws.kinesis.clone(), &stream)),
        profiles: Box::new(DynamoProfileStore::new(aws.dynamodb.clone(), table)),
        ledger: std::sync::Arc::new(DynamoLedger::new(aws.dynamodb.clone(), ledger)),
        bus: Box::new(EventBridgeBus::new(aws.eventbridge.clone(), bus)),
        registry: ember_core::schema::Registry::embedded().unwrap(),
        config,
        clock: Box::new(FixedClock(now)),
        metrics: metrics.metrics(),
    };
    let token = sign(&keys, &Unsubscribe::new(who, "churn_winback", now));
    let encoded: String = who.replace('@', "%40");
    let call = |method: &str, path: String, body: Option<serde_json::Value>| {
        let mut payload = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"x-api-key": admin, "content-type": "application/json"},
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                               "sourceIp": "127.0.0.1", "userAgent": "logs"},
                               "requestId": "logs", "routeKey": "$default", "stage": "$default",
                               "time": "20/Nov/2026:10:00:05 +0000", "timeEpoch": 0,
                               "accountId": "0", "apiId": "0", "domainName": "x", "domainPrefix": "x"},
            "isBase64Encoded": false
        });
        if let Some(b) = body {
            payload["body"] = json!(b.to_string());
        }
        ember_tests::api_support::request(&payload)
    };
    api(
        &deps,
        call(
            "POST",
            "/v1/events".into(),
            Some(json!({"type": "page_view", "version": 1,
        "user_id": who, "payload": {"url": "https://shop.example/"}})),
        ),
    )
    .await;
    api(&deps, call("GET", format!("/v1/profiles/{encoded}"), None)).await;
    api(
        &deps,
        call("DELETE", format!("/v1/profiles/{encoded}"), None),
    )
    .await;
    api(&deps, call("GET", format!("/v1/profiles/{encoded}"), None)).await;
    let mut unsubscribe = call("POST", "/v1/unsubscribe".into(), None);
    *unsubscribe.body_mut() = lambda_http::Body::Text(format!("token={token}"));
    unsubscribe.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    api(&deps, unsubscribe).await;
}
