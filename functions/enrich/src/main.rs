//! The enrich Lambda: initialisation only. Kinesis batches are handled by
//! [`ember_enrich::Enricher::handle`].

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use ember_core::clock::SystemClock;
use ember_enrich::{Deps, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let settings = Settings::from_env()?;
    let sdk = ember_aws::sdk_config().await;
    let deps = &Deps::build(&sdk, &settings, SystemClock::shared())?;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<KinesisEvent>| async move {
            Ok::<KinesisEventResponse, Error>(
                deps.handle(&event.payload, &event.context.request_id).await,
            )
        },
    ))
    .await
}
