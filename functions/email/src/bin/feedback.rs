//! `feedback`: SES event notifications (EventBridge or SNS) → suppressions and Ember events.

use ember_aws::config::env_var;
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_email::Feedback;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let sdk = ember_aws::sdk_config().await;
    let deps = Feedback {
        ledger: DynamoLedger::from_conf(&sdk, env_var("LEDGER_TABLE")?),
        stream: KinesisEventStream::from_conf(&sdk, env_var("STREAM_NAME")?),
    };
    let deps = &deps;
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
