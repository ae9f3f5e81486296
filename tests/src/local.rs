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
    let start = first_event_time(events).ok_or_else(|| err("pipeline", "no timed events"))?;
    let opts = PipelineOptions {
        template: workspace_root().join("template.yaml"),
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
