//! The template's local pipeline (`ember-local`) for the end-to-end tests: started on the
//! emulator with its event-time clock at the first event to replay.

use std::sync::Arc;
use std::time::Duration;

use ember_local::clock::SimClock;
use ember_local::replay::first_event_time;
use ember_local::{Pipeline, PipelineOptions, ReplayOptions};
use serde_json::Value;

use crate::emulator::{err, workspace_root, Aws, SetupResult};

/// Provisions `template.yaml` (unique names) and starts its pipeline for replaying `events`;
/// returns it with the replay options the tests use (6 hours of tail so timers fire, no
/// progress bar).
pub async fn start_pipeline(aws: &Aws, events: &[Value]) -> SetupResult<(Pipeline, ReplayOptions)> {
    start_pipeline_with(aws, events, &[]).await
}

/// [`start_pipeline`] with template parameters overridden (`Name`, `value`).
pub async fn start_pipeline_with(
    aws: &Aws,
    events: &[Value],
    parameters: &[(&str, &str)],
) -> SetupResult<(Pipeline, ReplayOptions)> {
    let start = first_event_time(events).ok_or_else(|| err("pipeline", "no timed events"))?;
    let opts = PipelineOptions {
        template: workspace_root().join("template.yaml"),
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    let pipeline = Pipeline::start(&opts, &aws.config, Arc::new(SimClock::starting_at(start)))
        .await
        .map_err(|e| err("pipeline start", e))?;
    let replay = ReplayOptions {
        tail: chrono::Duration::hours(6),
        progress: false,
        drain_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    Ok((pipeline, replay))
}

/// One HTTP call to the pipeline's API with the admin key: the status and the JSON answer.
pub async fn admin_call(
    pipeline: &Pipeline,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let text = body.map(Value::to_string).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", pipeline.base_url()))
        .header("x-api-key", PipelineOptions::default().admin_key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .expect("request");
    let response = client.request(request).await.expect("admin call");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
