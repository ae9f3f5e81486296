//! The `api` Lambda binary: initialisation only. See the library for the handler.

use ember_api::{handle, Deps, Settings, SystemClock};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let settings = Settings::from_env().map_err(|e| format!("configuration: {e}"))?;
    let sdk = ember_aws::sdk_config().await;
    let deps = &Deps::build(&sdk, settings, SystemClock::shared())?;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handle(deps, req).await)
    }))
    .await
}
