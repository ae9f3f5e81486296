//! No raw email address and no secret in the logs: the enrich handler runs the fixture
//! batches (a profile with an email address, poison records) against the emulator, with
//! faults injected so the warning and error paths log too, while every log line (JSON, as in
//! production, at debug level for Ember's crates) is captured and scanned.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::retry::Backoff;
use ember_aws::sqs::SqsDeadLetterSink;
use ember_core::fold::FoldConfig;
use ember_enrich::Enricher;
use ember_tests::emulator::{ember_pattern, kinesis_fixture, Aws};
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
            "info,ember_enrich=debug,ember_aws=debug,ember_core=debug",
        )))
        .try_init()
        .expect("the only subscriber of this test binary");

    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    let aws = Aws::from_config(proxy.sdk_config(1, Duration::from_secs(3)).await);
    let table = aws.create_profiles_table().await.unwrap();
    let ledger = aws.create_ledger_table().await.unwrap();
    let bus = aws.create_bus("logs-bus").await.unwrap();
    let _queue = aws.route_to_queue(&bus, &ember_pattern()).await.unwrap();
    let dlq = aws.create_queue("logs-dlq").await.unwrap();
    let quick = Backoff::new(2, Duration::from_millis(1), Duration::from_millis(5));
    let handler = Enricher::new(
        DynamoProfileStore::new(aws.dynamodb.clone(), &table),
        DynamoLedger::new(aws.dynamodb.clone(), &ledger),
        EventBridgeBus::new(aws.eventbridge.clone(), &bus).with_backoff(quick),
        SqsDeadLetterSink::new(aws.sqs.clone(), &dlq.url).with_backoff(quick),
        FoldConfig::default(),
    )
    .unwrap();

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

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.lines().count() > 5, "nothing was logged:\n{logs}");
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
}
