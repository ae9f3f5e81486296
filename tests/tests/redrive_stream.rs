//! The enrich mapping's on-failure destination, redriven: profile writes throttled past the
//! mapping's retry limit (the fault proxy, through the template's pipeline), so Lambda gives
//! up on the batch; then `stream_failures::redrive` reads the failed ranges back from the
//! stream and puts back what was not applied. Every event is applied once, and a redrive of
//! the same messages again puts nothing back.

use std::time::Duration;

use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::redrive::DeadLetterQueue;
use ember_aws::stream_failures::{self, ArchiveSource, Ports, StreamReport};
use ember_local::replay;
use ember_tests::emulator::Aws;
use ember_tests::faults::{op, Fault, FaultProxy, Rule};
use ember_tests::local::start_pipeline_with;
use serde_json::{json, Value};

const CUSTOMERS: usize = 40;

/// One product view per customer, all at the same moment (so no customer has a later record
/// that could be applied after Lambda gave up on an earlier one).
fn views(run: &str) -> Vec<Value> {
    (0..CUSTOMERS)
        .map(|i| {
            json!({
                "event_id": format!("{run}-view-{i}"),
                "type": "product_view",
                "version": 1,
                "source": "web",
                "user_id": format!("u-{run}-{i:03}"),
                "occurred_at": "2026-09-03T19:35:11Z",
                "payload": {"sku": "SAU-007", "name": "Sweet Paprika Mild", "price": "6.90",
                            "currency": "EUR"},
            })
        })
        .collect()
}

/// Product views applied, over every customer (none may count twice).
async fn applied(aws: &Aws, table: &str, run: &str) -> usize {
    let mut n = 0;
    for i in 0..CUSTOMERS {
        let id = format!("u-{run}-{i:03}");
        if let Some(p) = aws.get_profile(table, &id).await.unwrap() {
            let views = p.counts.get("product_view").copied().unwrap_or(0);
            assert!(views <= 1, "customer {i} viewed {views} times");
            n += views as usize;
        }
    }
    n
}

/// A run of the template's pipeline in which Lambda gave up on some batches.
struct Failed {
    /// Kept running: every call of the run goes through it.
    _proxy: FaultProxy,
    aws: Aws,
    pipeline: ember_local::Pipeline,
    run: String,
    profiles_table: String,
    failure_url: String,
    /// Events applied before any redrive.
    before: usize,
    /// Messages in the failure queue.
    failed_batches: u64,
    queue: DeadLetterQueue,
    stream: KinesisEventStream,
    claims: DynamoLedger,
    profiles: DynamoProfileStore,
}

impl Failed {
    /// The operator's redrive of the failure queue, from the stream (and the archive).
    async fn redrive(&self, archive: Option<ArchiveSource<'_>>, dry_run: bool) -> StreamReport {
        let ports = Ports {
            queue: &self.queue,
            source: &self.stream,
            claims: &self.claims,
            profiles: &self.profiles,
            stream: &self.stream,
            archive,
        };
        stream_failures::redrive(ports, dry_run).await.unwrap()
    }
}

