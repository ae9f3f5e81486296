//! The reevaluate Lambda: initialisation only. Each `Scheduled Event` from the EventBridge
//! schedule runs [`ember_enrich::Reevaluator::handle`] (a full pass over the profiles table at
//! the event's time); the response is the run's counters.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ember_enrich::{ReevaluateDeps, ReevaluateSettings};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let settings = ReevaluateSettings::from_env()?;
    let sdk = ember_aws::sdk_config().await;
    let deps = &ReevaluateDeps::build(&sdk, &settings)?;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| async move {
            let stats = deps
                .handle(&event.payload, &event.context.request_id)
                .await?;
            Ok::<serde_json::Value, Error>(serde_json::to_value(stats)?)
        },
    ))
    .await
}
