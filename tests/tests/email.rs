//! The email function and the SES feedback loop against the emulator: real DynamoDB profiles
//! and ledger, real SESv2 `SendEmail` (messages read back from the emulator's mail API),
//! real Kinesis for the events the feedback produces.
//!
//! The handler's clock is injected: "now" is today 12:00 UTC, so quiet hours are decided by
//! the profile's time zone, not by when the tests run.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Duration, Utc};
use ember_core::clock::SystemClock;
use ember_core::ports::{Ledger, ProfileStore};
use ember_core::profile::{CartItem, Consent, Profile, Stamped};
use ember_core::schema::Registry;
use ember_core::unsubscribe::{suppression_key, Keys, SUPPRESSION_PK};
use ember_email::experiment::Group;
use ember_email::send_record::send_pk;
use ember_email::timers;
use ember_email::{Deps, FeedbackDeps, FeedbackSettings, MessageSettings, Outcome, Settings, Skip};
use ember_local::mail::{from_sender, sent_emails, ses_endpoint, SentEmail};
use ember_tests::api_support::read_stream;
use ember_tests::emulator::{unique, Aws};
use ember_tests::faults::{op, Fault, FaultProxy, Rule};
use serde_json::{json, Value};

struct Env {
    aws: Aws,
    sender: String,
    stream: String,
    email: Deps,
    feedback: FeedbackDeps,
}

/// Today at 12:00 UTC.
fn noon() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}

/// A new test's environment, noon, and a churner with `address` (not stored yet).
async fn churner_at_noon(address: &str) -> (Env, DateTime<Utc>, Profile) {
    let now = noon();
    (env().await, now, churner(&unique("u"), address, now))
}

async fn env() -> Env {
    env_on(Aws::from_env().await.expect("emulator environment")).await
}

/// The function's resources and handler on `aws` (e.g. through a fault proxy).
/// An environment whose clients go through the fault proxy (3 SDK attempts a call).
async fn behind_proxy() -> (FaultProxy, Env) {
    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    let sdk = proxy.sdk_config(3, std::time::Duration::from_secs(3)).await;
    let env = env_on(Aws::from_config(sdk)).await;
    (proxy, env)
}

async fn env_on(aws: Aws) -> Env {
    let profiles = aws.create_profiles_table().await.expect("profiles table");
    let ledger = aws
        .create_table("ledger", "pk", Some("sk"))
        .await
        .expect("ledger table");
    let stream = aws
        .create_stream("email-feedback", 1)
        .await
        .expect("stream");
    // A sender identity of its own, verified, so this test's mail can be told apart.
    let domain = format!("{}.example", unique("shop"));
    let sender = format!("orders@{domain}");
    aws_sdk_sesv2::Client::new(&aws.config)
        .create_email_identity()
        .email_identity(&domain)
        .send()
        .await
        .expect("verify sender identity");
    let settings = Settings {
        profiles_table: profiles,
        ledger_table: ledger.clone(),
        stream_name: stream.clone(),
        configuration_set: None,
        config_ttl: std::time::Duration::ZERO,
        send_rate: ember_email::send_rate::SendRate::UNLIMITED,
        stage: "test".into(),
        message: MessageSettings {
            sender: format!("Ember Hot Sauce Co. <{sender}>"),
            public_base_url: "https://shop.example".into(),
            unsubscribe_keys: Keys::parse("integration-test-secret-0001").unwrap(),
        },
    };
    let email = Deps::build(&aws.config, settings, SystemClock::shared()).expect("email deps");
    let feedback = FeedbackDeps::build(
        &aws.config,
        FeedbackSettings {
            ledger_table: ledger,
            stream_name: stream.clone(),
            stage: "test".into(),
        },
        SystemClock::shared(),
    );
    Env {
        aws,
        sender,
        stream,
        email,
        feedback,
    }
}

impl Env {
    /// The mail this test's sender sent. moto's state dump fails now and then (HTTP 500)
    /// while other tests change state concurrently: retried.
    /// The one outcome is `skip`, and the emulator holds `mails` emails of this test.
    async fn assert_skipped(&self, out: &[Outcome], skip: Skip, mails: usize) {
        assert_eq!(skips(out), [Some(skip)], "{out:?}");
        assert_eq!(self.mail().await.len(), mails);
    }

    /// How many emails this test's sender sent to `address`.
    async fn mail_to(&self, address: &str) -> usize {
        let mail = self.mail().await;
        mail.iter().filter(|m| m.to == [address]).count()
    }

