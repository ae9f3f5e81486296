//! The configuration admin API against the emulator: versions in the real ledger table,
//! announcements on a real EventBridge bus (read back through a rule's SQS queue), previews
//! by a parallel scan of a real profiles table.

use chrono::Duration;
use std::collections::BTreeMap;

use ember_core::attribution::HOLDOUT;
use ember_core::ports::{BusEvent, ProfileStore};
use ember_core::profile::{Consent, Profile, Stamped};
use ember_email::experiment::{Experiment, Variant};
use ember_tests::api_support::{setup, Env};
use serde_json::{json, Value};

/// A segment of customers who bought at least `n` times.
fn buyers(n: u64) -> Value {
    json!({"description": "Repeat buyers", "when": {"trait": "purchase_count", "gte": n}})
}

fn vip_campaign(segment: &str) -> Value {
    json!({"trigger": "segment_entered", "segment": segment, "template": "heat_match",
           "delay": "0s", "daily_cap": 1, "priority": 10})
}

/// The `key` text of every object of the list `list`.
fn texts<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    let items = list.as_array().expect("a list");
    items
        .iter()
        .map(|v| v[key].as_str().expect("a text"))
        .collect()
}

async fn version(env: &Env) -> u64 {
    let (status, body) = env.admin("GET", "/v1/config", None).await;
    assert_eq!(status, 200, "{body}");
    body["version"].as_u64().expect("version")
}

fn published_versions(events: &[BusEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            BusEvent::ConfigPublished(c) => Some(c.version),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn bad_configuration_is_refused_with_every_problem_and_nothing_is_published() {
    let env = setup().await;
    assert_eq!(version(&env).await, 0, "the built-in configuration");
    let campaign = json!({"trigger": "segment_entered", "segment": "nobody",
                          "template": "heat_match", "delay": "soon", "daily_cap": 1});
    let (status, body) = env
        .admin("PUT", "/v1/campaigns/broken", Some(&campaign))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_config")),
        "{body}"
    );
    let problems = body["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{body}");
    assert_eq!(problems[0]["path"], "campaigns/broken");
    assert!(
        problems[0]["message"].as_str().unwrap().contains("soon"),
        "{body}"
    );

    // A template that does not render, and a rule language error, at once through a
    // rollback target that does not exist: each refused on its own.
    let template = json!({"subject": "{{ nope.deeper }}", "html": "<p>x</p>", "text": "x"});
    let (status, body) = env
        .admin("PUT", "/v1/templates/heat_match", Some(&template))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["path"] == "templates/heat_match"));
    let rule = json!({"when": {"trait": "heat_shu", "between": [5, 1]}});
    let (status, body) = env.admin("PUT", "/v1/segments/odd", Some(&rule)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"][0]["path"], "segments/odd");
    let (status, body) = env
        .admin("POST", "/v1/config/rollback", Some(&json!({"version": 7})))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("config_item_not_found"))
    );

    assert_eq!(version(&env).await, 0, "the version in force keeps serving");
    assert!(env.announcements().await.is_empty());
}

