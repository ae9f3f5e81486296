//! The fault-injection proxy itself, against the emulator: each fault kind reaches the SDK
//! the way the real service's would, the counters are exact, and Ember's adapters recover
//! from per-entry failures by re-sending exactly the failed entries.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::retry::Backoff;
use ember_aws::sqs::SqsDeadLetterSink;
use ember_core::ports::{
    BusEvent, DeadLetter, DeadLetterSink, EventBus, EventStream, StreamRecord,
};
use ember_tests::api_support::read_stream;
use ember_tests::emulator::{ember_pattern, segment_entered, unique, Aws};
use ember_tests::faults::{op, Fault, FaultProxy, Rule, Schedule};

/// The fault proxy and an SDK configuration through it: `attempts` per call, each given
/// `timeout`.
async fn proxied(attempts: u32, timeout: Duration) -> (FaultProxy, aws_config::SdkConfig) {
    let proxy = FaultProxy::from_env()
        .await
        .expect("AWS_ENDPOINT_URL must point at the emulator");
    let conf = proxy.sdk_config(attempts, timeout).await;
    (proxy, conf)
}

/// Resources are created directly on the emulator; only the calls under test go through the
/// proxy.
async fn emulator() -> Aws {
    Aws::from_env().await.expect("emulator environment")
}

async fn create_table() -> String {
    emulator()
        .await
        .create_profiles_table()
        .await
        .expect("table")
}

/// A fresh bus whose Ember events (`source = ember.enrich`) a rule routes to a new queue.
async fn bus_with_queue() -> (String, String) {
    let aws = emulator().await;
    let bus = aws.create_bus("faults-bus").await.expect("bus");
    let queue = aws
        .route_to_queue(&bus, &ember_pattern())
        .await
        .expect("rule -> queue");
    (bus, queue.url)
}

/// Drains a queue until it stays empty for a second, returning the message bodies.
async fn drain(queue_url: &str) -> Vec<String> {
    emulator()
        .await
        .drain(queue_url, Duration::from_secs(1))
        .await
        .expect("drain")
}

type DdbResult<T, E> = Result<T, aws_sdk_dynamodb::error::SdkError<E>>;
type Ddb = aws_sdk_dynamodb::Client;

/// A put and a get of an item with only its key `id`: the smallest calls to inject into.
async fn put(ddb: &Ddb, table: &str, id: &str) -> DdbResult<PutItemOutput, PutItemError> {
    let id = AttributeValue::S(id.into());
    ddb.put_item().table_name(table).item("id", id).send().await
}

async fn get(ddb: &Ddb, table: &str, id: &str) -> DdbResult<GetItemOutput, GetItemError> {
    let id = AttributeValue::S(id.into());
    ddb.get_item().table_name(table).key("id", id).send().await
}

/// Ember's classification of an SDK error says "try again".
fn assert_retryable<E>(err: &aws_sdk_dynamodb::error::SdkError<E>)
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let port = ember_aws::retry::classify(err, "test");
    assert!(port.is_retryable(), "{port}: {err:?}");
}

/// SESv2 message content.
fn text(data: &str) -> aws_sdk_sesv2::types::Content {
    let content = aws_sdk_sesv2::types::Content::builder().data(data).build();
    content.expect("data is set")
}

/// `items` are `distinct` different values, each seen once.
fn assert_each_once(items: impl IntoIterator<Item = String>, distinct: usize) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for item in items {
        *seen.entry(item).or_default() += 1;
    }
    assert_eq!(seen.len(), distinct, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
}

fn fast_backoff() -> Backoff {
    Backoff::new(8, Duration::from_millis(1), Duration::from_millis(20))
}