    async fn mail(&self) -> Vec<SentEmail> {
        let endpoint = ses_endpoint().expect("an emulator endpoint for SESv2");
        let mut attempt = 0;
        loop {
            match sent_emails(&endpoint).await {
                Ok(all) => return from_sender(all, &self.sender),
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    eprintln!("mail read failed (attempt {attempt}): {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => panic!("read sent mail: {e}"),
            }
        }
    }

    /// The email function handling `id`'s `version`th entry into churn_risk (stated at
    /// `at`) at `now`.
    async fn churn_risk_entered(
        &self,
        id: &str,
        version: u64,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<Outcome> {
        let event = segment_entered(id, "churn_risk", version, at);
        self.email.handle(&event, now).await.unwrap()
    }

    /// Stores `profile`, then it enters churn_risk at `now` (version 5).
    async fn store_and_trigger(&self, profile: Profile, now: DateTime<Utc>) -> Vec<Outcome> {
        let id = profile.id.clone();
        self.put(profile).await;
        self.churn_risk_entered(&id, 5, now, now).await
    }

    async fn put(&self, mut profile: Profile) {
        profile.version = 1;
        self.email
            .profiles
            .put(&profile, 0)
            .await
            .expect("write profile");
    }

    async fn replace(&self, mut profile: Profile) {
        let stored = self.email.profiles.get(&profile.id).await.unwrap().unwrap();
        profile.version = stored.version + 1;
        self.email
            .profiles
            .put(&profile, stored.version)
            .await
            .expect("update profile");
    }
}

/// A repeat customer not seen for 40 days (in `churn_risk`), with consent and an address.
fn churner(id: &str, address: &str, now: DateTime<Utc>) -> Profile {
    let mut p = Profile::new(id);
    p.email = Some(Stamped::undated(address));
    p.name = Some(Stamped::undated("Ana López"));
    p.timezone = Some(Stamped::undated("UTC"));
    p.purchase_count = 3;
    p.last_seen = Some(now - Duration::days(40));
    p.consent.insert(
        "email".into(),
        Consent {
            granted: true,
            at: Some(now - Duration::days(100)),
        },
    );
    p
}

fn segment_entered(
    profile_id: &str,
    segment: &str,
    version: u64,
    at: DateTime<Utc>,
) -> EventBridgeEvent<Value> {
    serde_json::from_value(json!({
        "version": "0", "id": unique("evt"), "detail-type": "SegmentEntered", "source": "ember.enrich",
        "account": "123456789012", "time": at, "region": "us-east-1", "resources": [],
        "detail": {"id": format!("{profile_id}:{segment}:entered:{version}"), "profile_id": profile_id,
                   "segment": segment, "at": at, "profile_version": version}
    }))
    .unwrap()
}

fn cart_updated(p: &Profile) -> EventBridgeEvent<Value> {
    serde_json::from_value(json!({
        "version": "0", "id": unique("evt"), "detail-type": "CartUpdated", "source": "ember.enrich",
        "account": "123456789012", "time": p.cart.updated_at, "region": "us-east-1", "resources": [],
        "detail": {"id": format!("{}:cart:7", p.id), "profile_id": p.id, "updated_at": p.cart.updated_at,
                   "item_count": p.cart.items.values().map(|i| i.quantity).sum::<u32>(),
                   "value_minor": p.cart_value_minor(), "currency": "USD", "profile_version": 7}
    }))
    .unwrap()
}

/// A new customer id that built-in `campaign` emails rather than holds out.
fn emailed_id(campaign: &str) -> String {
    let config = ember_email::compiled::builtin().expect("built-in configuration");
    let experiment = &config.campaigns.get(campaign).expect("campaign").experiment;
    loop {
        let id = unique("u");
        if experiment.assign(campaign, &id) != Group::Holdout {
            return id;
        }
    }
}

/// The skip reason of each outcome (`None` for one that was not skipped).
fn skips(outcomes: &[Outcome]) -> Vec<Option<Skip>> {
    outcomes.iter().map(Outcome::skipped).collect()
}

#[tokio::test]
async fn segment_event_sends_one_personalised_email_even_when_replayed() {
    let env = env().await;
    let now = noon();
    let id = unique("u");
    env.put(churner(&id, "ana@example.com", now)).await;
    let event = segment_entered(&id, "churn_risk", 5, now);

    let out = env.email.handle(&event, now).await.unwrap();
    assert!(matches!(&out[..], [Outcome::Sent { .. }]), "{out:?}");
    let mail = env.mail().await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0].to, vec!["ana@example.com".to_owned()]);
    assert_eq!(
        mail[0].subject,
        "Ana, we miss you: 15% off your next bottle"
    );
    let html = mail[0].html.clone().unwrap_or_default();
    assert!(
        html.contains("Hi Ana,") && html.contains("COMEBACK15"),
        "{html}"
    );
    assert!(
        html.contains("Our best sellers") && html.contains("Huy Fong Sriracha"),
        "{html}"
    );
    assert!(
        html.contains("https://shop.example/v1/unsubscribe?token=v1."),
        "{html}"
    );