async fn failed_run() -> Failed {
    let proxy = FaultProxy::from_env().await.expect("emulator endpoint");
    // One attempt per call: a throttled write is not rescued by the SDK's retry.
    let aws = Aws::from_config(proxy.sdk_config(1, Duration::from_secs(3)).await);
    let run = ember_tests::emulator::unique("sf");
    let events = views(&run);
    let (pipeline, ropts) =
        start_pipeline_with(&aws, &events, &[("EnrichMaximumRetryAttempts", "1")])
            .await
            .expect("pipeline starts");
    let name = |id: &str| pipeline.name_of(id).expect(id);
    let (profiles_table, ledger_table) = (name("ProfilesTable"), name("LedgerTable"));
    let failure_url = pipeline
        .queue_url_of("StreamFailureQueue")
        .expect("failure queue");

    // Every other profile write is throttled, and so is every claim release: the keys that
    // fail keep their claims, and after one retry Lambda gives up on their batch.
    proxy.add(
        Rule::new(op::DDB_PUT_ITEM, Fault::Throttle)
            .on_table(&profiles_table)
            .every(2),
    );
    proxy.add(Rule::new(op::DDB_DELETE_ITEM, Fault::Throttle).on_table(&ledger_table));
    let summary = replay(&pipeline, events.clone(), &ropts, None)
        .await
        .expect("replay");
    assert_eq!(summary.accepted, CUSTOMERS);
    assert!(summary.kinesis_on_failure > 0, "{summary}");
    proxy.clear_rules();

    let before = applied(&aws, &profiles_table, &run).await;
    assert!(before < CUSTOMERS, "some events wait in failed batches");
    let stream_name = pipeline.name_of("EventStream").expect("stream");
    Failed {
        queue: DeadLetterQueue::from_conf(&aws.config, &failure_url),
        stream: KinesisEventStream::from_conf(&aws.config, &stream_name),
        claims: DynamoLedger::from_conf(&aws.config, &ledger_table),
        profiles: DynamoProfileStore::from_conf(&aws.config, &profiles_table),
        _proxy: proxy,
        aws,
        pipeline,
        run,
        profiles_table,
        failure_url,
        before,
        failed_batches: summary.kinesis_on_failure,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_past_their_retry_limit_are_redriven_from_the_failure_queue_and_applied_once() {
    let f = failed_run().await;
    let (aws, pipeline, run, before) = (&f.aws, &f.pipeline, &f.run, f.before);
    let (profiles_table, failure_url) = (&f.profiles_table, &f.failure_url);

    // The operator redrives; the queue's messages are kept to be sent again afterwards.
    let queue = &f.queue;
    let messages: Vec<String> = queue
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.body)
        .collect();
    assert_eq!(messages.len() as u64, f.failed_batches);
    let redrive = |dry_run| f.redrive(None, dry_run);
    let plan: StreamReport = redrive(true).await;
    let report = redrive(false).await;
    println!("before redrive: {before} of {CUSTOMERS} applied; {report:?}");
    assert_eq!(
        report.put_back, plan.put_back,
        "a dry run says what a redrive does"
    );
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(report.put_back.len(), CUSTOMERS - before, "{report:?}");
    assert!(
        report.applied > 0,
        "failed batches also hold applied records: {report:?}"
    );
    assert!(pipeline.drain(Duration::from_secs(60)).await);
    assert_eq!(applied(aws, profiles_table, run).await, CUSTOMERS);
    assert!(
        queue.list().await.unwrap().is_empty(),
        "settled messages are deleted"
    );

    // The same messages once more (a message that came back): nothing is put back.
    let sqs = aws_sdk_sqs::Client::new(&aws.config);
    for body in messages {
        sqs.send_message()
            .queue_url(failure_url.as_str())
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let again = redrive(false).await;
    assert!(again.put_back.is_empty(), "{again:?}");
    assert_eq!(
        again.applied + again.duplicates,
        report.applied + report.put_back.len(),
        "{again:?}"
    );
    assert!(pipeline.drain(Duration::from_secs(60)).await);
    assert_eq!(applied(aws, profiles_table, run).await, CUSTOMERS);
    f.pipeline.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_that_have_left_the_stream_are_redriven_from_the_archive_and_applied_once() {
    let f = failed_run().await;
    let (aws, pipeline, queue) = (&f.aws, &f.pipeline, &f.queue);
    // Each message's range now starts before what the stream holds (as once its first
    // records have expired), so its records are read from the archive instead.
    let sqs = aws_sdk_sqs::Client::new(&aws.config);
    for message in queue.list().await.unwrap() {
        let mut body: Value = serde_json::from_str(&message.body).unwrap();
        body["KinesisBatchInfo"]["startSequenceNumber"] = json!("0");
        sqs.send_message()
            .queue_url(&f.failure_url)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
        queue.delete(&message.receipt).await.unwrap();
    }
    let archive = pipeline.archive().expect("the template's archive");
    let redrive = |archive| f.redrive(archive, false);

    // Without the archive the messages stay, saying where to look.
    let kept = redrive(None).await;
    assert!(kept.put_back.is_empty(), "{kept:?}");
    assert!(
        kept.kept
            .iter()
            .all(|(_, why)| why.contains("replay the archive")),
        "{kept:?}"
    );

    let source = ArchiveSource {
        archive: &archive,
        dedup_window: chrono::Duration::days(35),
    };
    let report = redrive(Some(source)).await;
    println!(
        "before redrive: {} of {CUSTOMERS} applied; {report:?}",
        f.before
    );
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(report.put_back.len(), CUSTOMERS - f.before, "{report:?}");
    assert!(report.put_back.iter().all(|p| p.starts_with("archive:")));
    assert!(report.applied > 0, "{report:?}");
    assert!(pipeline.drain(Duration::from_secs(60)).await);
    assert_eq!(applied(aws, &f.profiles_table, &f.run).await, CUSTOMERS);
    assert!(queue.list().await.unwrap().is_empty());

    // The archive path again (as if the messages came back): nothing more goes back.
    let again = redrive(Some(source)).await;
    assert!(again.put_back.is_empty() && again.batches == 0, "{again:?}");
    f.pipeline.stop(true).await;
}