#[tokio::test]
async fn changes_become_versions_announced_on_the_bus_and_rollback_restores_one() {
    let env = setup().await;
    // A dry run checks and publishes nothing.
    let (status, body) = env
        .admin("PUT", "/v1/segments/vip?dry_run=true", Some(&buyers(5)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"valid": true, "dry_run": true, "based_on": 0}));
    assert_eq!(version(&env).await, 0);

    let noted = "/v1/segments/vip?note=repeat-buyers";
    let (status, body) = env.admin("PUT", noted, Some(&buyers(5))).await;
    assert_eq!((status, &body["version"]), (200, &json!(1)), "{body}");
    let thanks = vip_campaign("vip");
    let (status, body) = env
        .admin("PUT", "/v1/campaigns/vip_thanks", Some(&thanks))
        .await;
    assert_eq!((status, &body["version"]), (200, &json!(2)), "{body}");
    let (_, item) = env.admin("GET", "/v1/campaigns/vip_thanks", None).await;
    assert_eq!(item["item"]["segment"], "vip");
    assert_eq!(item["version"], 2);

    // The same request again (its answer was lost): nothing new, announced again.
    let (status, body) = env
        .admin("PUT", "/v1/campaigns/vip_thanks", Some(&thanks))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["version"], &body["unchanged"]),
        (&json!(2), &json!(true))
    );

    // A campaign still needs its segment: deleting it is refused.
    let (status, body) = env.admin("DELETE", "/v1/segments/vip", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown segment"));

    // Rollback to version 1: its document in force again, as version 3.
    let (status, body) = env
        .admin("POST", "/v1/config/rollback", Some(&json!({"version": 1})))
        .await;
    assert_eq!((status, &body["version"]), (200, &json!(3)), "{body}");
    let (status, _) = env.admin("GET", "/v1/campaigns/vip_thanks", None).await;
    assert_eq!(status, 404);
    let (_, segments) = env.admin("GET", "/v1/segments", None).await;
    assert_eq!(segments["segments"]["vip"]["when"]["gte"], 5);

    let (_, versions) = env.admin("GET", "/v1/config/versions", None).await;
    assert_eq!(versions["in_force"], 3);
    let notes = texts(&versions["versions"], "note");
    assert_eq!(
        notes,
        ["rollback to 1", "campaigns/vip_thanks", "repeat-buyers"]
    );
    let mut announced = published_versions(&env.announcements().await);
    announced.sort_unstable();
    assert_eq!(announced, [1, 2, 2, 3]);
}

#[tokio::test]
async fn a_preview_counts_who_matches_now_by_a_scan() {
    let env = setup().await;
    let store = env.profiles();
    let now = ember_tests::api_support::now();
    for i in 0..9u64 {
        let mut p = Profile::new(format!("u-preview-{i}"));
        p.version = 1;
        p.purchase_count = i;
        p.last_seen = Some(now - Duration::days(40));
        p.email = Some(Stamped::undated(format!("p{i}@example.com")));
        if i % 2 == 0 {
            let consent = Consent {
                granted: true,
                at: Some(now),
            };
            p.consent.insert("email".into(), consent);
        }
        store.put(&p, 0).await.expect("put");
    }
    let preview = "/v1/segments/repeat_buyers/preview";
    let (status, body) = env.admin("POST", preview, Some(&buyers(6))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["matching"], &body["profiles_scanned"]),
        (&json!(3), &json!(9)),
        "{body}"
    );
    assert_eq!(
        body["sample_ids"],
        json!(["u-preview-6", "u-preview-7", "u-preview-8"])
    );
    // The published churn_risk rule: 2+ purchases and 30 days away.
    let (status, body) = env
        .admin("GET", "/v1/segments/churn_risk/preview", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["matching"], &body["version"]),
        (&json!(7), &json!(0))
    );
    let (status, body) = env
        .admin(
            "POST",
            "/v1/segments/repeat_buyers/preview",
            Some(&json!({"when": {"trait": "nope", "gt": 1}})),
        )
        .await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_config")));

    // The churn win-back campaign: the seven churners, four of whom gave email consent.
    let (status, body) = env
        .admin("GET", "/v1/campaigns/churn_winback/preview", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["targeted"], &body["would_send_now"], &body["skipped"]),
        (&json!(7), &json!(4), &json!({"no_consent": 3})),
        "{body}"
    );
    assert_eq!(
        body["sample_ids"],
        json!(["u-preview-2", "u-preview-4", "u-preview-6", "u-preview-8"])
    );
    assert_eq!(body["groups"], json!({"email": 4}), "{body}");

    // With a holdout and two variants, the four split as their sends would: the held-out
    // ones are counted apart and not among the emails.
    let (_, item) = env.admin("GET", "/v1/campaigns/churn_winback", None).await;
    let mut winback = item["item"].clone();
    winback["holdout_percent"] = json!(50);
    winback["variants"] = json!([{"name": "plain"}, {"name": "short", "subject": "Hi again"}]);
    let path = "/v1/campaigns/churn_winback";
    let (status, body) = env.admin("PUT", path, Some(&winback)).await;
    assert_eq!(status, 200, "{body}");
    let experiment = Experiment {
        holdout_percent: 50,
        variants: ["plain", "short"]
            .map(|name| Variant {
                name: name.into(),
                weight: 1,
                subject: None,
                template: None,
            })
            .into(),
        attribution_hours: 168,
    };
    let mut groups = BTreeMap::<String, u64>::new();
    for id in ["u-preview-2", "u-preview-4", "u-preview-6", "u-preview-8"] {
        let group = experiment.assign("churn_winback", id).name().to_owned();
        *groups.entry(group).or_default() += 1;
    }
    let held_out = groups.get(HOLDOUT).copied().unwrap_or(0);
    assert!(0 < held_out && held_out < 4, "both kinds: {groups:?}");
    let (status, body) = env
        .admin("GET", "/v1/campaigns/churn_winback/preview", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["groups"], json!(groups), "{body}");
    assert_eq!(
        (
            &body["targeted"],
            &body["would_send_now"],
            &body["held_out_now"]
        ),
        (&json!(7), &json!(4 - held_out), &json!(held_out)),
        "{body}"
    );
}

