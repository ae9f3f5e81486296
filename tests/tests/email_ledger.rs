//! The DynamoDB ledger adapter against the emulator: conditional claims (and re-claiming an
//! expired record before TTL deletion has run), bounded counters (also taken concurrently),
//! prefix queries across pages, and deletes.

use chrono::{Duration, Utc};
use ember_aws::ledger::DynamoLedger;
use ember_core::ports::Ledger;
use ember_tests::emulator::Aws;
use serde_json::json;

async fn ledger() -> DynamoLedger {
    let aws = Aws::from_env().await.expect("emulator environment");
    let table = aws
        .create_table("ledger", "pk", Some("sk"))
        .await
        .expect("ledger table");
    DynamoLedger::new(aws.dynamodb.clone(), table)
}

#[tokio::test]
async fn claims_are_exclusive_until_they_expire() {
    let ledger = ledger().await;
    let tomorrow = Utc::now() + Duration::days(1);
    let later = Some(tomorrow);
    assert!(ledger
        .claim("send#u-1", "c#t1", &json!({"campaign": "c"}), later)
        .await
        .unwrap());
    assert!(!ledger
        .claim("send#u-1", "c#t1", &json!({"campaign": "other"}), later)
        .await
        .unwrap());
    let stored = ledger.get("send#u-1", "c#t1").await.unwrap().unwrap();
    assert_eq!(stored["campaign"], "c");
    assert_eq!(stored["expires_at"], json!(tomorrow.timestamp()));

    // Expired but not yet removed by TTL: invisible, and may be claimed again.
    let past = Some(Utc::now() - Duration::minutes(1));
    assert!(ledger
        .claim("send#u-1", "c#t2", &json!({}), past)
        .await
        .unwrap());
    assert_eq!(ledger.get("send#u-1", "c#t2").await.unwrap(), None);
    assert!(ledger
        .claim("send#u-1", "c#t2", &json!({"again": true}), later)
        .await
        .unwrap());
    assert_eq!(
        ledger.get("send#u-1", "c#t2").await.unwrap().unwrap()["again"],
        true
    );

    // Released claims can be taken again; reserved attribute names are refused.
    ledger.delete("send#u-1", "c#t1").await.unwrap();
    assert!(ledger
        .claim("send#u-1", "c#t1", &json!({}), later)
        .await
        .unwrap());
    let err = ledger
        .claim("send#u-1", "c#t3", &json!({"pk": "x"}), None)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn counters_stop_at_their_limit() {
    let ledger = ledger().await;
    let expiry = Some(Utc::now() + Duration::days(2));
    let mut granted = 0;
    for _ in 0..5 {
        if ledger
            .increment_below("cap#u-1", "all#2026-11-23", 3, expiry)
            .await
            .unwrap()
        {
            granted += 1;
        }
    }
    assert_eq!(granted, 3);
    assert_eq!(count(&ledger, "cap#u-1", "all#2026-11-23").await, 3);
    assert!(!ledger
        .increment_below("cap#u-1", "zero", 0, None)
        .await
        .unwrap());
}

/// What the global send rate relies on: invocations taking slots of one second at once never
/// pass the limit together, and no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_grant_exactly_the_limit() {
    let ledger = ledger().await;
    let expiry = Some(Utc::now() + Duration::hours(1));
    let tries = (0..40).map(|_| ledger.increment_below("rate#1795169400", "email", 25, expiry));
    let granted = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.expect("increment"))
        .filter(|taken| *taken)
        .count();
    assert_eq!(granted, 25);
    assert_eq!(count(&ledger, "rate#1795169400", "email").await, 25);
}

/// A counter's stored count.
async fn count(ledger: &DynamoLedger, pk: &str, sk: &str) -> serde_json::Value {
    let counter = ledger.get(pk, sk).await.unwrap().expect("the counter");
    counter["count"].clone()
}

#[tokio::test]
async fn queries_return_the_prefix_in_order_across_pages() {
    let ledger = ledger().await;
    // Large attributes push the result past one 1 MB page.
    let filler = "x".repeat(100_000);
    for i in 0..15 {
        let attrs = json!({"i": i, "filler": filler});
        assert!(ledger
            .claim(
                "timer#2026-11-23T12:00",
                &format!("u-{i:02}#cart#x"),
                &attrs,
                None
            )
            .await
            .unwrap());
    }
    ledger
        .claim("timer#2026-11-23T12:00", "v-1#cart#x", &json!({}), None)
        .await
        .unwrap();
    let rows = ledger.query("timer#2026-11-23T12:00", "u-").await.unwrap();
    assert_eq!(rows.len(), 15);
    assert_eq!(rows[0].0, "u-00#cart#x");
    assert_eq!(rows[14].1["i"], 14);
    assert_eq!(
        ledger
            .query("timer#2026-11-23T12:00", "")
            .await
            .unwrap()
            .len(),
        16
    );
    assert!(ledger
        .query("timer#2026-11-23T12:01", "")
        .await
        .unwrap()
        .is_empty());
}
