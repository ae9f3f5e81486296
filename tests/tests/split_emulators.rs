//! Services split across emulators, as a LocalStack user must (its free edition has no
//! SESv2, and its DynamoDB needs a download): DynamoDB and SESv2 on a second moto through
//! `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SESV2`, everything else on the usual one.
//! The template's pipeline keeps each service's resources on its own endpoint, sent mail is
//! read from the SESv2 endpoint, and the fault proxy routes each call to its service's
//! endpoint.

use ember_aws::profiles::DynamoProfileStore;
use ember_core::ports::ProfileStore;
use ember_local::generate::{generate, GenerateOptions};
use ember_local::mail::{from_sender, sent_emails, ses_endpoint};
use ember_local::replay;
use ember_tests::emulator::{load_env, Aws, SecondMoto};
use ember_tests::faults::{op, FaultProxy};
use ember_tests::local::start_pipeline;

async fn tables(client: &aws_sdk_dynamodb::Client) -> Vec<String> {
    client
        .list_tables()
        .send()
        .await
        .expect("list tables")
        .table_names()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_with_dynamodb_and_sesv2_on_another_emulator() {
    assert!(load_env(), "emulator environment");
    let main = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let other = SecondMoto::start().await.expect("a second moto");
    // Each test runs in its own process (nextest), before any client reads the variables.
    std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", &other.url);
    std::env::set_var("AWS_ENDPOINT_URL_SESV2", &other.url);
    assert_eq!(ses_endpoint().as_deref(), Some(other.url.as_str()));

    let aws = Aws::from_env().await.expect("clients");
    let (events, _) = generate(&GenerateOptions {
        users: 12,
        seed: 5,
        lapsed: 1,
        ..Default::default()
    });
    let (pipeline, ropts) = start_pipeline(&aws, &events).await.expect("pipeline");
    let summary = replay(&pipeline, events, &ropts, None)
        .await
        .expect("replay");
    let table = pipeline.name_of("ProfilesTable").unwrap();
    assert!(summary.accepted > 0 && summary.profiles > 0, "{summary:?}");
    assert!(
        !summary.emails.is_empty(),
        "mail read from the SESv2 endpoint"
    );

    // The tables are on the second emulator only; the mail too.
    let on_main = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&aws.config)
            .endpoint_url(&main)
            .build(),
    );
    assert!(tables(&aws.dynamodb).await.contains(&table));
    assert!(!tables(&on_main).await.contains(&table));
    let sender = pipeline.sender_address().to_owned();
    let there = from_sender(sent_emails(&other.url).await.expect("mail"), &sender);
    assert_eq!(there.len(), summary.emails.len());
    let here = from_sender(sent_emails(&main).await.expect("mail"), &sender);
    assert!(here.is_empty(), "{here:?}");

    // The fault proxy sends each service where its variable says: a profile is read from
    // the second emulator and the stream described on the first, both through it.
    let proxy = FaultProxy::from_env().await.expect("proxy");
    let proxied = proxy.sdk_config(1, std::time::Duration::from_secs(5)).await;
    let profile_id = aws
        .all_profiles(&table)
        .await
        .into_keys()
        .next()
        .expect("a profile");
    let store = DynamoProfileStore::from_conf(&proxied, &table);
    assert!(store.get(&profile_id).await.expect("get").is_some());
    let stream = pipeline.name_of("EventStream").unwrap();
    aws_sdk_kinesis::Client::new(&proxied)
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .expect("the stream, on the main emulator");
    assert_eq!(proxy.calls(op::DDB_GET_ITEM), 1);

    pipeline.stop(true).await;
}
