//! The api function's batch endpoint under Kinesis faults, against the emulator: PutRecords
//! partial failures and throttling. The client does what the 207/503 answer tells it (resend
//! only the failed entries, same event ids) until everything is accepted; then every
//! accepted event id must be on the stream exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use ember_api::{handle, Deps};
use ember_aws::kinesis::RetryPolicy;
use ember_benches::workload::Workload;
use ember_tests::api_support::{apigw_fixture, behind_proxy, request};
use ember_tests::emulator::unique;
use ember_tests::faults::{op, Fault, Rule, Schedule};
use serde_json::{json, Value};

/// `POST /v1/events/batch` with `events` as the body.
async fn post_batch(deps: &Deps, events: &[Value]) -> (u16, Value) {
    let mut payload = apigw_fixture("event-batch.json");
    let body = json!({ "events": events }).to_string();
    payload["headers"]["content-length"] = json!(body.len().to_string());
    payload["body"] = json!(body);
    let response = handle(deps, request(&payload)).await;
    let status = response.status().as_u16();
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn every_accepted_event_is_on_the_stream_exactly_once() {
    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    let (proxy, env) = behind_proxy(1, retry).await;

    let run = unique("api");
    let events: Vec<Value> = Workload::new(240, 24)
        .prefixed(&run, &format!("{run}-e"))
        .records()
        .into_iter()
        .map(|(_, bytes)| serde_json::from_slice(&bytes).unwrap())
        .collect();
    let all_ids: Vec<String> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();

    // Whole-call throttling on every 4th PutRecords, and 1 in 3 records failing in the first
    // six calls that get through; the adapter retries once, the client resends the rest.
    let throttled = proxy.add(Rule::new(op::KINESIS_PUT_RECORDS, Fault::Throttle).every(4));
    let partial = proxy.add(
        Rule::new(
            op::KINESIS_PUT_RECORDS,
            Fault::PartialFailure {
                entries: Schedule::Every(3),
            },
        )
        .first(6),
    );

    let mut pending = events.clone();
    let mut accepted: Vec<String> = Vec::new();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= 10, "the client could not get its events accepted");
        let (status, body) = post_batch(&env.deps, &pending).await;
        assert!(matches!(status, 202 | 207 | 503), "{status}: {body}");
        for id in body["accepted"].as_array().into_iter().flatten() {
            accepted.push(id.as_str().unwrap().to_owned());
        }
        if status == 202 {
            break;
        }
        let failed = body["failed"].as_array().cloned().unwrap_or_default();
        assert!(!failed.is_empty(), "{body}");
        pending = failed
            .iter()
            .map(|f| {
                assert_eq!(f["retryable"], true, "{f}");
                let index = f["index"].as_u64().unwrap() as usize;
                assert_eq!(pending[index]["event_id"], f["event_id"]);
                pending[index].clone()
            })
            .collect();
    }
    assert!(throttled.injected() > 0 && partial.entries_failed() > 0);
    assert!(rounds > 1, "the faults must have reached the client");

    let mut sorted = accepted.clone();
    sorted.sort();
    let mut expected = all_ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "each event accepted exactly once");

    proxy.clear_rules();
    let mut on_stream: BTreeMap<String, usize> = BTreeMap::new();
    for (key, event) in env.records().await {
        assert_eq!(
            Some(key.as_str()),
            event["user_id"].as_str(),
            "partition key = profile key"
        );
        *on_stream
            .entry(event["event_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(on_stream.len(), all_ids.len());
    let duplicates: Vec<_> = on_stream.iter().filter(|(_, n)| **n != 1).collect();
    assert!(duplicates.is_empty(), "{duplicates:?}");
}