    // Replays (EventBridge at-least-once, Lambda retries) and a concurrent duplicate: one mail.
    let (a, b) = tokio::join!(
        env.email.handle(&event, now),
        env.email.handle(&event, now + Duration::seconds(1))
    );
    for out in [a.unwrap(), b.unwrap()] {
        assert!(matches!(&out[..], [Outcome::Duplicate { .. }]), "{out:?}");
    }
    assert_eq!(env.mail().await.len(), 1);
    assert!(env
        .email
        .ledger
        .get(
            &send_pk(&id),
            &format!("churn_winback#{id}:churn_risk:entered:5")
        )
        .await
        .unwrap()
        .is_some());

    // A new trigger of the same campaign the same day: the daily cap holds.
    let out = env
        .churn_risk_entered(&id, 9, now, now + Duration::hours(2))
        .await;
    env.assert_skipped(&out, Skip::CampaignCap, 1).await;
}

#[tokio::test]
async fn no_email_without_consent() {
    let (env, now, mut p) = churner_at_noon("ben@example.com").await;
    let withdrawn = Consent {
        granted: false,
        at: Some(now),
    };
    p.consent.insert("email".into(), withdrawn);
    let out = env.store_and_trigger(p, now).await;
    env.assert_skipped(&out, Skip::NoConsent, 0).await;
}