#[tokio::test]
async fn dynamodb_throttling_is_retried_by_the_sdk_and_counted() {
    let (proxy, conf) = proxied(3, Duration::from_secs(5)).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    let table = create_table().await;

    let throttle = proxy.add(Rule::new(op::DDB_PUT_ITEM, Fault::Throttle).first(2));
    put(&ddb, &table, "p1")
        .await
        .expect("third attempt goes through");
    assert_eq!((throttle.matched(), throttle.injected()), (3, 2));
    assert_eq!(proxy.calls(op::DDB_PUT_ITEM), 3);

    // With one attempt only, the throttling error surfaces with the service's code.
    let conf1 = proxy.sdk_config(1, Duration::from_secs(5)).await;
    let ddb1 = aws_sdk_dynamodb::Client::new(&conf1);
    proxy.clear_rules();
    let throttle = proxy.add(Rule::new(op::DDB_GET_ITEM, Fault::Throttle).first(1));
    let err = get(&ddb1, &table, "p1").await.unwrap_err();
    let err = err.into_service_error();
    assert!(
        err.is_provisioned_throughput_exceeded_exception(),
        "{err:?}"
    );
    assert_eq!(throttle.injected(), 1);

    // 500s: retried by the SDK, then classified transient by Ember.
    proxy.clear_rules();
    let boom = proxy.add(Rule::new(op::DDB_GET_ITEM, Fault::ServerError));
    let err = get(&ddb, &table, "p1").await.unwrap_err();
    assert_eq!(boom.injected(), 3, "one per SDK attempt");
    let port = ember_aws::retry::classify(&err, "test.get");
    assert!(port.is_retryable(), "{port}");
}

#[tokio::test]
async fn stalls_time_out_and_dropped_answers_still_take_effect() {
    let (proxy, conf) = proxied(1, Duration::from_millis(300)).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    let table = create_table().await;

    let stall =
        proxy.add(Rule::new(op::DDB_GET_ITEM, Fault::Stall(Duration::from_secs(2))).first(1));
    let started = std::time::Instant::now();
    let err = get(&ddb, &table, "x").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, aws_sdk_dynamodb::error::SdkError::TimeoutError(_)),
        "{err:?}"
    );
    assert_eq!(stall.injected(), 1);
    assert_retryable(&err);

    // A lost answer: the caller sees a failure but the write happened, the ambiguous case
    // retries must handle. A lost request never reaches the table.
    for (fault, id, lands) in [
        (Fault::DropAfterForward, "ghost", true),
        (Fault::Drop, "never", false),
    ] {
        proxy.clear_rules();
        let dropped = proxy.add(Rule::new(op::DDB_PUT_ITEM, fault).first(1));
        let err = put(&ddb, &table, id).await.unwrap_err();
        assert_retryable(&err);
        assert_eq!(dropped.injected(), 1);
        let item = get(&ddb, &table, id).await.unwrap().item;
        assert_eq!(item.is_some(), lands, "{id}");
    }
}

#[tokio::test]
async fn partial_put_events_failures_are_resent_exactly_once() {
    let (proxy, conf) = proxied(3, Duration::from_secs(5)).await;
    let events = aws_sdk_eventbridge::Client::new(&conf);
    let (bus_name, queue_url) = bus_with_queue().await;

    let partial = proxy.add(Rule::new(
        op::EVENTS_PUT_EVENTS,
        Fault::PartialFailure {
            entries: Schedule::Every(3),
        },
    ));
    let bus = EventBridgeBus::new(events.clone(), &bus_name).with_backoff(fast_backoff());
    let published: Vec<BusEvent> = (0..25).map(|i| segment_entered(i, "spicy")).collect();
    let results = bus.publish(&published).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        partial.entries_failed() >= 8,
        "{}",
        partial.entries_failed()
    );
    // 3 chunks of ≤10, plus one call per retry round.
    assert!(proxy.calls(op::EVENTS_PUT_EVENTS) > 3);

    proxy.clear_rules();
    let bodies = drain(&queue_url).await;
    let ids = bodies.iter().map(|b| {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        v["detail"]["id"].as_str().unwrap().to_owned()
    });
    assert_each_once(ids, 25);
}

