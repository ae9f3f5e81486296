//! End to end through the local pipeline wired from template.yaml (ember-local as a library):
//! HTTP API -> Kinesis -> enrich -> EventBridge -> email (+ the sweeper on the event-time
//! clock), against the emulator. Replays events/pipeline/small.jsonl and checks the profiles
//! in DynamoDB, the segment and cart events on the bus, and the emails the emulator sent.
//! small.jsonl starts with backfilled history: a repeat customer whose last visit lies ~40
//! days before the rest, so the scheduled re-evaluation (on the event-time clock) flags them
//! churn_risk and the churn_winback email goes out.

use std::time::Duration;

use ember_local::replay::read_jsonl;
use ember_local::{replay, Pipeline};
use ember_tests::emulator::{workspace_root, Aws};
use ember_tests::local::start_pipeline;
use serde_json::Value;

/// The trace u-heat's heat preference was posted with, the one its `high_heat_lover` entry
/// carried on the bus, and the one its heat_match send record keeps.
async fn heat_trace(
    aws: &Aws,
    p: &Pipeline,
    entered: &[Value],
) -> (String, Option<String>, Option<String>) {
    use ember_core::ports::Ledger;
    let entry = entered
        .iter()
        .find(|e| {
            e["detail"]["profile_id"] == "u-heat" && e["detail"]["segment"] == "high_heat_lover"
        })
        .expect("u-heat entered high_heat_lover");
    let cause = entry["detail"]["cause_event_id"].as_str().expect("a cause");
    let posted = p.activity.posted_trace.lock().unwrap()[cause].clone();
    let on_bus = entry["detail"]["trace"].as_str().map(str::to_owned);
    let ledger = ember_aws::ledger::DynamoLedger::new(
        aws.dynamodb.clone(),
        p.name_of("LedgerTable").expect("ledger table"),
    );
    let sk = format!(
        "heat_match#{}",
        entry["detail"]["id"].as_str().unwrap_or_default()
    );
    let record = ledger
        .get(&ember_email::send_record::send_pk("u-heat"), &sk)
        .await
        .expect("read the send record");
    let on_record = record.and_then(|r| r["trace"].as_str().map(str::to_owned));
    (posted, on_bus, on_record)
}

