//! The archive-eraser Lambda: initialisation only. Each `Scheduled Event` runs
//! [`ember_api::archive_eraser::EraserDeps::handle`] at the event's time, until a minute
//! before the invocation's deadline; the response is the run's counters.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ember_api::archive_eraser::{EraserDeps, EraserSettings, DEADLINE_MARGIN};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let settings = EraserSettings::from_env()?;
    let sdk = ember_aws::sdk_config().await;
    let deps = &EraserDeps::build(&sdk, &settings);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| async move {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let deadline = Instant::now() + left.saturating_sub(DEADLINE_MARGIN);
            let at = event.payload.time.unwrap_or_else(chrono::Utc::now);
            let report = deps.handle(at, deadline).await?;
            Ok::<serde_json::Value, Error>(serde_json::to_value(report)?)
        },
    ))
    .await
}
