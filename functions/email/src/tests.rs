//! Flow tests: fixtures from `events/` through the handler, sweeper and feedback with
//! in-memory ports.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Duration, Utc};
use ember_aws::sesv2::STAGE_RECIPIENT;
use ember_core::ports::{Ledger, PortError, SendError};
use ember_core::profile::{CartItem, Consent, Profile, Stamped};
use ember_core::unsubscribe::{self, suppression_key, Keys, SUPPRESSION_PK};
use serde_json::{json, Value};

use crate::feedback::{Feedback, FeedbackOutcome};
use crate::handler::{Email, MessageSettings, Outcome, Skip};
use crate::send_record::send_pk;
use crate::testkit::{MemoryLedger, MemoryProfiles, MemoryStream, RecordingMailer};
use crate::timers;
use ember_core::memory::MemoryMetrics;

const CHURN: &str = include_str!("../../../events/eventbridge/segment-entered-churn-risk.json");
const CART: &str = include_str!("../../../events/eventbridge/cart-updated.json");
const SCHEDULE: &str = include_str!("../../../events/eventbridge/scheduled-sweep.json");

type TestEmail = Email<MemoryProfiles, MemoryLedger, RecordingMailer, MemoryStream>;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn event(json: &str) -> EventBridgeEvent<Value> {
    serde_json::from_str(json).unwrap()
}

fn keys() -> Keys {
    Keys::parse("test-secret-0123456789abcdef").unwrap()
}

fn email_with(profile: Profile, campaigns_yaml: Option<&str>) -> TestEmail {
    let mut doc = crate::compiled::embedded_doc();
    if let Some(yaml) = campaigns_yaml {
        doc.campaigns = serde_json::from_str(&ember_build::json_of_yaml(yaml).unwrap()).unwrap();
    }
    let compiled = crate::compiled::compile(&doc).unwrap();
    Email {
        profiles: MemoryProfiles::with(profile),
        ledger: MemoryLedger::default(),
        mailer: RecordingMailer::default(),
        stream: MemoryStream::default(),
        config: ember_core::config::ConfigSource::fixed(compiled),
        settings: MessageSettings {
            sender: "Ember Hot Sauce Co. <shop@shop.example>".into(),
            public_base_url: "https://shop.example".into(),
            unsubscribe_keys: keys(),
        },
        send_rate: crate::send_rate::SendRate::UNLIMITED,
        metrics: MemoryMetrics::default().metrics(),
    }
}

/// u-1001: a repeat customer gone quiet (churn_risk), with consent and an address.
fn churner() -> Profile {
    let mut p = Profile::new("u-1001");
    p.version = 42;
    p.email = Some(Stamped::undated("ana@example.com"));
    p.name = Some(Stamped::undated("Ana López"));
    p.purchase_count = 3;
    p.last_seen = Some(at("2026-10-01T10:00:00Z"));
    p.consent.insert(
        "email".into(),
        Consent {
            granted: true,
            at: Some(at("2026-01-01T00:00:00Z")),
        },
    );
    p
}

/// u-1001 with the cart of the CartUpdated fixture.
fn cart_holder() -> Profile {
    let mut p = churner();
    p.purchase_count = 0;
    p.last_seen = Some(at("2026-11-20T14:10:00Z"));
    p.cart.currency = Some("USD".into());
    p.cart.updated_at = Some(at("2026-11-20T14:10:00.250Z"));
    for (sku, name, qty, price) in [
        ("sauce-dave-insanity", "Dave's Insanity Sauce", 1, 1199),
        ("sauce-sriracha", "Huy Fong Sriracha", 2, 849),
    ] {
        p.cart.items.insert(
            sku.into(),
            CartItem {
                name: name.into(),
                quantity: qty,
                unit_price_minor: price,
                url: None,
            },
        );
    }
    p
}

/// u-1001's email function whose first SES call fails with `error`.
fn failing_mailer(error: SendError) -> TestEmail {
    let email = email_with(churner(), None);
    email.mailer.fail_next(error);
    email
}

