//! The local Kinesis event source mapping (ember-local) against the emulator's real stream and
//! queues: partial batch failures resume from the first failed record, function errors are
//! bisected down to the poison record, retries are bounded by MaximumRetryAttempts, and
//! exhausted batches land on the on-failure queue in Lambda's format.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use ember_local::activity::Activity;
use ember_local::functions::JsonFn;
use ember_local::kinesis_mapping::{start_kinesis, KinesisMapping};
use ember_local::template::KinesisSource;
use ember_tests::emulator::Aws;
use serde_json::{json, Value};
use tokio::sync::watch;

fn source(max_retries: u32) -> KinesisSource {
    KinesisSource {
        name: "Stream".into(),
        stream: Value::Null,
        batch_size: 10,
        bisect_on_error: true,
        max_retries: Some(max_retries),
        max_record_age_secs: Some(3600),
        limits: Value::Null,
        report_batch_item_failures: true,
        on_failure: None,
        starting_position: "TRIM_HORIZON".into(),
    }
}

struct Setup {
    aws: Aws,
    mapping: Arc<KinesisMapping>,
    failure_url: String,
}

impl Setup {
    /// The one message the on-failure destination holds.
    async fn the_failure_record(&self) -> Value {
        let quiet = Duration::from_millis(300);
        let bodies = self
            .aws
            .drain(&self.failure_url, quiet)
            .await
            .expect("drain");
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        serde_json::from_str(&bodies[0]).expect("json")
    }
}

async fn setup(max_retries: u32) -> Setup {
    let aws = Aws::from_env().await.expect("emulator environment");
    let stream = aws
        .create_stream("ember-local-esm", 1)
        .await
        .expect("stream");
    let arn = aws
        .kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .expect("describe")
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .expect("arn");
    let failures = aws
        .create_queue("ember-local-esm-failures")
        .await
        .expect("queue");
    let mapping = Arc::new(KinesisMapping {
        function: "TestFunction".into(),
        function_arn: "arn:aws:lambda:us-east-1:000000000000:function:test".into(),
        stream_name: stream,
        stream_arn: arn,
        source: source(max_retries),
        on_failure_url: Some(failures.url.clone()),
        region: "us-east-1".into(),
        kinesis: aws.kinesis.clone(),
        sqs: aws.sqs.clone(),
        retry_delay: Duration::from_millis(5),
        counted: true,
    });
    Setup {
        aws,
        mapping,
        failure_url: failures.url,
    }
}

async fn put(aws: &Aws, stream: &str, data: &str) -> String {
    aws.kinesis
        .put_record()
        .stream_name(stream)
        .partition_key("p1")
        .data(aws_sdk_kinesis::primitives::Blob::new(data.as_bytes()))
        .send()
        .await
        .expect("put_record")
        .sequence_number()
        .to_owned()
}

fn payloads(event: &Value) -> Vec<(String, String)> {
    event["Records"]
        .as_array()
        .expect("Records")
        .iter()
        .map(|r| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["kinesis"]["data"].as_str().expect("data"))
                .expect("base64");
            (
                String::from_utf8(data).expect("utf8"),
                r["kinesis"]["sequenceNumber"]
                    .as_str()
                    .expect("seq")
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn partial_failures_resume_from_the_failed_record_then_go_to_the_destination() {
    let s = setup(2).await;
    let mut seqs = Vec::new();
    for d in ["r1", "r2", "poison", "r3", "r4"] {
        seqs.push(put(&s.aws, &s.mapping.stream_name, d).await);
    }
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let c = calls.clone();
    let handler: JsonFn = Arc::new(move |event| {
        let c = c.clone();
        Box::pin(async move {
            let recs = payloads(&event);
            c.lock()
                .unwrap()
                .push(recs.iter().map(|(d, _)| d.clone()).collect());
            let failures: Vec<Value> = recs
                .iter()
                .filter(|(d, _)| d == "poison")
                .map(|(_, seq)| json!({ "itemIdentifier": seq }))
                .collect();
            Ok(json!({ "batchItemFailures": failures }))
        })
    });
    let activity = Arc::new(Activity::default());
    let (stop, rx) = watch::channel(false);
    let handles = start_kinesis(s.mapping.clone(), handler, activity.clone(), rx)
        .await
        .expect("start");
    assert!(
        activity.drain(Duration::from_secs(20)).await,
        "the poller did not settle"
    );
    // The shard goes on after the skipped batch.
    put(&s.aws, &s.mapping.stream_name, "r5").await;
    assert!(activity.drain(Duration::from_secs(20)).await);
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls[0], vec!["r1", "r2", "poison", "r3", "r4"]);
    // Two retries from the failed record (MaximumRetryAttempts = 2), never re-sending r1, r2.
    assert_eq!(calls[1], vec!["poison", "r3", "r4"]);
    assert_eq!(calls[2], vec!["poison", "r3", "r4"]);
    assert_eq!(calls[3], vec!["r5"]);
    assert_eq!(calls.len(), 4, "{calls:?}");

    let record = s.the_failure_record().await;
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record["KinesisBatchInfo"]["batchSize"], 3);
    assert_eq!(record["KinesisBatchInfo"]["startSequenceNumber"], seqs[2]);
    assert_eq!(record["KinesisBatchInfo"]["endSequenceNumber"], seqs[4]);
    assert_eq!(
        record["KinesisBatchInfo"]["streamArn"],
        s.mapping.stream_arn
    );
    assert_eq!(Activity::get(&activity.kinesis_on_failure), 1);
}

#[tokio::test]
async fn function_errors_are_bisected_down_to_the_poison_record() {
    let s = setup(1).await;
    let mut seqs = Vec::new();
    for d in ["a", "b", "poison", "c"] {
        seqs.push(put(&s.aws, &s.mapping.stream_name, d).await);
    }
    let succeeded: Arc<Mutex<Vec<String>>> = Arc::default();
    let ok = succeeded.clone();
    let handler: JsonFn = Arc::new(move |event| {
        let ok = ok.clone();
        Box::pin(async move {
            let recs = payloads(&event);
            if recs.iter().any(|(d, _)| d == "poison") {
                return Err("cannot handle poison".to_owned());
            }
            ok.lock().unwrap().extend(recs.into_iter().map(|(d, _)| d));
            Ok(json!({ "batchItemFailures": [] }))
        })
    });
    let activity = Arc::new(Activity::default());
    let (stop, rx) = watch::channel(false);
    let handles = start_kinesis(s.mapping.clone(), handler, activity.clone(), rx)
        .await
        .expect("start");
    assert!(activity.drain(Duration::from_secs(20)).await);
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }

    assert_eq!(
        *succeeded.lock().unwrap(),
        vec!["a", "b", "c"],
        "each good record exactly once, in order"
    );
    assert_eq!(Activity::get(&activity.kinesis_bisections), 2);
    let record = s.the_failure_record().await;
    assert_eq!(record["KinesisBatchInfo"]["batchSize"], 1);
    assert_eq!(record["KinesisBatchInfo"]["startSequenceNumber"], seqs[2]);
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
}
