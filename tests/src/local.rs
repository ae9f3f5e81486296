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
        metrics: Some(ember_core::memory::MemoryMetrics::default()),
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
    let key = PipelineOptions::default().admin_key;
    ember_local::config_files::admin_call(&pipeline.base_url(), &key, method, path, body)
        .await
        .expect("admin call")
}
