//! The api function against the emulator: API Gateway v2 fixtures from `events/apigw/` go
//! through the real handler with the real Kinesis, DynamoDB ledger and profile adapters; the
//! tests read the stream back and check exact response bodies.

use std::time::Duration;

use ember_aws::kinesis::{KinesisEventStream, RetryPolicy};
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_core::ports::{Ledger, ProfileStore, ARCHIVE_ERASURE_PENDING, ARCHIVE_ERASURE_PK};
use ember_core::profile::{Profile, Stamped};
use ember_core::unsubscribe::{suppression_key, SUPPRESSION_PK};
use ember_tests::api_support::{
    apigw_fixture, behind_proxy, every_second_record_fails_once, read_stream, setup, with_body,
};
use ember_tests::emulator::Aws;
use ember_tests::faults::{op, Fault, FaultProxy, Rule, Schedule};
use serde_json::{json, Value};

#[tokio::test]
async fn single_event_is_validated_and_lands_on_the_stream() {
    let env = setup().await;
    let (status, body) = env.call("event-single.json").await;
    assert_eq!(status, 202, "{body}");
    let ids = body["accepted"].as_array().expect("accepted").clone();
    assert_eq!(ids.len(), 1);
    let id = ids[0].as_str().expect("id");
    assert_eq!(
        uuid::Uuid::parse_str(id).expect("uuid").get_version_num(),
        4
    );

    let records = env.records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    let (key, event) = &records[0];
    assert_eq!(key, "u-fixture-1");
    assert_eq!(event["event_id"], id);
    assert_eq!(event["type"], "page_view");
    assert_eq!(event["source"], "web");
    assert_eq!(event["occurred_at"], "2026-11-20T09:59:58Z");
    assert_eq!(event["context"]["timezone"], "Europe/London");
    assert_eq!(event["payload"]["title"], "Habanero Gold");
}

#[tokio::test]
async fn batch_is_written_with_profile_partition_keys_and_defaults() {
    let env = setup().await;
    let (status, body) = env.call("event-batch.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"accepted": [
            "7d2a1c54-5f0e-4a53-9a53-1f2a3b4c5d01",
            "7d2a1c54-5f0e-4a53-9a53-1f2a3b4c5d02",
            "7d2a1c54-5f0e-4a53-9a53-1f2a3b4c5d03"
        ]})
    );
    let mut records = env.records().await;
    records.sort_by(|a, b| a.1["event_id"].as_str().cmp(&b.1["event_id"].as_str()));
    let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["anon:anon-fixture-1", "u-fixture-1", "u-fixture-1"]);
    // `source` was missing on the last two: the API's default applies.
    assert_eq!(records[0].1["source"], "web");
    assert_eq!(records[1].1["source"], "api");
    assert_eq!(
        records[1].1["payload"],
        json!({"value": "hot", "source": "quiz"})
    );
}

#[tokio::test]
async fn batch_validation_is_all_or_nothing_with_every_problem_by_index() {
    let env = setup().await;
    let mut payload = apigw_fixture("event-batch.json");
    let mut batch: Value =
        serde_json::from_str(payload["body"].as_str().expect("body")).expect("json");
    batch["events"][1]["payload"]["value"] = json!(true);
    batch["events"][2]["version"] = json!(0);
    payload["body"] = json!(batch.to_string());
    let (status, body) = env.call_payload(&payload).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "validation_failed");
    assert_eq!(body["message"], "3 problem(s) found; nothing was accepted");
    let problems = body["problems"].as_array().expect("problems");
    let at: Vec<(u64, &str)> = problems
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().expect("index"),
                p["path"].as_str().expect("path"),
            )
        })
        .collect();
    assert_eq!(
        at,
        [(1, "/payload/value"), (2, "/version"), (2, "/version")],
        "{body}"
    );
    assert_eq!(
        problems[0]["message"],
        "true is not of types \"number\", \"string\""
    );
    assert!(env.records().await.is_empty(), "nothing may be written");
}

