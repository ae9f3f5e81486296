//! The raw event archive, through the template's pipeline on the emulator (the runner runs
//! Firehose's delivery from the stream to the bucket): it holds exactly the accepted events;
//! replaying it is harmless (every copy a duplicate); an erased customer's events leave it and
//! a rebuild never brings the customer back; a rebuild into an emptied profiles table gives
//! the same profiles and sends no email.

use std::collections::BTreeMap;
use std::time::Duration;

use ember_aws::archive::{self, ReplayFilter};
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_core::profile::Profile;
use ember_local::generate::{generate, GenerateOptions};
use ember_local::replay::{collect, ReplaySummary};
use ember_local::{replay, Pipeline};
use ember_tests::emulator::Aws;
use ember_tests::local::{admin_call, start_pipeline};

/// Every profile, keyed by id, without what only says how it was written (version,
/// stream positions, outbox).
async fn profiles(aws: &Aws, table: &str) -> BTreeMap<String, Profile> {
    aws.all_profiles(table)
        .await
        .into_iter()
        .map(|(id, p)| {
            let p = Profile {
                version: 0,
                stream: Default::default(),
                outbox: Default::default(),
                ..p
            };
            (id, p)
        })
        .collect()
}

async fn wipe(aws: &Aws, table: &str) {
    for id in profiles(aws, table).await.into_keys() {
        aws.dynamodb
            .delete_item()
            .table_name(table)
            .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id))
            .send()
            .await
            .expect("delete profile");
    }
}

async fn archived_ids(archive: &archive::Archive) -> Vec<String> {
    let mut ids = Vec::new();
    for key in archive.keys(None, None).await.unwrap() {
        for data in archive.read(&key).await.unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            ids.push(v["event_id"].as_str().unwrap().to_owned());
        }
    }
    ids.sort();
    ids
}