#[tokio::test]
async fn quiet_hours_defer_and_the_sweeper_sends_after_they_end() {
    let (env, now, mut p) = churner_at_noon("chiyo@example.com").await;
    p.timezone = Some(Stamped::undated("Asia/Tokyo")); // 12:00 UTC = 21:00 in Tokyo: quiet
    let out = env.store_and_trigger(p, now).await;
    let until = now + Duration::hours(11); // 08:00 in Tokyo
    assert_eq!(
        out,
        vec![Outcome::Deferred {
            campaign: "churn_winback".into(),
            until,
            reason: "quiet_hours",
        }]
    );
    assert!(env.mail().await.is_empty());
    let timers_due = env
        .email
        .ledger
        .query(&timers::bucket_pk(until), "")
        .await
        .unwrap();
    assert_eq!(timers_due.len(), 1, "{timers_due:?}");
    assert_eq!(timers_due[0].1["reason"], "quiet_hours");

    // Still night in Tokyo: nothing. Just after 08:00 Tokyo: sent.
    let night = timers::sweep(&env.email, until - Duration::hours(2))
        .await
        .unwrap();
    assert!(night.outcomes.is_empty(), "{night:?}");
    assert!(env.mail().await.is_empty());
    let morning = timers::sweep(&env.email, until + Duration::seconds(70))
        .await
        .unwrap();
    assert!(
        matches!(&morning.outcomes[..], [Outcome::Sent { .. }]),
        "{morning:?}"
    );
    let mail = env.mail().await;
    assert_eq!(mail.len(), 1);
    assert!(mail[0].subject.contains("we miss you"));
    assert!(env
        .email
        .ledger
        .query(&timers::bucket_pk(until), "")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bounce_feedback_suppresses_and_blocks_the_next_send() {
    let env = env().await;
    let now = noon();
    let id = unique("u");
    let address = format!("{}@example.com", unique("dana"));
    env.store_and_trigger(churner(&id, &address, now), now)
        .await;
    let mail = env.mail().await;
    assert_eq!(mail.len(), 1);

    // SES reports a hard bounce for that message (EventBridge shape, tags as sent).
    let fixture = std::fs::read_to_string(
        ember_tests::emulator::workspace_root().join("events/ses/eventbridge-bounce.json"),
    )
    .unwrap();
    let mut bounce: Value = serde_json::from_str(&fixture).unwrap();
    bounce["detail"]["mail"]["messageId"] = json!(mail[0].id);
    bounce["detail"]["mail"]["tags"]["profile_id"] =
        json!([ember_email::tags::encode_profile_id(&id).expect("fits")]);
    bounce["detail"]["mail"]["tags"]["campaign"] = json!(["churn_winback"]);
    bounce["detail"]["bounce"]["bouncedRecipients"][0]["emailAddress"] =
        json!(address.to_uppercase());
    env.feedback
        .handle(&bounce, now + Duration::minutes(1))
        .await
        .unwrap();
    env.feedback
        .handle(&bounce, now + Duration::minutes(2))
        .await
        .unwrap(); // SES retries

    let (assigned, records): (Vec<_>, Vec<_>) = read_stream(&env.aws.kinesis, &env.stream)
        .await
        .into_iter()
        .partition(|(_, e)| e["type"] == "campaign_assigned");
    let registry = Registry::embedded().unwrap();
    // The send also recorded the customer's campaign group, for the report.
    assert_eq!(assigned.len(), 1, "{assigned:?}");
    assert_eq!(assigned[0].1["payload"]["group"], "email");
    registry.validate(&assigned[0].1).unwrap();
    let ids: std::collections::BTreeSet<String> = records
        .iter()
        .map(|(_, e)| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "deterministic ids: {records:?}");
    let (key, event) = &records[0];
    assert_eq!(key, &id);
    assert_eq!(event["type"], "email_suppressed");
    assert_eq!(event["payload"]["reason"], "hard_bounce");
    assert_eq!(event["payload"]["message_id"], json!(mail[0].id));
    registry.validate(event).unwrap();
    assert!(env
        .email
        .ledger
        .get(SUPPRESSION_PK, &suppression_key(&address))
        .await
        .unwrap()
        .is_some());

    // Before enrich has even folded the event, the next trigger (a day later) is blocked.
    let later = now + Duration::days(1);
    let out = env.churn_risk_entered(&id, 11, later, later).await;
    env.assert_skipped(&out, Skip::Suppressed, 1).await;
}

#[tokio::test]
async fn rejected_address_is_reported_as_suppressed_and_not_retried() {
    let env = env().await;
    let now = noon();
    let id = unique("u");
    let out = env
        .store_and_trigger(churner(&id, "not-an-address", now), now)
        .await;
    assert_eq!(skips(&out), [Some(Skip::Rejected)], "{:?}", out);
    let records = read_stream(&env.aws.kinesis, &env.stream).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].1["type"], "email_suppressed");
    assert_eq!(records[0].1["payload"]["reason"], "invalid_address");
    Registry::embedded()
        .unwrap()
        .validate(&records[0].1)
        .unwrap();
    assert!(env
        .email
        .ledger
        .get(SUPPRESSION_PK, &suppression_key("not-an-address"))
        .await
        .unwrap()
        .is_some());
    assert!(env.mail().await.is_empty());
}

fn cart_holder(id: &str, now: DateTime<Utc>) -> Profile {
    let mut p = churner(id, "eli@example.com", now);
    p.purchase_count = 0;
    p.name = Some(Stamped::undated("Eli"));
    p.last_seen = Some(now);
    p.cart.currency = Some("USD".into());
    p.cart.updated_at = Some(now);
    p.cart.items.insert(
        "sauce-last-dab-apollo".into(),
        CartItem {
            name: "The Last Dab: Apollo".into(),
            quantity: 1,
            unit_price_minor: 2999,
            url: Some("https://shop.example/products/last-dab-apollo".into()),
        },
    );
    p.cart.items.insert(
        "sauce-tabasco-original".into(),
        CartItem {
            name: "Tabasco Original Red".into(),
            quantity: 3,
            unit_price_minor: 549,
            url: None,
        },
    );
    p
}

