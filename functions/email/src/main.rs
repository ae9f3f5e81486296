//! `email`: segment-bus events and the sweeper's one-minute schedule. Initialisation only.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ember_core::clock::SystemClock;
use ember_email::{Deps, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let settings = Settings::from_env()?;
    let sdk = ember_aws::sdk_config().await;
    let deps = &Deps::build(&sdk, settings, SystemClock::shared())?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent<Value>>| async move {
        let outcomes = deps.handle(&event.payload, chrono::Utc::now()).await.inspect_err(|e| {
            tracing::error!(error = %e, retryable = e.is_retryable(), detail_type = %event.payload.detail_type, "email failed");
        })?;
        Ok::<usize, Error>(outcomes.iter().filter(|o| o.is_sent()).count())
    }))
    .await
}
