//! Support for the api function's integration tests: API Gateway v2 fixtures turned into
//! `lambda_http` requests, and reading a Kinesis stream back. Provisioning is in
//! [`crate::emulator`].

use serde_json::Value;

use crate::emulator::workspace_root;

/// The API Gateway v2 payload in `events/apigw/<name>` as JSON.
pub fn apigw_fixture(name: &str) -> Value {
    let path = workspace_root().join("events/apigw").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Turns an API Gateway v2 payload into the request `lambda_http` hands the handler (the same
/// conversion the runtime does).
pub fn request(payload: &Value) -> lambda_http::Request {
    lambda_http::request::from_str(&payload.to_string())
        .unwrap_or_else(|e| panic!("not an API Gateway payload: {e}"))
}

/// Every record on the stream, as `(partition key, JSON data)`, shard by shard.
pub async fn read_stream(client: &aws_sdk_kinesis::Client, name: &str) -> Vec<(String, Value)> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let shards = client
        .list_shards()
        .stream_name(name)
        .send()
        .await
        .expect("list shards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(name)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator");
        let mut iterator = it.shard_iterator().map(str::to_owned);
        while let Some(i) = iterator {
            let page = client
                .get_records()
                .shard_iterator(i)
                .send()
                .await
                .expect("get records");
            if page.records().is_empty() {
                break;
            }
            for r in page.records() {
                let data: Value =
                    serde_json::from_slice(r.data().as_ref()).expect("record is JSON");
                out.push((r.partition_key().unwrap_or_default().to_owned(), data));
            }
            iterator = page.next_shard_iterator().map(str::to_owned);
        }
    }
    out
}