#[tokio::test]
async fn cart_abandonment_sends_after_the_delay_and_checkout_cancels_it() {
    let env = env().await;
    let t0 = noon();
    let (buyer, abandoner) = (unique("u"), emailed_id("cart_abandonment"));
    for id in [&buyer, &abandoner] {
        let p = cart_holder(id, t0);
        env.put(p.clone()).await;
        let out = env
            .email
            .handle(&cart_updated(&p), t0 + Duration::seconds(2))
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![Outcome::Scheduled {
                campaign: "cart_abandonment".into(),
                due: t0 + Duration::hours(1)
            }]
        );
    }
    // The buyer checks out (enrich folds it: checkout time after the cart change).
    let mut checked_out = cart_holder(&buyer, t0);
    checked_out.last_checkout_at = Some(t0 + Duration::minutes(10));
    env.replace(checked_out).await;

    let early = timers::sweep(&env.email, t0 + Duration::minutes(40))
        .await
        .unwrap();
    assert!(early.outcomes.is_empty(), "{early:?}");
    assert!(env.mail().await.is_empty());

    let due = timers::sweep(&env.email, t0 + Duration::minutes(62))
        .await
        .unwrap();
    assert_eq!(due.outcomes.len(), 2, "{due:?}");
    assert_eq!(
        due.outcomes.iter().filter(|o| o.is_sent()).count(),
        1,
        "{due:?}"
    );
    assert!(due.outcomes.iter().any(|o| matches!(
        o,
        Outcome::Skipped {
            reason: Skip::NoLongerApplies,
            ..
        }
    )));
    let mail = env.mail().await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(
        mail[0].subject,
        "Eli, your The Last Dab: Apollo and more are still waiting"
    );
    let html = mail[0].html.clone().unwrap_or_default();
    assert!(
        html.contains("Tabasco Original Red") && html.contains("$16.47") && html.contains("$46.46"),
        "{html}"
    );

    // The sweep is done with those buckets: running it again sends nothing more.
    let again = timers::sweep(&env.email, t0 + Duration::minutes(63))
        .await
        .unwrap();
    assert!(again.outcomes.is_empty(), "{again:?}");
    assert_eq!(env.mail().await.len(), 1);
}

#[tokio::test]
async fn a_send_claim_whose_answer_was_lost_still_sends_exactly_once() {
    let (proxy, env) = behind_proxy().await;
    let now = noon();
    let id = unique("u");
    env.put(churner(&id, "lost.claim@example.com", now)).await;
    // The first write of the send path is the claim: it lands, its answer is lost, the SDK
    // sends it again and finds it taken. It must recognise its own claim, not a duplicate.
    let lost = proxy.add(Rule::new(op::DDB_PUT_ITEM, Fault::DropAfterForward).first(1));
    let event = segment_entered(&id, "churn_risk", 5, now);
    let out = env.email.handle(&event, now).await.unwrap();
    assert_eq!(lost.injected(), 1);
    assert!(matches!(&out[..], [Outcome::Sent { .. }]), "{out:?}");
    let again = env.email.handle(&event, now).await.unwrap();
    assert!(
        matches!(&again[..], [Outcome::Duplicate { .. }]),
        "{again:?}"
    );
    assert_eq!(env.mail_to("lost.claim@example.com").await, 1);
}

#[tokio::test]
async fn an_ses_answer_lost_is_recorded_as_unknown_never_sent_twice_and_can_be_redriven() {
    let (proxy, env) = behind_proxy().await;
    let now = noon();
    let id = unique("u");
    let address = "lost.answer@example.com";
    env.put(churner(&id, address, now)).await;
    let mail_to_her = || env.mail_to(address);
    // SES accepts the email and the answer is lost.
    let lost = proxy.add(Rule::new(op::SESV2_SEND_EMAIL, Fault::DropAfterForward).first(1));
    let event = segment_entered(&id, "churn_risk", 5, now);
    let out = env.email.handle(&event, now).await.unwrap();
    assert_eq!(lost.injected(), 1);
    assert!(matches!(&out[..], [Outcome::Unknown { .. }]), "{out:?}");
    assert_eq!(
        proxy.calls(op::SESV2_SEND_EMAIL),
        1,
        "never repeated automatically"
    );
    assert_eq!(mail_to_her().await, 1, "SES did send it");
    let sk = format!("churn_winback#{id}:churn_risk:entered:5");
    let state = || async {
        let record = env.email.ledger.get(&send_pk(&id), &sk).await.unwrap();
        record.expect("a send record")["state"].clone()
    };
    assert_eq!(state().await, "unknown");

    // Lambda retries the event: the record says unknown, nothing is sent.
    let retry = env
        .email
        .handle(&event, now + Duration::minutes(1))
        .await
        .unwrap();
    assert!(matches!(&retry[..], [Outcome::Unknown { .. }]), "{retry:?}");
    assert_eq!(mail_to_her().await, 1);

    // An operator who checked re-drives it: the next sweep sends it.
    assert!(env
        .email
        .redrive(
            &id,
            "churn_winback",
            &format!("{id}:churn_risk:entered:5"),
            now
        )
        .await
        .unwrap());
    let swept = timers::sweep(&env.email, now + Duration::minutes(2))
        .await
        .unwrap();
    assert!(swept.outcomes.iter().any(Outcome::is_sent), "{swept:?}");
    assert_eq!(mail_to_her().await, 2);
    assert_eq!(state().await, "sent");
}