#[tokio::test]
async fn bad_inputs_get_exact_error_bodies_and_write_nothing() {
    let env = setup().await;

    // Each fixture, answered 400 with exactly this body.
    let exact = [
        (
            "event-bad-json.json",
            json!({"error": "malformed_json",
                   "message": "request body is not valid JSON: expected value at line 3 column 21",
                   "line": 3, "column": 21}),
        ),
        (
            "event-wrong-types.json",
            json!({"error": "validation_failed", "message": "3 problem(s) found; nothing was accepted", "problems": [
                {"index": 0, "path": "/user_id", "message": "42 is not of types \"null\", \"string\""},
                {"index": 0, "path": "/version", "message": "\"1\" is not of type \"integer\""},
                {"index": 0, "path": "", "message": "either user_id or anonymous_id is required"}
            ]}),
        ),
        (
            "event-missing-fields.json",
            json!({"error": "validation_failed", "message": "3 problem(s) found; nothing was accepted", "problems": [
                {"index": 0, "path": "/type", "message": "is required"},
                {"index": 0, "path": "/version", "message": "is required"},
                {"index": 0, "path": "/payload", "message": "is required"}
            ]}),
        ),
        (
            "event-unknown-type.json",
            json!({"error": "validation_failed", "message": "1 problem(s) found; nothing was accepted", "problems": [
                {"index": 0, "path": "/type", "message": "unknown event type 'teleport'"}
            ]}),
        ),
    ];
    for (fixture, expected) in exact {
        let (status, body) = env.call(fixture).await;
        assert_eq!((status, &body), (400, &expected), "{fixture}");
    }

    // Oversize: a valid event padded past the 1 MiB limit.
    let mut big: Value = serde_json::from_str(
        apigw_fixture("event-single.json")["body"]
            .as_str()
            .expect("body"),
    )
    .expect("json");
    big["payload"]["title"] = json!("x".repeat(1024 * 1024));
    let text = big.to_string();
    let (status, body) = env
        .call_payload(&with_body("event-single.json", &text))
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"error": "payload_too_large",
               "message": format!("request body is {} bytes; the limit is 1048576 bytes", text.len()),
               "limit_bytes": 1048576})
    );

    let (status, body) = env.call("event-no-api-key.json").await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("missing_credentials")),
        "{body}"
    );
    let mut wrong_key = apigw_fixture("event-single.json");
    wrong_key["headers"]["x-api-key"] = json!("not-the-key");
    let (status, body) = env.call_payload(&wrong_key).await;
    assert_eq!(
        body,
        json!({"error": "invalid_credentials", "message": "the API key is not valid for this endpoint"})
    );
    assert_eq!(status, 403);

    let refusals = [
        (
            "event-wrong-content-type.json",
            415,
            json!({"error": "unsupported_media_type", "message": "content-type must be application/json, got text/plain"}),
        ),
        (
            "unknown-route.json",
            404,
            json!({"error": "not_found", "message": "no route for /v1/nothing-here"}),
        ),
        (
            "wrong-method.json",
            405,
            json!({"error": "method_not_allowed", "message": "method GET is not allowed here; allowed: POST", "allowed": ["POST"]}),
        ),
    ];
    for (fixture, status, body) in refusals {
        env.answers(fixture, status, body).await;
    }

    assert!(
        env.records().await.is_empty(),
        "no bad input may reach the stream"
    );
}