/// Asserts that each outcome was skipped, for the reasons given in order.
#[track_caller]
fn assert_skipped(outcomes: &[Outcome], reasons: &[Skip]) {
    let got: Vec<Option<Skip>> = outcomes.iter().map(Outcome::skipped).collect();
    let want: Vec<Option<Skip>> = reasons.iter().copied().map(Some).collect();
    assert_eq!(got, want, "{outcomes:?}");
}

#[tokio::test]
async fn segment_event_sends_one_personalised_email_with_one_click_unsubscribe() {
    let email = email_with(churner(), None);
    let now = at("2026-11-20T14:05:10Z");
    let out = email.handle(&event(CHURN), now).await.unwrap();
    assert!(
        matches!(&out[..], [Outcome::Sent { campaign, .. }] if campaign == "churn_winback"),
        "{out:?}"
    );
    let msg = email.mailer.last();
    assert_eq!(msg.to, "ana@example.com");
    assert_eq!(msg.subject, "Ana, we miss you: 15% off your next bottle");
    assert!(msg.text.contains("COMEBACK15") && msg.html.contains("COMEBACK15"));
    let header = |n: &str| {
        msg.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    let link = header("List-Unsubscribe");
    let token = link
        .strip_prefix("<https://shop.example/v1/unsubscribe?token=")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap();
    let claims = unsubscribe::verify(&keys(), token).unwrap();
    assert_eq!(
        (claims.profile_id.as_str(), claims.campaign.as_str()),
        ("u-1001", "churn_winback")
    );
    assert!(msg
        .tags
        .contains(&("campaign".into(), "churn_winback".into())));
    assert!(msg.tags.contains(&("profile_id".into(), "u-1001".into())));

    // The same event again (EventBridge at-least-once, Lambda retry): no second email.
    let again = email
        .handle(&event(CHURN), now + Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        matches!(&again[..], [Outcome::Duplicate { .. }]),
        "{again:?}"
    );
    assert_eq!(email.mailer.count(), 1);
    // The built-in configuration is version 0, named in a header and in the send record.
    assert_eq!(header(crate::handler::CONFIG_VERSION_HEADER), "0");
    let sends = email.ledger.query("send#u-1001", "churn_winback#").await;
    assert_eq!(sends.unwrap()[0].1["config_version"], 0);
}

#[tokio::test]
async fn an_event_of_a_version_not_read_yet_makes_the_function_read_it() {
    use ember_core::config::{ConfigSource, ConfigStore};
    let now = at("2026-11-20T14:05:10Z");
    let store = ConfigStore::new(std::sync::Arc::new(MemoryLedger::default()));
    let mut email = email_with(churner(), None);
    // Cached for an hour, as deployed: a publish alone is seen only after the TTL.
    email.config = ConfigSource::stored(
        store.clone(),
        std::time::Duration::from_secs(3600),
        crate::compiled::builtin().unwrap(),
        Box::new(crate::compiled::compile),
    );
    assert_eq!(email.config().await.unwrap().version, 0);
    let mut doc = crate::compiled::embedded_doc();
    let campaigns = doc.campaigns["campaigns"].as_array_mut().unwrap();
    campaigns.retain(|c| c["name"] != "churn_winback");
    campaigns.push(
        serde_json::json!({"name": "winback_v2", "trigger": "segment_entered",
        "segment": "churn_risk", "template": "churn_winback", "daily_cap": 1,
        "offer": {"code": "BACK20", "percent": 20, "valid_days": 7}}),
    );
    store.publish(&doc, 0, "", now).await.unwrap();
    let mut decided_by_1 = event(CHURN);
    decided_by_1.detail["config_version"] = 1.into();
    let out = email.handle(&decided_by_1, now).await.unwrap();
    assert!(
        matches!(&out[..], [Outcome::Sent { campaign, .. }] if campaign == "winback_v2"),
        "{out:?}"
    );
    assert!(email.mailer.last().text.contains("BACK20"));
}

#[tokio::test]
async fn backfill_entries_send_only_for_campaigns_that_opt_in() {
    let now = at("2026-11-20T14:05:10Z");
    let mut backfill = event(CHURN);
    backfill.detail["backfill"] = true.into();
    let skipping = email_with(churner(), None);
    let out = skipping.handle(&backfill, now).await.unwrap();
    assert_skipped(&out, &[Skip::Backfill]);
    assert_eq!(skipping.mailer.count(), 0);

    let opted_in = crate::campaign::SOURCE.replace(
        "    offer: { code: COMEBACK15, percent: 15, valid_days: 14 }",
        "    offer: { code: COMEBACK15, percent: 15, valid_days: 14 }\n    on_backfill: send",
    );
    assert!(opted_in.contains("on_backfill: send"));
    let sending = email_with(churner(), Some(&opted_in));
    let out = sending.handle(&backfill, now).await.unwrap();
    assert!(out.iter().any(Outcome::is_sent), "{out:?}");
    assert_eq!(sending.mailer.count(), 1);
}

#[tokio::test]
async fn no_send_without_address_consent_or_when_suppressed() {
    let now = at("2026-11-20T14:05:10Z");
    let mut no_consent = churner();
    no_consent.consent.clear();
    let mut no_address = churner();
    no_address.email = Some(Stamped::undated("  "));
    let mut flagged = churner();
    flagged.email_status.suppressed = Some("complaint".into());
    for (profile, reason) in [
        (no_consent, Skip::NoConsent),
        (no_address, Skip::NoAddress),
        (flagged, Skip::Suppressed),
    ] {
        let email = email_with(profile, None);
        let out = email.handle(&event(CHURN), now).await.unwrap();
        assert!(
            matches!(&out[..], [Outcome::Skipped { reason: r, .. }] if *r == reason),
            "{out:?}"
        );
        assert_eq!(email.mailer.count(), 0);
    }
    // Suppressed by the hashed address in the ledger (bounce feedback, erasure).
    let email = email_with(churner(), None);
    email
        .ledger
        .claim(
            SUPPRESSION_PK,
            &suppression_key(" ANA@example.com"),
            &Value::Null,
            None,
        )
        .await
        .unwrap();
    let out = email.handle(&event(CHURN), now).await.unwrap();
    assert_skipped(&out, &[Skip::Suppressed]);
    assert_eq!(email.mailer.count(), 0);
}

#[tokio::test]
async fn frequency_caps_hold_per_campaign_and_globally() {
    let now = at("2026-11-20T14:05:10Z");
    let email = email_with(churner(), None);
    email.handle(&event(CHURN), now).await.unwrap();
    // A second trigger of the same campaign the same day: capped (daily_cap 1).
    let second = CHURN.replace("churn_risk:entered:42", "churn_risk:entered:50");
    let out = email
        .handle(&event(&second), now + Duration::hours(1))
        .await
        .unwrap();
    assert_skipped(&out, &[Skip::CampaignCap]);
    // The next (user-local) day it may go again.
    let out = email
        .handle(&event(&second), now + Duration::days(1))
        .await
        .unwrap();
    assert!(out[0].is_sent(), "{out:?}");

    // Global cap 1: a cart email after the win-back the same day is blocked.
    let yaml = crate::campaign::SOURCE.replace("global_daily_cap: 2", "global_daily_cap: 1");
    let mut p = cart_holder();
    p.purchase_count = 3;
    p.last_seen = Some(at("2026-10-01T10:00:00Z"));
    let email = email_with(p, Some(&yaml));
    assert!(email.handle(&event(CHURN), now).await.unwrap()[0].is_sent());
    let sweep = timers::sweep(&email, now).await.unwrap();
    assert!(sweep.outcomes.is_empty());
    email.handle(&event(CART), now).await.unwrap();
    let sweep = timers::sweep(&email, at("2026-11-20T15:12:00Z"))
        .await
        .unwrap();
    assert_skipped(&sweep.outcomes, &[Skip::GlobalCap]);
    assert_eq!(email.mailer.count(), 1);
}

#[tokio::test]
async fn quiet_hours_defer_to_a_timer_that_the_sweeper_fires() {
    let mut p = churner();
    p.timezone = Some(Stamped::undated("Europe/Berlin"));
    let email = email_with(p, None);
    // 21:30 UTC = 22:30 in Berlin: inside 21:00–08:00.
    let late = at("2026-11-20T21:30:00Z");
    let out = email.handle(&event(CHURN), late).await.unwrap();
    let until = at("2026-11-21T07:00:00Z");
    assert_eq!(
        out,
        vec![Outcome::Deferred {
            campaign: "churn_winback".into(),
            until,
            reason: "quiet_hours",
        }]
    );
    assert_eq!(email.mailer.count(), 0);
    assert_eq!(email.ledger.keys("timer#").len(), 1);
    assert_eq!(email.ledger.keys("timer#")[0].0, "timer#2026-11-21T07:00");
    assert_eq!(
        email.ledger.keys("timer-index#"),
        vec![(
            "timer-index#2026-11-21T07".to_owned(),
            "2026-11-21T07:00".to_owned()
        )]
    );
    // A replay during the night writes no second timer and sends nothing.
    email
        .handle(&event(CHURN), late + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(email.ledger.keys("timer#").len(), 1);

    // Sweeps during the night fire nothing; the first one after 08:00 Berlin sends.
    let night = timers::sweep(&email, at("2026-11-21T05:00:00Z"))
        .await
        .unwrap();
    assert!(night.outcomes.is_empty());
    // First run: the hour before 05:00, one index read, no bucket.
    assert_eq!((night.index_reads, night.buckets), (1, 0));
    let morning = timers::sweep(&email, at("2026-11-21T07:01:30Z"))
        .await
        .unwrap();
    assert!(
        matches!(&morning.outcomes[..], [Outcome::Sent { .. }]),
        "{morning:?}"
    );
    // Hours 05, 06 and 07 of the index; only the marked minute is read.
    assert_eq!((morning.index_reads, morning.buckets), (3, 1));
    assert_eq!(email.mailer.count(), 1);
    assert!(email.ledger.keys("timer#").is_empty());
}

#[tokio::test]
async fn a_late_sweeper_reads_the_index_per_hour_and_never_beyond_the_timer_ttl() {
    let mut p = churner();
    p.timezone = Some(Stamped::undated("Europe/Berlin"));
    let email = email_with(p, None);
    // Deferred to 07:00 UTC by quiet hours; the cursor is set at 05:00.
    email
        .handle(&event(CHURN), at("2026-11-20T21:30:00Z"))
        .await
        .unwrap();
    timers::sweep(&email, at("2026-11-21T05:00:00Z"))
        .await
        .unwrap();
    // The sweeper was down for two days: 50 hours of index, one bucket, the email goes out.
    let late = timers::sweep(&email, at("2026-11-23T07:00:00Z"))
        .await
        .unwrap();
    assert_eq!((late.index_reads, late.buckets, late.timers), (50, 1, 1));
    assert!(
        matches!(&late.outcomes[..], [Outcome::Sent { .. }]),
        "{late:?}"
    );
    assert_eq!(
        late.next_bucket,
        Some(at("2026-11-23T07:00:00Z")),
        "the cursor moved to now"
    );
    // Down for a month: only the last TIMER_TTL_DAYS are read (older timers have expired).
    let month = timers::sweep(&email, at("2026-12-23T07:00:00Z"))
        .await
        .unwrap();
    assert_eq!(month.index_reads, timers::TIMER_TTL_DAYS * 24);
    assert_eq!(email.mailer.count(), 1);
}

#[tokio::test]
async fn cart_abandonment_waits_for_the_delay_and_is_cancelled_by_checkout() {
    let email = email_with(cart_holder(), None);
    let t0 = at("2026-11-20T14:10:02Z");
    let out = email.handle(&event(CART), t0).await.unwrap();
    assert_eq!(
        out,
        vec![Outcome::Scheduled {
            campaign: "cart_abandonment".into(),
            due: at("2026-11-20T15:10:00.250Z")
        }]
    );
    // Before the delay: nothing.
    let early = timers::sweep(&email, at("2026-11-20T14:40:00Z"))
        .await
        .unwrap();
    assert!(early.outcomes.is_empty());
    assert_eq!(email.mailer.count(), 0);
    // After the delay: one email with the cart, formatted.
    let due = timers::sweep(&email, at("2026-11-20T15:11:05Z"))
        .await
        .unwrap();
    assert!(
        matches!(&due.outcomes[..], [Outcome::Sent { .. }]),
        "{due:?}"
    );
    let msg = email.mailer.last();
    assert_eq!(
        msg.subject,
        "Ana, your Huy Fong Sriracha and more are still waiting"
    );
    assert!(
        msg.text.contains("Huy Fong Sriracha x 2: $16.98"),
        "{}",
        msg.text
    );
    assert!(msg.text.contains("Total: $28.97"));
    // The cart event replayed later schedules a timer whose send is a duplicate.
    email
        .handle(&event(CART), at("2026-11-20T15:20:00Z"))
        .await
        .unwrap();
    let replay = timers::sweep(&email, at("2026-11-20T15:25:00Z"))
        .await
        .unwrap();
    assert!(
        matches!(&replay.outcomes[..], [Outcome::Duplicate { .. }]),
        "{replay:?}"
    );
    assert_eq!(email.mailer.count(), 1);

    // Before the timer fires, a checkout cancels it; a later cart change supersedes it (the
    // change schedules its own timer).
    let checkout: fn(&mut Profile) = |p| p.last_checkout_at = Some(at("2026-11-20T14:20:00Z"));
    let cart_change: fn(&mut Profile) = |p| p.cart.updated_at = Some(at("2026-11-20T14:30:00Z"));
    for (change, reason) in [
        (checkout, Skip::NoLongerApplies),
        (cart_change, Skip::CartChanged),
    ] {
        let email = email_with(cart_holder(), None);
        email.handle(&event(CART), t0).await.unwrap();
        let mut p = cart_holder();
        change(&mut p);
        email.profiles.set(p);
        let due = timers::sweep(&email, at("2026-11-20T15:11:05Z"))
            .await
            .unwrap();
        assert_skipped(&due.outcomes, &[reason]);
        assert_eq!(email.mailer.count(), 0);
        if reason == Skip::NoLongerApplies {
            assert!(timers::cancelled(&due.outcomes[0]));
            assert!(email.ledger.keys("timer#").is_empty());
        }
    }
}

#[tokio::test]
async fn each_invocation_writes_its_sends_skips_and_latency_as_emf() {
    let sink = MemoryMetrics::default();
    let mut email = email_with(churner(), None);
    email.metrics = sink.metrics();
    let now = at("2026-11-20T14:05:10Z");
    // The cause arrived on the stream 250 ms before the email function's wall clock reads.
    let mut entered = event(CHURN);
    let arrived = Utc::now() - Duration::milliseconds(250);
    entered.detail["ingested_at"] = json!(arrived.to_rfc3339());
    assert!(email.handle(&entered, now).await.unwrap()[0].is_sent());
    // The same trigger again the next hour: a duplicate, nothing counted.
    email
        .handle(&entered, now + Duration::hours(1))
        .await
        .unwrap();
    // A second trigger the same day: capped.
    let second = CHURN.replace("churn_risk:entered:42", "churn_risk:entered:50");
    email.handle(&event(&second), now).await.unwrap();
    assert_eq!(
        sink.sum("EmailsSent", &[("Campaign", "churn_winback")]),
        1.0
    );
    assert_eq!(
        sink.sum("EmailsSkipped", &[("Reason", "campaign_cap")]),
        1.0
    );
    let latencies = sink.values("IngestToEmailLatency");
    assert_eq!(latencies.len(), 1, "only the send with a known arrival");
    assert!((250.0..5_000.0).contains(&latencies[0]), "{latencies:?}");
    let latency_line = sink
        .documents()
        .into_iter()
        .find(|d| d.get("IngestToEmailLatency").is_some())
        .unwrap();
    let definitions = latency_line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap();
    assert!(
        definitions.contains(
            &json!({"Name": "IngestToEmailLatency", "Unit": "Milliseconds", "StorageResolution": 1})
        ),
        "{definitions:?}"
    );

    // Quiet hours: deferred, counted under its reason.
    let mut p = churner();
    p.timezone = Some(Stamped::undated("Europe/Berlin"));
    let mut email = email_with(p, None);
    email.metrics = sink.metrics();
    email
        .handle(&event(CHURN), at("2026-11-20T21:30:00Z"))
        .await
        .unwrap();
    assert_eq!(sink.sum("EmailsSkipped", &[("Reason", "quiet_hours")]), 1.0);
    assert_eq!(sink.sum("EmailsSkipped", &[]), 2.0);

    // SES feedback by kind.
    let mut fb = feedback();
    fb.metrics = sink.metrics();
    for file in ["eventbridge-bounce.json", "sns-bounce.json"] {
        fb.handle(&fixture(file), at("2026-11-20T16:00:00Z"))
            .await
            .unwrap();
    }
    assert_eq!(sink.sum("SesFeedback", &[("Kind", "bounce")]), 2.0);
}

#[tokio::test]
async fn transient_ses_failure_releases_the_claim_and_the_retry_sends_once() {
    let email = failing_mailer(SendError::NotSent(PortError::Transient {
        stage: "ses.send",
        reason: "TooManyRequestsException".into(),
    }));
    let now = at("2026-11-20T14:05:10Z");
    let err = email.handle(&event(CHURN), now).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(email
        .ledger
        .get(
            &send_pk("u-1001"),
            "churn_winback#u-1001:churn_risk:entered:42"
        )
        .await
        .unwrap()
        .is_none());
    // Lambda retries the event: sent once, and the cap (1/day) was charged only once.
    let out = email
        .handle(&event(CHURN), now + Duration::minutes(1))
        .await
        .unwrap();
    assert!(out[0].is_sent(), "{out:?}");
    assert_eq!(email.mailer.count(), 1);
}

#[tokio::test]
async fn rejected_recipient_is_suppressed_and_reported_not_retried() {
    let email = failing_mailer(SendError::NotSent(PortError::Permanent {
        stage: STAGE_RECIPIENT,
        reason: "MessageRejected".into(),
    }));
    let now = at("2026-11-20T14:05:10Z");
    let out = email.handle(&event(CHURN), now).await.unwrap();
    assert_skipped(&out, &[Skip::Rejected]);
    assert!(email
        .ledger
        .get(SUPPRESSION_PK, &suppression_key("ana@example.com"))
        .await
        .unwrap()
        .is_some());
    let events = email.stream.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "email_suppressed");
    assert_eq!(events[0]["user_id"], "u-1001");
    assert_eq!(events[0]["payload"]["reason"], "invalid_address");
    // The envelope passes Ember's own schema validation (enrich would accept it).
    let registry = ember_core::schema::Registry::embedded().unwrap();
    registry.validate(&events[0]).unwrap();
    // A replay neither sends nor reports again.
    email.handle(&event(CHURN), now).await.unwrap();
    assert_eq!(email.mailer.count(), 0);
}

#[tokio::test]
async fn unknown_detail_types_are_ignored_and_broken_details_rejected() {
    let email = email_with(churner(), None);
    let other = CHURN.replace("\"SegmentEntered\"", "\"SomethingElse\"");
    let out = email.handle(&event(&other), Utc::now()).await.unwrap();
    assert!(matches!(&out[..], [Outcome::Ignored { .. }]));
    let broken = CHURN.replace("\"profile_id\": \"u-1001\",", "");
    let err = email.handle(&event(&broken), Utc::now()).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    // The schedule fixture runs the sweeper.
    let out = email
        .handle(&event(SCHEDULE), at("2026-11-20T15:11:00Z"))
        .await
        .unwrap();
    assert!(out.is_empty());
}

fn feedback() -> Feedback<MemoryLedger, MemoryStream> {
    Feedback {
        ledger: MemoryLedger::default(),
        stream: MemoryStream::default(),
        metrics: MemoryMetrics::default().metrics(),
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../events/ses/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn feedback_maps_ses_events_to_ember_events() {
    let registry = ember_core::schema::Registry::embedded().unwrap();
    let now = at("2026-11-20T16:00:00Z");
    for (file, expected_type, reason) in [
        (
            "eventbridge-bounce.json",
            Some("email_suppressed"),
            Some("hard_bounce"),
        ),
        (
            "sns-bounce.json",
            Some("email_suppressed"),
            Some("hard_bounce"),
        ),
        (
            "eventbridge-complaint.json",
            Some("email_suppressed"),
            Some("complaint"),
        ),
        ("eventbridge-open.json", Some("email_opened"), None),
        ("eventbridge-click.json", Some("email_clicked"), None),
        ("eventbridge-bounce-transient.json", None, None),
        ("eventbridge-delivery.json", None, None),
    ] {
        let fb = feedback();
        let input = fixture(file);
        let out = fb.handle(&input, now).await.unwrap();
        let events = fb.stream.events();
        let suppressed = fb
            .ledger
            .get(SUPPRESSION_PK, &suppression_key("ana@example.com"))
            .await
            .unwrap();
        match expected_type {
            None => {
                assert!(events.is_empty(), "{file}");
                assert!(
                    matches!(&out[..], [FeedbackOutcome::Ignored { .. }]),
                    "{file}: {out:?}"
                );
                assert!(suppressed.is_none(), "{file}");
            }
            Some(t) => {
                assert_eq!(events.len(), 1, "{file}");
                let e = &events[0];
                assert_eq!(e["type"], t, "{file}");
                assert_eq!(e["user_id"], "u-1001");
                registry
                    .validate(e)
                    .unwrap_or_else(|p| panic!("{file}: {p:?}"));
                assert_eq!(suppressed.is_some(), reason.is_some(), "{file}");
                if let Some(r) = reason {
                    assert_eq!(e["payload"]["reason"], r);
                } else {
                    assert_eq!(e["payload"]["campaign"], "cart_abandonment");
                }
                // Deterministic ids: the same SES event twice gives the same Ember event id.
                let again = feedback();
                again
                    .handle(&input, now + Duration::hours(1))
                    .await
                    .unwrap();
                assert_eq!(again.stream.events()[0]["event_id"], e["event_id"]);
            }
        }
    }
    let fb = feedback();
    fb.handle(&fixture("eventbridge-click.json"), now)
        .await
        .unwrap();
    let e = &fb.stream.events()[0];
    assert_eq!(e["payload"]["link"], "https://shop.example/cart");
    assert_eq!(
        e["event_id"],
        "ses-010001936a1b2c3d-4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8-000000-click"
    );
    assert!(fb
        .handle(&serde_json::json!({"hello": 1}), now)
        .await
        .is_err());
}

#[tokio::test]
async fn a_send_record_left_by_a_dead_attempt_is_taken_over_or_recorded_unknown() {
    let now = at("2026-11-20T14:05:10Z");
    let (pk, sk) = (
        send_pk("u-1001"),
        "churn_winback#u-1001:churn_risk:entered:42",
    );
    // An email function whose ledger holds the send record another attempt left behind.
    let left_behind = |state: &str, owner: &str, age_minutes: i64| {
        let record = json!({"campaign": "churn_winback",
               "trigger_id": "u-1001:churn_risk:entered:42", "owner": owner, "state": state,
               "at": (now - Duration::minutes(age_minutes)).to_rfc3339()});
        let (pk, email) = (pk.clone(), email_with(churner(), None));
        async move {
            email.ledger.claim(&pk, sk, &record, None).await.unwrap();
            email
        }
    };
    async fn state(email: &TestEmail, pk: &str, sk: &str) -> serde_json::Value {
        email.ledger.get(pk, sk).await.unwrap().unwrap()["state"].clone()
    }

    // Died before calling SES (claimed, past the lease): taken over and sent.
    let email = left_behind("claimed", "dead", 10).await;
    let out = email.handle(&event(CHURN), now).await.unwrap();
    assert!(out[0].is_sent(), "{out:?}");
    assert_eq!(state(&email, &pk, sk).await, "sent");

    // Died during the SES call (sending, past the lease): unknown, nothing sent.
    let email = left_behind("sending", "dead", 10).await;
    let out = email.handle(&event(CHURN), now).await.unwrap();
    assert!(matches!(&out[..], [Outcome::Unknown { .. }]), "{out:?}");
    assert_eq!(email.mailer.count(), 0);
    assert_eq!(state(&email, &pk, sk).await, "unknown");

    // Another attempt is sending right now: retried later, not reported as a duplicate.
    let email = left_behind("sending", "alive", 1).await;
    let err = email.handle(&event(CHURN), now).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(email.mailer.count(), 0);
}

#[tokio::test]
async fn an_unknown_outcome_is_recorded_and_never_retried() {
    let email = failing_mailer(SendError::OutcomeUnknown("connection reset".into()));
    let now = at("2026-11-20T14:05:10Z");
    let out = email.handle(&event(CHURN), now).await.unwrap();
    assert!(matches!(&out[..], [Outcome::Unknown { .. }]), "{out:?}");
    let again = email.handle(&event(CHURN), now).await.unwrap();
    assert!(matches!(&again[..], [Outcome::Unknown { .. }]), "{again:?}");
    assert_eq!(email.mailer.count(), 0);
}

#[test]
fn addresses_are_masked_in_provider_error_texts() {
    assert_eq!(
        crate::handler::redact("Email address is not verified: <ana@example.com>, bob@x.y."),
        "Email address is not verified: <<address>>, <address>."
    );
}

#[tokio::test]
async fn the_holdout_is_recorded_not_sent_and_variants_send_their_subject() {
    let yaml = crate::campaign::SOURCE.replace(
        "    offer: { code: COMEBACK15, percent: 15, valid_days: 14 }",
        "    offer: { code: COMEBACK15, percent: 15, valid_days: 14 }
    holdout_percent: 50
    attribution_window: 3d
    variants:
      - { name: plain, subject: \"We miss you\" }
      - { name: offer_first, subject: \"15% off, just for you\", weight: 2 }",
    );
    let email = email_with(churner(), Some(&yaml));
    let now = at("2026-11-20T14:05:10Z");
    let config = email.config().await.unwrap();
    let campaign = config
        .config
        .campaigns
        .get("churn_winback")
        .unwrap()
        .clone();
    let mut groups = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..40 {
        let id = format!("u-{i}");
        let mut p = churner();
        p.id.clone_from(&id);
        p.email = Some(Stamped::undated(format!("c{i}@example.com")));
        email.profiles.set(p);
        let detail = CHURN.replace("u-1001", &id);
        let sent_before = email.mailer.count();
        let out = email.handle(&event(&detail), now).await.unwrap();
        let group = campaign.experiment.assign(&campaign.name, &id);
        *groups.entry(group.name().to_owned()).or_default() += 1;
        let sk = format!("churn_winback#{id}:churn_risk:entered:42");
        let record = email.ledger.get(&send_pk(&id), &sk).await.unwrap().unwrap();
        assert_eq!(record["group"], group.name());
        if group == crate::experiment::Group::Holdout {
            assert!(matches!(&out[..], [Outcome::HeldOut { .. }]), "{out:?}");
            assert_eq!(
                email.mailer.count(),
                sent_before,
                "the holdout gets no email"
            );
            assert_eq!(record["state"], "held_out");
        } else {
            assert!(matches!(&out[..], [Outcome::Sent { .. }]), "{out:?}");
            let subject = match group.name() {
                "plain" => "We miss you",
                _ => "15% off, just for you",
            };
            assert_eq!(email.mailer.last().subject, subject);
        }
        // Every group is recorded for the report, with the campaign's window.
        let assigned = email.stream.events().pop().unwrap();
        assert_eq!(assigned["type"], "campaign_assigned");
        assert_eq!(assigned["user_id"], id);
        assert_eq!(
            assigned["payload"],
            json!({"campaign": "churn_winback", "group": group.name(), "attribution_hours": 72})
        );
        // A retry puts the same assignment again (same id, same time) and sends nothing.
        let again = email
            .handle(&event(&detail), now + Duration::minutes(5))
            .await
            .unwrap();
        assert!(
            matches!(&again[..], [Outcome::Duplicate { .. }]),
            "{again:?}"
        );
        let events = email.stream.events();
        let (first, second) = (&events[events.len() - 2], &events[events.len() - 1]);
        assert_eq!(first, second);
    }
    assert_eq!(groups.values().sum::<usize>(), 40);
    assert!(
        groups.len() == 3 && groups.values().all(|&n| n >= 4),
        "{groups:?}"
    );
}