#[tokio::test]
async fn throttled_put_events_exhausting_retries_are_reported_per_entry() {
    let (proxy, conf) = proxied(2, Duration::from_secs(5)).await;
    let events = aws_sdk_eventbridge::Client::new(&conf);
    let (bus_name, _queue) = bus_with_queue().await;
    let throttle = proxy.add(Rule::new(op::EVENTS_PUT_EVENTS, Fault::Throttle));
    let bus = EventBridgeBus::new(events, &bus_name).with_backoff(Backoff::new(
        2,
        Duration::from_millis(1),
        Duration::from_millis(2),
    ));
    let results = bus
        .publish(&[segment_entered(1, "spicy"), segment_entered(2, "spicy")])
        .await;
    assert_eq!(results.len(), 2);
    for r in results {
        let err = r.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
    // 2 adapter attempts × 2 SDK attempts.
    assert_eq!(throttle.injected(), 4);
}

#[tokio::test]
async fn partial_put_records_failures_land_every_record_once() {
    let (proxy, conf) = proxied(3, Duration::from_secs(5)).await;
    let kinesis = aws_sdk_kinesis::Client::new(&conf);
    // Created through the proxy too, and used once ACTIVE, as on AWS.
    let stream = Aws::from_config(conf.clone())
        .create_stream("faults-stream", 1)
        .await
        .unwrap();

    let partial = proxy.add(Rule::new(
        op::KINESIS_PUT_RECORDS,
        Fault::PartialFailure {
            entries: Schedule::First(7),
        },
    ));
    let writer = KinesisEventStream::new(kinesis.clone(), &stream).with_retry(
        ember_aws::kinesis::RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
        },
    );
    let records: Vec<StreamRecord> = (0..20)
        .map(|i| StreamRecord {
            partition_key: format!("u-{i}"),
            data: serde_json::json!(format!("r{i}")).to_string().into_bytes(),
        })
        .collect();
    let results = writer.put(&records).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(partial.entries_failed(), 7);
    assert_eq!(partial.entries_seen(), 27, "20 records + the 7 re-sent");
    proxy.clear_rules();

    let landed = read_stream(&kinesis, &stream).await;
    assert_each_once(landed.into_iter().map(|(_, data)| data.to_string()), 20);
}

#[tokio::test]
async fn partial_send_message_batch_failures_are_resent() {
    let (proxy, conf) = proxied(3, Duration::from_secs(5)).await;
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let queue_url = emulator()
        .await
        .create_queue("faults-dlq")
        .await
        .expect("queue")
        .url;
    let partial = proxy.add(Rule::new(
        op::SQS_SEND_MESSAGE_BATCH,
        Fault::PartialFailure {
            entries: Schedule::Every(4),
        },
    ));
    let sink = SqsDeadLetterSink::new(sqs.clone(), &queue_url).with_backoff(fast_backoff());
    let letters: Vec<DeadLetter> = (0..12)
        .map(|i| DeadLetter {
            origin: format!("kinesis:shardId-0:{i}"),
            stage: "decode".into(),
            reason: "/: not valid JSON".into(),
            raw_base64: "e30=".into(),
            at: chrono::Utc::now(),
        })
        .collect();
    sink.send(&letters).await.unwrap();
    assert!(partial.entries_failed() >= 3);
    proxy.clear_rules();
    let bodies = drain(&queue_url).await;
    let mut origins: Vec<String> = bodies
        .iter()
        .map(|b| serde_json::from_str::<DeadLetter>(b).unwrap().origin)
        .collect();
    origins.sort();
    origins.dedup();
    assert_eq!((bodies.len(), origins.len()), (12, 12), "{bodies:?}");
}

#[tokio::test]
async fn sesv2_throttling_is_a_429_the_sdk_retries() {
    let (proxy, conf) = proxied(2, Duration::from_secs(5)).await;
    let ses = aws_sdk_sesv2::Client::new(&conf);
    let from = format!("{}@example.com", unique("sender"));
    ses.create_email_identity()
        .email_identity(&from)
        .send()
        .await
        .unwrap();
    let throttle = proxy.add(Rule::new(op::SESV2_SEND_EMAIL, Fault::Throttle).first(1));
    let content = aws_sdk_sesv2::types::EmailContent::builder()
        .simple(
            aws_sdk_sesv2::types::Message::builder()
                .subject(text("hi"))
                .body(
                    aws_sdk_sesv2::types::Body::builder()
                        .text(text("hello"))
                        .build(),
                )
                .build(),
        )
        .build();
    let to = aws_sdk_sesv2::types::Destination::builder()
        .to_addresses("to@example.com")
        .build();
    let send = |client: &aws_sdk_sesv2::Client| {
        let email = client.send_email().from_email_address(&from);
        email
            .destination(to.clone())
            .content(content.clone())
            .send()
    };
    let out = send(&ses).await.expect("second attempt goes through");
    assert!(out.message_id.is_some());
    assert_eq!((throttle.matched(), throttle.injected()), (2, 1));

    // One attempt: the caller sees TooManyRequestsException.
    proxy.clear_rules();
    proxy.add(Rule::new(op::SESV2_SEND_EMAIL, Fault::Throttle).first(1));
    let conf1 = proxy.sdk_config(1, Duration::from_secs(5)).await;
    let err = send(&aws_sdk_sesv2::Client::new(&conf1))
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_too_many_requests_exception(), "{err:?}");
}