#[tokio::test]
async fn signed_payment_becomes_one_purchase_and_a_redelivery_is_applied_once() {
    let env = setup().await;
    let (status, body) = env.call("webhook-payments-checkout-completed.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["delivery_id"], "evt_1QfixtureCheckout01");
    let event_id = ember_api::webhooks::derived_id("payments", "purchase:pi_3QfixtureIntent01");
    assert_eq!(body["event_ids"], json!([event_id]));

    // The same delivery again (the provider retried): accepted again, the same event id.
    let (status, again) = env.call("webhook-payments-checkout-completed.json").await;
    assert_eq!((status, &again["event_ids"]), (200, &json!([event_id])));

    let records = env.records().await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0], records[1]);
    assert_eq!(
        enriched_purchases(&records, "u-fixture-1").await,
        1,
        "applied once"
    );
    let (key, event) = &records[0];
    assert_eq!(key, "u-fixture-1");
    assert_eq!(event["event_id"], event_id);
    assert_eq!(event["type"], "purchase");
    assert_eq!(event["source"], "payments");
    assert_eq!(event["occurred_at"], "2026-11-20T09:59:58Z");
    assert_eq!(
        event["payload"],
        json!({"order_id": "pi_3QfixtureIntent01", "total": "25.99", "currency": "EUR", "items": []})
    );
    assert!(
        !event.to_string().contains("ana@example.com"),
        "no email address on the stream"
    );
}

/// Folds stream records through the enrich handler (in-memory ports) and returns the
/// customer's purchase count: what enrichment makes of redeliveries.
async fn enriched_purchases(records: &[(String, Value)], user: &str) -> u64 {
    let handler = ember_benches::memory::memory_enricher().expect("handler");
    let raw: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_vec(v).expect("json")))
        .collect();
    let event = ember_tests::emulator::kinesis_event("shardId-000000000000", 0, &raw);
    let (response, _, _) = handler.process(&event).await;
    assert!(response.batch_item_failures.is_empty());
    handler
        .store
        .snapshot()
        .get(user)
        .map_or(0, |p| p.purchase_count)
}

#[tokio::test]
async fn a_webhook_is_never_answered_before_its_events_are_on_the_stream() {
    let (proxy, env) = behind_proxy(3, RetryPolicy::default()).await;
    // The stream write lands and its answer is lost; the SDK writes again. Whatever the
    // ledger did before, the provider is answered only once the events are on the stream.
    let lost = proxy.add(Rule::new(op::KINESIS_PUT_RECORDS, Fault::DropAfterForward).first(1));
    let (status, body) = env.call("webhook-payments-checkout-completed.json").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("accepted")),
        "{body}"
    );
    assert_eq!(lost.injected(), 1);
    // The stream is down: 503, so the provider retries; its retry is accepted.
    let down = proxy.add(Rule::new(op::KINESIS_PUT_RECORDS, Fault::ServerError));
    let (status, _) = env.call("webhook-payments-checkout-completed.json").await;
    assert_eq!(status, 503);
    assert!(down.injected() > 0);
    proxy.clear_rules();
    let (status, body) = env.call("webhook-payments-checkout-completed.json").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("accepted")),
        "{body}"
    );
    let records = env.records().await;
    assert!(records.len() >= 2, "{records:?}");
    assert_eq!(enriched_purchases(&records, "u-fixture-1").await, 1);
}

#[tokio::test]
async fn unverified_webhooks_are_refused_before_anything_is_stored() {
    let env = setup().await;
    let refusals = [
        (
            "webhook-payments-bad-signature.json",
            json!({"error": "invalid_signature", "message": "signature does not match the payload with any configured secret"}),
        ),
        (
            "webhook-payments-unsigned.json",
            json!({"error": "invalid_signature", "message": "missing Stripe-Signature header"}),
        ),
        (
            "webhook-payments-replayed.json",
            json!({"error": "stale_timestamp", "message": "signature timestamp 1795165200 is 3605 s away from the server time; the tolerance is 300 s (replayed or delayed delivery)"}),
        ),
    ];
    for (fixture, body) in refusals {
        assert_eq!(env.call(fixture).await, (401, body), "{fixture}");
    }
    // A tampered body with the original signature.
    let mut tampered = apigw_fixture("webhook-payments-checkout-completed.json");
    let body_text = tampered["body"]
        .as_str()
        .expect("body")
        .replace("2599", "1");
    tampered["body"] = json!(body_text);
    let (status, body) = env.call_payload(&tampered).await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_signature")));
    let mut polls = apigw_fixture("webhook-polls.json");
    polls["headers"]["x-poll-signature"] = json!("sha256=00ff");
    let (status, body) = env.call_payload(&polls).await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_signature")));

    env.answers(
        "webhook-unknown-provider.json",
        404,
        json!({"error": "unknown_provider", "message": "unknown webhook provider \"shipping\""}),
    )
    .await;

    assert!(env.records().await.is_empty());
}