fn bus_events(p: &Pipeline, detail_type: &str) -> Vec<Value> {
    p.bus_events
        .lock()
        .map(|v| {
            v.iter()
                .filter(|e| e["detail-type"] == detail_type)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_template_pipeline_turns_events_into_profiles_segments_and_emails() {
    let aws = Aws::from_env().await.expect("emulator environment");
    let root = workspace_root();
    let events = read_jsonl(&root.join("events/pipeline/small.jsonl")).expect("sample");
    let (pipeline, ropts) = start_pipeline(&aws, &events)
        .await
        .expect("pipeline starts");
    let result = replay(&pipeline, events, &ropts, None).await;
    let table = pipeline.name_of("ProfilesTable").expect("profiles table");
    let cart_updates = bus_events(&pipeline, "CartUpdated");
    let entered = bus_events(&pipeline, "SegmentEntered");
    let profiles = (
        aws.get_profile(&table, "u-cart").await,
        aws.get_profile(&table, "u-buyer").await,
        aws.get_profile(&table, "u-heat").await,
        aws.get_profile(&table, "u-churn").await,
    );
    // The email's one-click unsubscribe link works against the same pipeline: the API puts a
    // consent change on the stream and enrich folds it into the profile.
    let link = result.as_ref().ok().and_then(|s| {
        s.emails
            .iter()
            .find(|e| e.to.iter().any(|t| t == "cart.shopper@example.com"))
            .and_then(|e| e.html.as_deref())
            .and_then(unsubscribe_link)
    });
    let unsubscribed = match &link {
        Some(url) => Some(one_click(url).await),
        None => None,
    };
    // An unknown path reaches the api function through the template's catch-all route and
    // gets its JSON 404 (not API Gateway's own answer).
    let unknown = match &link {
        Some(url) => {
            let base = &url[..url.find("/v1/").expect("api path")];
            Some(get(&format!("{base}/v1/nothing-here")).await)
        }
        None => None,
    };
    pipeline.drain(Duration::from_secs(30)).await;
    let after_unsubscribe = aws.get_profile(&table, "u-cart").await;
    let traced = heat_trace(&aws, &pipeline, &entered).await;
    let metrics = pipeline.metrics.clone().expect("collected");
    pipeline.stop(true).await;
    let summary = result.expect("replay");
    println!("{summary}");

    // The API refused exactly the malformed event, with a 4xx reason.
    assert!(summary.drained, "the pipeline did not drain");
    assert_eq!(summary.events, 20);
    assert_eq!(summary.accepted, 19);
    assert_eq!(summary.rejected.len(), 1, "{:?}", summary.rejected);
    assert_eq!(summary.rejected[0].event_id, "small-015");
    assert!((400..500).contains(&summary.rejected[0].status));
    assert_eq!(
        summary.kinesis_records - summary.kinesis_assignments,
        19,
        "every accepted event went through the stream once"
    );
    // Each email (and each holdout) recorded its campaign group once, for the reports.
    let recipients: u64 = summary
        .reports
        .iter()
        .flat_map(|r| &r.groups)
        .map(|g| g.recipients)
        .sum();
    assert_eq!(summary.kinesis_assignments, recipients);
    assert!(recipients >= summary.emails.len() as u64);
    assert_eq!(summary.kinesis_on_failure, 0);
    assert_eq!(summary.queues.get("DeadLetterQueue"), Some(&0));

    // Profiles folded by enrich.
    assert_eq!(summary.profiles, 5);
    let (cart, buyer, heat, churner) = profiles;
    let cart = cart.expect("read").expect("u-cart profile");
    assert_eq!(cart.email(), Some("cart.shopper@example.com"));
    assert!(cart.has_consent("email"));
    assert_eq!(cart.cart.items.get("SAU-005").map(|i| i.quantity), Some(1));
    let buyer = buyer.expect("read").expect("u-buyer profile");
    assert_eq!(buyer.purchase_count, 1);
    assert_eq!(buyer.purchase_total_minor(), 63_600);
    let heat = heat.expect("read").expect("u-heat profile");
    assert!(heat.heat_shu().is_some_and(|h| h >= 50_000.0));
    // The churner: no event since late September; the scheduled re-evaluation flagged them.
    let churner = churner.expect("read").expect("u-churn profile");
    assert_eq!(churner.purchase_count, 2);
    assert!(
        churner.segments.contains("churn_risk"),
        "{:?}",
        churner.segments
    );

    // Segment and cart events on the bus.
    let entered_by = |who: &str, seg: &str| {
        entered
            .iter()
            .any(|e| e["detail"]["profile_id"] == who && e["detail"]["segment"] == seg)
    };
    assert!(entered_by("u-heat", "high_heat_lover"), "{entered:?}");
    assert!(entered_by("u-buyer", "big_spender"), "{entered:?}");
    assert!(entered_by("u-churn", "churn_risk"), "{entered:?}");
    assert_eq!(
        entered
            .iter()
            .filter(|e| e["detail"]["segment"] == "churn_risk")
            .count(),
        1,
        "only the churner, once: {entered:?}"
    );
    assert!(cart_updates
        .iter()
        .any(|e| e["detail"]["profile_id"] == "u-cart" && e["detail"]["item_count"] == 1));

    // Emails read back from the emulator: the abandoned cart is mailed once the 1 h delay has
    // passed on the event-time clock; the buyer (checked out) and the shopper without consent
    // are not mailed.
    let to = |addr: &str| {
        summary
            .emails
            .iter()
            .filter(|e| e.to.iter().any(|t| t == addr))
            .count()
    };
    assert_eq!(to("cart.shopper@example.com"), 1, "{:#?}", summary.emails);
    assert_eq!(to("buyer@example.com"), 0);
    assert_eq!(to("no.consent@example.com"), 0);
    // The heat_match email (segment_entered high_heat_lover), once, with bottles at their heat.
    assert_eq!(to("heat.lover@example.com"), 1, "{:#?}", summary.emails);
    let mail_to = |addr: &str| {
        let mut found = summary
            .emails
            .iter()
            .filter(|e| e.to.iter().any(|t| t == addr));
        found.next().unwrap_or_else(|| panic!("no email to {addr}"))
    };
    let heat_mail = mail_to("heat.lover@example.com");
    assert_eq!(
        heat_mail.subject,
        "Hiro, sauces matched to your heat level (extra-hot, about 900,000 SHU)"
    );
    assert!(
        heat_mail
            .html
            .as_deref()
            .unwrap_or_default()
            .contains("Matched to your heat level"),
        "{:?}",
        heat_mail.html
    );
    // The churn_winback email (segment_entered churn_risk, no delay), once.
    assert_eq!(to("churn.shopper@example.com"), 1, "{:#?}", summary.emails);
    let winback = mail_to("churn.shopper@example.com");
    assert!(
        winback.subject.contains("miss you") && winback.subject.contains("15%"),
        "churn_winback subject: {}",
        winback.subject
    );
    assert!(
        winback
            .html
            .as_deref()
            .unwrap_or_default()
            .contains("COMEBACK15"),
        "the winback offer code is in the email: {:?}",
        winback.html
    );
    let mail = summary
        .emails
        .iter()
        .find(|e| e.to.iter().any(|t| t == "cart.shopper@example.com"))
        .expect("cart email");
    let html = mail.html.as_deref().unwrap_or_default();
    assert!(
        html.contains("Ghost Pepper Reserve"),
        "the email shows the abandoned product: {html}"
    );
    // The trace the replay posted u-heat's heat preference with (a `traceparent` header)
    // reached the email function: on the segment event, and kept on the send record.
    let (posted, on_bus, on_send_record) = traced;
    assert!(posted.starts_with("00-"), "{posted}");
    assert_eq!(on_bus.as_deref(), Some(posted.as_str()));
    assert_eq!(on_send_record.as_deref(), Some(posted.as_str()));

    // The metrics the functions wrote (EMF lines) agree with what happened.
    assert_eq!(metrics.sum("EmailsSent", &[]), summary.emails.len() as f64);
    assert_eq!(
        metrics.sum("EventsAccepted", &[]),
        19.0 + 1.0,
        "19 + the unsubscribe"
    );
    assert_eq!(metrics.sum("EventsRefused", &[("Reason", "invalid")]), 1.0);
    assert_eq!(
        metrics.sum("SegmentEntered", &[("Segment", "churn_risk")]),
        1.0
    );
    let latencies = metrics.values("IngestToEmailLatency");
    assert!(
        !latencies.is_empty() && latencies.iter().all(|ms| (0.0..60_000.0).contains(ms)),
        "{latencies:?}"
    );
    assert!(summary.scheduled_runs.values().all(|n| *n > 0));
    assert_eq!(
        summary.scheduled_runs.keys().collect::<Vec<_>>(),
        [
            "ArchiveEraserFunction",
            "ReevaluateFunction",
            "SweeperFunction"
        ],
        "{:?}",
        summary.scheduled_runs
    );
    let link = link.expect("the email has an unsubscribe link");
    assert!(link.starts_with("http://127.0.0.1:"), "{link}");
    let status = unsubscribed.expect("unsubscribe request");
    assert!(
        (200..300).contains(&status),
        "one-click unsubscribe answered {status}"
    );
    let (status, body) = unknown.expect("unknown-path request");
    assert_eq!(status, 404, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
    assert_eq!(body["error"], "not_found", "{body}");
    let after = after_unsubscribe.expect("read").expect("u-cart profile");
    assert!(
        !after.has_consent("email"),
        "consent withdrawn after one-click unsubscribe"
    );
}

/// The unsubscribe URL in an email's HTML (minijinja escapes `/` as `&#x2f;`).
fn unsubscribe_link(html: &str) -> Option<String> {
    let unescaped = html.replace("&#x2f;", "/").replace("&amp;", "&");
    let at = unescaped.find("/v1/unsubscribe?token=")?;
    let start = unescaped[..at].rfind("http")?;
    let end = unescaped[at..].find(['"', '<', ' ', '\''])? + at;
    Some(unescaped[start..end].to_owned())
}

/// RFC 8058 one-click unsubscribe: POST `List-Unsubscribe=One-Click` to the link.
async fn one_click(url: &str) -> u16 {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"List-Unsubscribe=One-Click")))
        .expect("request");
    client
        .request(req)
        .await
        .expect("unsubscribe POST")
        .status()
        .as_u16()
}

/// GET `url`: status and body.
async fn get(url: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().expect("url");
    let response = client.get(uri).await.expect("GET");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