#[tokio::test]
async fn a_new_subject_line_is_one_part_of_a_template() {
    let env = setup().await;
    let (_, before) = env.admin("GET", "/v1/templates/heat_match", None).await;
    let subject = json!({"subject": "{{ heat_shu|heat_band if heat_shu else 'Fresh' }} picks"});
    let (status, body) = env
        .admin("PUT", "/v1/templates/heat_match", Some(&subject))
        .await;
    assert_eq!((status, &body["version"]), (200, &json!(1)), "{body}");
    let (_, after) = env.admin("GET", "/v1/templates/heat_match", None).await;
    assert_eq!(after["item"]["subject"], subject["subject"]);
    assert_eq!(after["item"]["html"], before["item"]["html"]);
    assert_eq!(after["item"]["text"], before["item"]["text"]);

    // Without its HTML part the template can no longer serve its campaigns: refused.
    let (status, body) = env
        .admin(
            "PUT",
            "/v1/templates/heat_match",
            Some(&json!({"html": null})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let paths = texts(&body["problems"], "path");
    assert_eq!(paths, ["campaigns/heat_match", "campaigns/mild_discovery"]);
}

#[tokio::test]
async fn the_repository_files_publish_through_the_same_path() {
    use ember_local::config_files;
    let env = setup().await;
    let local = config_files::load(&ember_tests::emulator::workspace_root()).expect("files");
    assert!(config_files::validate(&local).is_empty());
    let store = env.deps.config_store();
    // The files are the built-in configuration: publishing them makes it version 1 …
    let (version, changed) = config_files::publish(&store, env.deps.bus.as_ref(), &local, "git")
        .await
        .expect("publish");
    assert_eq!((version, changed), (1, vec![]));
    // … and publishing them again changes nothing.
    let (again, _) = config_files::publish(&store, env.deps.bus.as_ref(), &local, "git")
        .await
        .expect("publish again");
    assert_eq!(again, 1);
    // An edited file is a new version, and the diff names what changed.
    let mut edited = local.clone();
    edited.segments["segments"][1]["when"]["gte"] = json!(60_000);
    let (version, changed) = config_files::publish(&store, env.deps.bus.as_ref(), &edited, "git")
        .await
        .expect("publish the edit");
    assert_eq!(
        (version, changed),
        (2, vec!["~ segments/high_heat_lover".to_owned()])
    );
    let mut broken = edited.clone();
    broken.campaigns["campaigns"][0]["delay"] = json!("later");
    let err = config_files::publish(&store, env.deps.bus.as_ref(), &broken, "git")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("campaigns/cart_abandonment"), "{err}");
    assert_eq!(store.current_version().await.unwrap(), 2);
    assert_eq!(published_versions(&env.announcements().await), [1, 1, 2]);
}