#[tokio::test]
async fn unhandled_payment_types_are_acknowledged_and_ignored() {
    let env = setup().await;
    env.answers(
        "webhook-payments-unhandled-type.json",
        200,
        json!({"status": "ignored", "reason": "event type invoice.paid is not used by Ember"}),
    )
    .await;
    assert!(env.records().await.is_empty());
}

#[tokio::test]
async fn poll_answers_become_poll_and_heat_events() {
    let env = setup().await;
    let (status, body) = env.call("webhook-polls.json").await;
    assert_eq!(status, 200, "{body}");
    let mut records = env.records().await;
    records.sort_by_key(|(_, e)| e["type"].as_str().unwrap_or("").to_owned());
    let types: Vec<&str> = records
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["heat_preference", "poll_answer", "poll_answer"]);
    assert_eq!(
        records[0].1["payload"],
        json!({"value": "extra-hot", "source": "poll"})
    );
    assert!(records
        .iter()
        .all(|(k, e)| k == "u-fixture-1" && e["source"] == "polls"));
    // A redelivery carries the same event ids: enrichment applies each once.
    let first_ids: Vec<Value> = records.iter().map(|(_, e)| e["event_id"].clone()).collect();
    let (status, body) = env.call("webhook-polls.json").await;
    assert_eq!((status, &body["status"]), (200, &json!("accepted")));
    let again = env.records().await;
    assert_eq!(again.len(), 6);
    assert!(again
        .iter()
        .all(|(_, e)| first_ids.contains(&e["event_id"])));
}

#[tokio::test]
async fn one_click_unsubscribe_withdraws_email_consent() {
    let env = setup().await;
    // GET only confirms (link scanners must not unsubscribe anyone).
    let (status, page) = env.call("unsubscribe-page.json").await;
    assert_eq!(status, 200);
    let page = page.as_str().expect("html");
    assert!(
        page.contains("<form method=\"post\">") && page.contains("One-Click"),
        "{page}"
    );
    assert!(env.records().await.is_empty());

    env.answers(
        "unsubscribe-one-click.json",
        200,
        json!({"status": "unsubscribed"}),
    )
    .await;
    let records = env.records().await;
    assert_eq!(records.len(), 1);
    let (key, event) = &records[0];
    assert_eq!(key, "u-fixture-1");
    assert_eq!(event["type"], "consent_changed");
    assert_eq!(event["source"], "unsubscribe");
    assert_eq!(
        event["payload"],
        json!({"channel": "email", "granted": false})
    );
    assert_eq!(event["occurred_at"], "2026-11-20T10:00:05Z");

    env.answers("unsubscribe-bad-token.json", 400, json!({"error": "invalid_token", "message": "token signature does not match any current secret"})).await;
    let mut no_token = apigw_fixture("unsubscribe-one-click.json");
    no_token["rawQueryString"] = json!("");
    no_token["queryStringParameters"] = Value::Null;
    env.answers_payload(
        &no_token,
        400,
        json!({"error": "invalid_token", "message": "missing token"}),
    )
    .await;
    assert_eq!(env.records().await.len(), 1);
}

