//! The raw event archive, through the template's pipeline on the emulator (the runner runs
//! Firehose's delivery from the stream to the bucket): it holds exactly the accepted events;
//! replaying it is harmless (every copy a duplicate); an erased customer's events leave it and
//! a rebuild never brings the customer back; a rebuild into an emptied profiles table gives
//! the same profiles and sends no email. The scheduled eraser's passes resume where the last
//! run stopped and delete what outlived the retention.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use ember_aws::archive::{self, ReplayFilter};
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_core::profile::Profile;
use ember_local::generate::{generate, GenerateOptions};
use ember_local::replay::{collect, ReplaySummary};
use ember_local::{replay, Pipeline};
use ember_tests::emulator::Aws;
use ember_tests::local::{admin_call, start_pipeline};
use serde_json::json;

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
    // The archive holds the stream: the accepted events and the email function's campaign
    // assignments.
    let (assignments, archived): (Vec<String>, Vec<String>) = archived_ids(&archive)
        .await
        .into_iter()
        .partition(|id| id.starts_with("campaign-assigned:"));
    assert_eq!(archived, accepted);
    assert_eq!(assignments.len() as u64, summary.kinesis_assignments);
    assert_eq!(summary.archived, Some(summary.accepted + assignments.len()));
    let before = profiles(&aws, &table).await;
    let reports = ember_local::report::collect(&pipeline).await.unwrap();
    assert!(reports
        .iter()
        .any(|r| r.groups.iter().any(|g| g.recipients > 0)));
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
    assert_eq!(
        report.put,
        summary.accepted + assignments.len(),
        "{report:?}"
    );
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
        // Someone never mailed and never anonymous: their archived events are all events
        // they sent, under their own id.
        .filter(|u| {
            before
                .get(*u)
                .is_some_and(|p| p.campaigns.is_empty() && p.anonymous_ids.is_empty())
        })
        .fold(BTreeMap::<&str, usize>::new(), |mut m, u| {
            *m.entry(u).or_default() += 1;
            m
        })
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let erased_at = pipeline.clock.now();
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

    // The template's scheduled eraser leaves the archive alone until the erasure has
    // settled (Firehose may still be delivering), then takes a pass. The stream's every
    // record is archived, replayed copies too: the customer's events are there three times
    // (first arrival, the plain replay, their replay).
    let eraser = |at| pipeline.run_schedule("ArchiveEraserFunction", at);
    let early = eraser(erased_at + chrono::Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(
        (&early["pending"], &early["started"], &early["objects"]),
        (&json!(1), &json!(false), &json!(0)),
        "{early}"
    );
    let pass = eraser(erased_at + chrono::Duration::minutes(61))
        .await
        .unwrap();
    assert_eq!(pass["finished"], true, "{pass}");
    assert_eq!(pass["removed"], json!(3 * erased_events), "{pass}");
    let after = eraser(erased_at + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        (&after["pending"], &after["objects"]),
        (&json!(0), &json!(0)),
        "{after}"
    );
    let left = archived_ids(&archive).await;
    assert_eq!(
        left.len(),
        2 * (accepted.len() - erased_events + assignments.len())
    );
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
    // Customers who browsed anonymously before signing up: the visitor's events travel under
    // another key (possibly another shard) than the identify, and whichever reached enrich
    // first, the live run merged them into the user, as the rebuild does (it puts them in
    // order behind the user's key).
    let identify = |anon: &str| {
        events
            .iter()
            .find(|e| e["type"] == "identify" && e["payload"]["anonymous_id"] == anon)
            .and_then(|e| e["user_id"].as_str())
    };
    for (id, p) in &expected {
        if let Some(anon) = id.strip_prefix("anon:") {
            assert_eq!(p.merged_into.as_deref(), identify(anon), "{id} live");
            assert_eq!(rebuilt[id].merged_into.as_deref(), identify(anon), "{id}");
            continue;
        }
        let linked = events
            .iter()
            .any(|e| e["type"] == "identify" && e["user_id"] == id.as_str());
        assert_eq!(
            rebuilt[id].counts, p.counts,
            "{id}: every event of theirs counted once, live and rebuilt"
        );
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
    // Neither the plain replay nor the rebuild counted anything again in the reports.
    assert_eq!(
        ember_local::report::collect(&pipeline).await.unwrap(),
        reports
    );

    pipeline.stop(true).await;
}

/// An object of `records` (customer, event id) written under `partition`.
async fn put_object(archive: &archive::Archive, key: &str, records: &[(&str, &str)]) {
    let lines: Vec<Vec<u8>> = records
        .iter()
        .map(|(user, id)| {
            json!({"event_id": id, "type": "page_view", "user_id": user})
                .to_string()
                .into_bytes()
        })
        .collect();
    archive.write(key, &lines).await.unwrap();
}

#[tokio::test]
async fn erasure_passes_resume_run_after_run_and_expire_what_outlived_the_retention() {
    use chrono::TimeZone;
    use ember_aws::archive::ERASE_CONCURRENCY;
    use ember_aws::archive_erasure::{run, RunReport};
    use ember_core::ports::{Erasures, Ledger, ARCHIVE_ERASURE_PK};

    let aws = Aws::from_env().await.expect("emulator environment");
    let ledger = DynamoLedger::from_conf(&aws.config, aws.create_ledger_table().await.unwrap());
    let s3 = archive::s3_client(&aws.config);
    let bucket = ember_tests::emulator::unique("archive");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let archive = archive::Archive::new(s3.clone(), &bucket);

    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let hour = |h: i64| archive::partition(t0 + chrono::Duration::hours(h));
    let old = format!(
        "{}x.gz",
        archive::partition(t0 - chrono::Duration::days(402))
    );
    put_object(&archive, &old, &[("u-keep", "e0")]).await;
    // Twenty hours of objects, the erased customer's events in three of them.
    let mixed = format!("{}a.gz", hour(0));
    put_object(&archive, &mixed, &[("u-keep", "e1"), ("u-gone", "e2")]).await;
    let only_theirs = format!("{}a.gz", hour(1));
    put_object(&archive, &only_theirs, &[("u-gone", "e3")]).await;
    let mut kept = vec![mixed.clone()];
    for h in 2..20 {
        let key = format!("{}a.gz", hour(h));
        put_object(&archive, &key, &[("u-keep", &format!("k{h:02}"))]).await;
        kept.push(key);
    }
    let late = format!("{}b.gz", hour(19));
    put_object(&archive, &late, &[("u-gone", "e5"), ("u-keep", "e6")]).await;
    kept.push(late.clone());
    let erased_at = t0 + chrono::Duration::hours(3);
    ledger.mark_erased("u-gone", erased_at).await.unwrap();
    let retention = Some(chrono::Duration::days(400));
    let out_of_time = std::time::Instant::now;

    // Not settled yet: only the retention is enforced.
    let r = run(&archive, &ledger, erased_at, retention, out_of_time())
        .await
        .unwrap();
    assert_eq!(
        (r.expired, r.pending, r.started, r.objects),
        (1, 1, false, 0),
        "{r:?}"
    );

    // With no time left, a run does one group of objects and the next resumes after it.
    let at = erased_at + chrono::Duration::minutes(61);
    let first = run(&archive, &ledger, at, retention, out_of_time())
        .await
        .unwrap();
    assert!(first.started && !first.finished, "{first:?}");
    assert_eq!(first.objects, ERASE_CONCURRENCY, "{first:?}");
    let mut rest = Vec::new();
    while rest.last().is_none_or(|r: &RunReport| !r.finished) && rest.len() < 21 {
        rest.push(
            run(&archive, &ledger, at, retention, out_of_time())
                .await
                .unwrap(),
        );
    }
    assert!(
        rest.iter()
            .all(|r| !r.started && r.objects <= ERASE_CONCURRENCY),
        "{rest:?}"
    );
    let objects: usize = rest.iter().map(|r| r.objects).sum();
    let removed: usize = rest.iter().map(|r| r.removed).sum();
    assert_eq!(
        (objects, removed),
        (21 - ERASE_CONCURRENCY, 3 - first.removed),
        "{rest:?}"
    );
    assert_eq!(archive.keys(None, None).await.unwrap(), kept);
    let mut ids = vec!["e1".to_owned(), "e6".to_owned()];
    ids.extend((2..20).map(|h| format!("k{h:02}")));
    ids.sort();
    assert_eq!(archived_ids(&archive).await, ids);
    assert!(
        ledger
            .query(ARCHIVE_ERASURE_PK, "")
            .await
            .unwrap()
            .is_empty(),
        "the pending erasure and the pass are done"
    );

    // Nothing pending: a run reads no object. The rewritten object is new to S3, so once
    // its partition is past the retention the eraser deletes it (the lifecycle rule counts
    // from the rewrite).
    let r = run(&archive, &ledger, at, retention, out_of_time())
        .await
        .unwrap();
    assert_eq!((r.pending, r.objects, r.expired), (0, 0, 0), "{r:?}");
    let later = t0 + chrono::Duration::days(401) + chrono::Duration::minutes(30);
    let r = run(&archive, &ledger, later, retention, out_of_time())
        .await
        .unwrap();
    assert_eq!(r.expired, 1, "{r:?}");
    assert_eq!(archive.keys(None, None).await.unwrap(), kept[1..]);
}
