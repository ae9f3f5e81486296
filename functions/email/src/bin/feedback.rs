//! `feedback`: SES event notifications (EventBridge or SNS) → suppressions and Ember events.

use ember_core::clock::SystemClock;
use ember_email::{FeedbackDeps, FeedbackSettings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let settings = FeedbackSettings::from_env()?;
    let sdk = ember_aws::sdk_config().await;
    let deps = &FeedbackDeps::build(&sdk, settings, SystemClock::shared());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcomes = deps
            .handle(&event.payload, chrono::Utc::now())
            .await
            .inspect_err(|e| {
                tracing::error!(error = %e, retryable = e.is_retryable(), "feedback failed");
            })?;
        Ok::<usize, Error>(outcomes.len())
    }))
    .await
}