#[tokio::test]
async fn export_and_erasure_of_a_profile() {
    let env = setup().await;
    let profiles = env.profiles();
    let ledger = env.ledger();
    let mut user = Profile::new("u-fixture-1");
    user.version = 1;
    user.email = Some(Stamped::undated("Ana@Example.com"));
    user.anonymous_ids.insert("anon-fixture-1".into());
    profiles.put(&user, 0).await.expect("put user");
    let mut anon = Profile::new("anon:anon-fixture-1");
    anon.version = 1;
    anon.merged_into = Some("u-fixture-1".into());
    profiles.put(&anon, 0).await.expect("put anon");
    ledger
        .claim(
            "send#u-fixture-1",
            "cart_abandonment#2026-11-20",
            &json!({"message_id": "m-1"}),
            None,
        )
        .await
        .expect("claim");

    let (status, body) = env.call("profile-export.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["profile"]["id"], "u-fixture-1");
    assert_eq!(body["profile"]["email"]["value"], "Ana@Example.com");
    assert_eq!(body["anonymous_profiles"][0]["id"], "anon:anon-fixture-1");

    let (status, body) = env.call("profile-delete-non-admin.json").await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("invalid_credentials"))
    );
    assert!(profiles.get("u-fixture-1").await.expect("get").is_some());

    let (status, body) = env.call("profile-delete.json").await;
    assert_eq!(status, 202, "{body}");
    let mut body = body;
    let remains = body
        .as_object_mut()
        .and_then(|b| b.remove("remains"))
        .expect("what remains is said");
    assert_eq!(remains.as_array().map(Vec::len), Some(5));
    assert_eq!(
        body,
        json!({"user_id": "u-fixture-1", "profile_found": true, "profile_deleted": true,
               "anonymous_profiles_deleted": ["anon:anon-fixture-1"], "ledger_records_deleted": 1,
               "email_suppressed": true, "tombstoned": 2})
    );
    assert!(env
        .aws
        .get_profile(&env.profiles_table, "u-fixture-1")
        .await
        .expect("read")
        .is_none());
    assert!(env
        .aws
        .get_profile(&env.profiles_table, "anon:anon-fixture-1")
        .await
        .expect("read")
        .is_none());
    assert!(ledger
        .get("send#u-fixture-1", "cart_abandonment#2026-11-20")
        .await
        .expect("get")
        .is_none());
    // The archive eraser's next pass is due for both ids, which it keeps only hashed.
    let pending = ledger
        .query(ARCHIVE_ERASURE_PK, ARCHIVE_ERASURE_PENDING)
        .await
        .expect("query");
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(!format!("{pending:?}").contains("fixture"), "{pending:?}");
    let suppression = ledger
        .get(SUPPRESSION_PK, &suppression_key("ana@example.com"))
        .await
        .expect("get");
    let suppression = suppression.expect("suppression written");
    assert_eq!(suppression["reason"], "erasure");
    assert!(
        !suppression
            .to_string()
            .to_lowercase()
            .contains("ana@example.com"),
        "only the hash is kept"
    );

    env.answers(
        "profile-export.json",
        404,
        json!({"error": "profile_not_found", "message": "no profile \"u-fixture-1\""}),
    )
    .await;
    // Erasure again is harmless.
    let (status, body) = env.call("profile-delete.json").await;
    assert_eq!((status, &body["profile_found"]), (202, &json!(false)));
}