async fn emails_now(p: &Pipeline) -> usize {
    let mut s = ReplaySummary::default();
    collect(p, &mut s).await.expect("collect");
    s.emails.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_archive_holds_the_accepted_events_and_replays_rebuild_without_emails_or_erased_customers(
) {
    let aws = Aws::from_env().await.expect("emulator environment");
    let (events, _) = generate(&GenerateOptions {
        users: 30,
        seed: 23,
        lapsed: 2,
        ..Default::default()
    });
    let (pipeline, ropts) = start_pipeline(&aws, &events).await.expect("pipeline");
    let summary = replay(&pipeline, events.clone(), &ropts, None)
        .await
        .expect("replay");
    let table = pipeline.name_of("ProfilesTable").unwrap();
    let stream_name = pipeline.name_of("EventStream").unwrap();
    let ledger = DynamoLedger::from_conf(&aws.config, pipeline.name_of("LedgerTable").unwrap());
    let stream = KinesisEventStream::from_conf(&aws.config, &stream_name);
    let archive = pipeline.archive().expect("the template has an archive");
    let drain = || pipeline.drain(Duration::from_secs(60));

    // Exactly the accepted events, each once.
    let refused: Vec<&str> = summary
        .rejected
        .iter()
        .map(|r| r.event_id.as_str())
        .collect();
    let mut accepted: Vec<String> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .filter(|id| !refused.contains(id))
        .map(str::to_owned)
        .collect();
    accepted.sort();
    assert!(!refused.is_empty() && accepted.len() == summary.accepted);
    assert_eq!(archived_ids(&archive).await, accepted);
    assert_eq!(summary.archived, Some(summary.accepted));
    let before = profiles(&aws, &table).await;
    let mailed = emails_now(&pipeline).await;
    assert_eq!(mailed, summary.emails.len());
    assert!(mailed > 0);

    // A plain replay of the whole archive: every copy is a duplicate.
    let plain = ReplayFilter {
        dedup_window: Some(chrono::Duration::days(35)),
        ..Default::default()
    };
    let report = archive::replay(&archive, &stream, &ledger, &plain)
        .await
        .unwrap();
    assert_eq!(report.put, summary.accepted, "{report:?}");
    assert!(drain().await);
    assert_eq!(profiles(&aws, &table).await, before);
    assert_eq!(emails_now(&pipeline).await, mailed);

    // A customer (one with no anonymous history) is erased. Their archived events replayed
    // do not bring them back (the tombstone), and an erasure pass takes them out of the archive.
    let linked: Vec<&str> = events
        .iter()
        .filter(|e| e["anonymous_id"].is_string())
        .filter_map(|e| e["user_id"].as_str())
        .collect();
    let (erased, erased_events) = events
        .iter()
        .filter(|e| accepted.iter().any(|a| e["event_id"] == a.as_str()))
        .filter_map(|e| e["user_id"].as_str())
        .filter(|u| !linked.contains(u))
        .fold(BTreeMap::<&str, usize>::new(), |mut m, u| {
            *m.entry(u).or_default() += 1;
            m
        })
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let (status, _) =
        admin_call(&pipeline, "DELETE", &format!("/v1/profiles/{erased}"), None).await;
    assert!((200..300).contains(&status), "erasure answered {status}");
    let theirs = ReplayFilter {
        customer: Some(erased.to_owned()),
        rebuild: true,
        ..Default::default()
    };
    let report = archive::replay(&archive, &stream, &ledger, &theirs)
        .await
        .unwrap();
    assert_eq!(report.put, erased_events, "{report:?}");
    assert!(drain().await);
    assert!(aws.get_profile(&table, erased).await.unwrap().is_none());

    // The stream's every record is archived, replayed copies too: the customer's events are
    // there three times (first arrival, the plain replay, their replay).
    let gone = archive::erase(&archive, &ledger, None).await.unwrap();
    assert_eq!(gone.removed, 3 * erased_events, "{gone:?}");
    let left = archived_ids(&archive).await;
    assert_eq!(left.len(), 2 * (accepted.len() - erased_events));
    let report = archive::replay(
        &archive,
        &stream,
        &ledger,
        &ReplayFilter {
            dry_run: true,
            ..theirs
        },
    )
    .await
    .unwrap();
    assert_eq!(
        report.selected, 0,
        "nothing of theirs is left in the archive"
    );

    // Every profile deleted, then rebuilt from the archive: the same profiles (the erased
    // customer stays erased), and no email.
    wipe(&aws, &table).await;
    let rebuild = ReplayFilter {
        rebuild: true,
        ..Default::default()
    };
    let report = archive::replay(&archive, &stream, &ledger, &rebuild)
        .await
        .unwrap();
    assert_eq!(report.put, left.len() / 2, "each event once: {report:?}");
    assert!(drain().await);
    let mut expected = before.clone();
    expected.remove(erased);
    let rebuilt = profiles(&aws, &table).await;
    assert_eq!(
        rebuilt.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    // Customers who browsed anonymously before signing up: the live run merged the two only
    // when the anonymous events reached enrich before the identify (they travel under
    // different keys, so possibly on different shards); the rebuild puts them in order
    // behind one key, so every such pair is merged.
    let identify = |anon: &str| {
        events
            .iter()
            .find(|e| e["type"] == "identify" && e["payload"]["anonymous_id"] == anon)
            .and_then(|e| e["user_id"].as_str())
    };
    for (id, p) in &expected {
        if let Some(anon) = id.strip_prefix("anon:") {
            assert_eq!(rebuilt[id].merged_into.as_deref(), identify(anon), "{id}");
            continue;
        }
        let linked = events
            .iter()
            .any(|e| e["type"] == "identify" && e["user_id"] == id.as_str());
        // Segments are evaluated at event time; those the clock moves a customer into
        // (cart abandonment, churn risk) follow at the next scheduled re-evaluation.
        let traits = |p: &Profile| Profile {
            segments: Default::default(),
            ..p.clone()
        };
        if !linked {
            assert_eq!(
                traits(&rebuilt[id]),
                traits(p),
                "profile {id} differs after the rebuild"
            );
        }
    }
    assert_eq!(
        emails_now(&pipeline).await,
        mailed,
        "a rebuild sends nothing"
    );

    pipeline.stop(true).await;
}