#[tokio::test]
async fn a_profile_that_cannot_be_read_never_holds_up_the_other_timers() {
    let env = env().await;
    let now = noon();
    let (bad, good) = (unique("u"), unique("u"));
    // A stored item that no longer decodes as a profile.
    env.aws
        .put_undecodable_profile(env.email.profiles.table(), &bad)
        .await;
    env.put(churner(&good, "good.timer@example.com", now)).await;
    let config = env.email.config().await.expect("config");
    let campaign = config
        .config
        .campaigns
        .get("churn_winback")
        .expect("campaign");
    for (id, minutes) in [(&bad, 1), (&good, 2)] {
        let candidate = ember_email::handler::Candidate {
            campaign,
            trigger_id: format!("{id}:churn_risk:entered:1"),
            cart_updated_at: None,
            trace: None,
        };
        let due = now + Duration::minutes(minutes);
        timers::schedule(&env.email, id, &candidate, due, "delay", now)
            .await
            .expect("timer");
    }
    let report = timers::sweep(&env.email, now + Duration::minutes(5))
        .await
        .expect("the sweep settles every bucket");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    assert_eq!(report.outcomes.iter().filter(|o| o.is_sent()).count(), 1);
    assert_eq!(
        report.next_bucket,
        Some(now + Duration::minutes(5)),
        "the cursor moved past both"
    );
    let dead = env
        .email
        .ledger
        .query(timers::DEAD_TIMERS_PK, "")
        .await
        .unwrap();
    let mine: Vec<_> = dead
        .iter()
        .filter(|(_, v)| v["profile_id"] == json!(bad))
        .collect();
    assert_eq!(mine.len(), 1, "{dead:?}");
    assert!(
        mine[0].1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("decode"),
        "{mine:?}"
    );
    // Nothing of the poison timer is left to fire.
    let again = timers::sweep(&env.email, now + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(again.dead_lettered, 0);
}

#[tokio::test]
async fn events_the_email_function_failed_on_are_redriven_from_the_failure_queue_and_send_once() {
    use ember_aws::redrive::{redrive_events, DeadLetterQueue};
    let env = env().await;
    let now = noon();
    let id = unique("u");
    env.put(churner(&id, "rita@example.com", now)).await;
    // The function failed on the event for good (say the ledger was down for an hour):
    // Lambda's on-failure record holds it. A schedule's missed run is there too.
    let failures = env.aws.create_queue("email-failures").await.unwrap();
    let event = segment_entered(&id, "churn_risk", 5, now);
    let on_failure = json!({
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": event,
        "responsePayload": {"errorMessage": "ledger.put: service unavailable"},
    });
    let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    for body in [on_failure, schedule] {
        env.aws
            .sqs
            .send_message()
            .queue_url(&failures.url)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }
    let bus = env.aws.create_bus("email-redrive").await.unwrap();
    let rule_target = env
        .aws
        .route_to_queue(&bus, &json!({"source": ["ember.enrich"]}))
        .await
        .unwrap();

    // The cause is fixed: the operator publishes the event again.
    let queue = DeadLetterQueue::from_conf(&env.aws.config, &failures.url);
    let bus_port = ember_aws::eventbridge::EventBridgeBus::from_conf(&env.aws.config, &bus);
    let plan = redrive_events(&queue, &bus_port, true).await.unwrap();
    let report = redrive_events(&queue, &bus_port, false).await.unwrap();
    let event_id = format!("{id}:churn_risk:entered:5");
    assert_eq!(
        (&plan.done, &report.done),
        (&vec![event_id.clone()], &vec![event_id])
    );
    assert_eq!(
        report.kept.len(),
        1,
        "the schedule stays: {:?}",
        report.kept
    );
    assert_eq!(queue.list().await.unwrap().len(), 1);

    // The rule delivers it as EventBridge does: one email, and a second delivery is a
    // duplicate.
    let delivered = env
        .aws
        .drain(&rule_target.url, std::time::Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let redelivered: EventBridgeEvent<Value> = serde_json::from_str(&delivered[0]).unwrap();
    let out = env.email.handle(&redelivered, now).await.unwrap();
    assert!(matches!(&out[..], [Outcome::Sent { .. }]), "{out:?}");
    let again = env.email.handle(&redelivered, now).await.unwrap();
    assert!(
        matches!(&again[..], [Outcome::Duplicate { .. }]),
        "{again:?}"
    );
    assert_eq!(env.mail_to("rita@example.com").await, 1);
}