#[tokio::test]
async fn stream_failures_are_reported_per_entry_never_silently() {
    // No retries in the adapter: every second record of the call fails for good.
    let no_retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let (proxy, env) = behind_proxy(1, no_retry).await;
    let stats = proxy.add(every_second_record_fails_once());
    let (status, body) = env.call("event-batch.json").await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(stats.entries_failed(), 1);
    assert_eq!(body["error"], "partially_accepted");
    assert_eq!(
        body["accepted"],
        json!(["7d2a1c54-5f0e-4a53-9a53-1f2a3b4c5d01"])
    );
    assert_eq!(body["failed"][0]["index"], 1);
    assert_eq!(
        body["failed"][0]["event_id"],
        "7d2a1c54-5f0e-4a53-9a53-1f2a3b4c5d02"
    );
    assert_eq!(body["failed"][0]["retryable"], true);
    // The same customer's next event is not written ahead of the failed one: it fails too.
    assert_eq!(body["failed"][1]["index"], 2);
    assert_eq!(body["failed"].as_array().map(Vec::len), Some(2));
    let written: Vec<String> = env
        .records()
        .await
        .into_iter()
        .map(|(_, e)| e["event_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(written, ["7d2a1c54-5f0e-4a53-9a53-1f2a3b4c5d01"]);
}

#[tokio::test]
async fn failed_records_are_retried_until_written() {
    let (proxy, env) = behind_proxy(1, RetryPolicy::default()).await;
    let stats = proxy.add(every_second_record_fails_once());
    let (status, body) = env.call("event-batch.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stats.entries_failed(), 1);
    // The batch's first record of each customer, the one failed record again, then the
    // second customer's next record.
    assert_eq!(proxy.calls(op::KINESIS_PUT_RECORDS), 3);
    assert_eq!(env.records().await.len(), 3, "every record exactly once");
}

#[tokio::test]
async fn a_partial_put_records_failure_never_reorders_a_customers_events() {
    let (proxy, env) = behind_proxy(1, RetryPolicy::default()).await;
    // The add_to_cart fails on the first call; the remove_from_cart must not overtake it, or
    // the cart keeps an item the customer removed and an abandonment email goes out.
    proxy.add(
        Rule::new(
            op::KINESIS_PUT_RECORDS,
            Fault::PartialFailure {
                entries: Schedule::First(1),
            },
        )
        .first(1),
    );
    let events = json!([
        {"type": "add_to_cart", "version": 1, "user_id": "u-order-1",
         "payload": {"sku": "SAU-001", "name": "Smoked Chipotle", "price": "8.90", "currency": "EUR", "quantity": 1}},
        {"type": "remove_from_cart", "version": 1, "user_id": "u-order-1",
         "payload": {"sku": "SAU-001"}}
    ]);
    let (status, body) = env
        .call_payload(&with_body("event-batch.json", &events.to_string()))
        .await;
    assert_eq!(status, 202, "{body}");
    let types: Vec<String> = env
        .records()
        .await
        .into_iter()
        .map(|(_, e)| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(types, ["add_to_cart", "remove_from_cart"]);
}

#[tokio::test]
async fn kinesis_adapter_sends_at_most_500_records_per_call_and_keeps_order() {
    use ember_core::ports::{EventStream, StreamRecord};
    let proxy = FaultProxy::from_env().await.expect("proxy");
    let sdk = proxy.sdk_config(1, Duration::from_secs(10)).await;
    let aws = Aws::from_env().await.expect("emulator");
    let name = aws.create_stream("api-chunks", 2).await.expect("stream");
    let stream = KinesisEventStream::from_conf(&sdk, &name);
    // 601 keys, two records each (one only for the last): two waves of ≤601 records.
    let records: Vec<StreamRecord> = (0..1201)
        .map(|i| StreamRecord {
            partition_key: format!("p-{}", i % 601),
            data: json!({ "n": i }).to_string().into_bytes(),
        })
        .collect();
    let results = stream.put(&records).await;
    assert_eq!(results.len(), 1201);
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert_eq!(
        proxy.calls(op::KINESIS_PUT_RECORDS),
        4,
        "500 + 101, then 500 + 100"
    );
    let read = read_stream(&aws.kinesis, &name).await;
    assert_eq!(read.len(), 1201);
    // Within a partition key, records keep their input order.
    for key in 0..7 {
        let ns: Vec<i64> = read
            .iter()
            .filter(|(k, _)| k == &format!("p-{key}"))
            .map(|(_, v)| v["n"].as_i64().unwrap_or(-1))
            .collect();
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "order of p-{key}");
    }
}

#[tokio::test]
async fn a_full_batch_of_500_is_one_put_records_call_and_501_is_refused() {
    let (proxy, env) = behind_proxy(1, RetryPolicy::default()).await;
    let events: Vec<Value> = (0..501)
        .map(|i| {
            json!({"type": "page_view", "version": 1, "anonymous_id": format!("a-{i}"),
                   "payload": {"url": format!("https://shop.example/p/{i}")}})
        })
        .collect();
    let too_many = Value::Array(events[..501].to_vec()).to_string();
    env.answers_payload(
        &with_body("event-batch.json", &too_many),
        400,
        json!({"error": "invalid_request", "message": "the batch has 501 events; the limit is 500"}),
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = env
        .call_payload(&with_body(
            "event-batch.json",
            &Value::Array(events[..500].to_vec()).to_string(),
        ))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"].as_array().map(Vec::len), Some(500));
    assert_eq!(proxy.calls(op::KINESIS_PUT_RECORDS), 1);
    assert_eq!(env.records().await.len(), 500);
    eprintln!("500-event batch through the handler: {elapsed:?}");
}

#[tokio::test]
async fn kinesis_adapter_keeps_each_call_under_5_mib() {
    use ember_core::ports::{EventStream, StreamRecord};
    let proxy = FaultProxy::from_env().await.expect("proxy");
    let sdk = proxy.sdk_config(1, Duration::from_secs(30)).await;
    let aws = Aws::from_env().await.expect("emulator");
    let name = aws.create_stream("api-bytes", 1).await.expect("stream");
    let stream = KinesisEventStream::from_conf(&sdk, &name);
    // 7 records of 900 KiB: 5 fit in one call (4.4 MiB), a 6th would pass 5 MiB.
    let records: Vec<StreamRecord> = (0..7)
        .map(|i| StreamRecord {
            partition_key: format!("big-{i}"),
            data: json!({ "n": i, "pad": "x".repeat(900 * 1024) })
                .to_string()
                .into_bytes(),
        })
        .collect();
    let results = stream.put(&records).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(proxy.calls(op::KINESIS_PUT_RECORDS), 2);
    assert_eq!(read_stream(&aws.kinesis, &name).await.len(), 7);
}

#[tokio::test]
async fn an_erased_customer_stays_erased_whatever_arrives_later() {
    let env = setup().await;
    let profiles = env.profiles();
    let mut user = Profile::new("u-fixture-1");
    user.version = 1;
    user.email = Some(Stamped::undated("Ana@Example.com"));
    profiles.put(&user, 0).await.expect("put user");
    let (status, body) = env.call("profile-delete.json").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["tombstoned"], 1);
    assert!(body["remains"].as_array().is_some_and(|r| !r.is_empty()));

    // An old one-click unsubscribe link: answered, nothing written for the erased profile.
    env.answers(
        "unsubscribe-one-click.json",
        200,
        json!({"status": "unsubscribed"}),
    )
    .await;
    assert!(env.records().await.is_empty());

    // A late SES open, an event in flight, a replay: enrichment never re-creates the profile.
    let bus = env.aws.create_bus("erased-bus").await.expect("bus");
    let dlq = env.aws.create_queue("erased-dlq").await.expect("dlq");
    let enrich = ember_enrich::Enricher::new(
        DynamoProfileStore::new(env.aws.dynamodb.clone(), &env.profiles_table),
        DynamoLedger::from_conf(&env.aws.config, &env.ledger_table),
        ember_aws::eventbridge::EventBridgeBus::new(env.aws.eventbridge.clone(), &bus),
        ember_aws::sqs::SqsDeadLetterSink::new(env.aws.sqs.clone(), &dlq.url),
        ember_core::fold::FoldConfig::default(),
    )
    .expect("handler");
    let late = [
        json!({"event_id": "late-open", "type": "email_opened", "version": 1, "user_id": "u-fixture-1",
               "occurred_at": "2026-11-21T08:00:00Z", "source": "ses",
               "payload": {"campaign": "churn_winback", "message_id": "m-1"}}),
        json!({"event_id": "late-view", "type": "page_view", "version": 1, "user_id": "u-fixture-1",
               "occurred_at": "2026-11-21T08:00:01Z", "source": "web",
               "payload": {"url": "https://shop.example/"}}),
    ];
    let raw: Vec<(String, Vec<u8>)> = late
        .iter()
        .map(|e| ("u-fixture-1".to_owned(), serde_json::to_vec(e).unwrap()))
        .collect();
    let batch = ember_tests::emulator::kinesis_event("shardId-000000000000", 0, &raw);
    let (response, stats, _) = enrich.process(&batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((stats.erased, stats.writes, stats.claims), (2, 0, 0));
    assert!(profiles.get("u-fixture-1").await.expect("get").is_none());
}
