//! The `api` Lambda binary: initialisation only. See the library for the handler.

use ember_api::{handle, ApiConfig, Deps, SystemClock};
use ember_aws::config::env_var;
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_core::schema::Registry;
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let stream_name = env_var("STREAM_NAME")?;
    let profiles_table = env_var("PROFILES_TABLE")?;
    let ledger_table = env_var("LEDGER_TABLE")?;
    let config = ApiConfig::from_env().map_err(|e| format!("configuration: {e}"))?;
    if config.api_keys.is_empty() {
        tracing::warn!("EMBER_API_KEY_HASHES is empty: every event request will be refused");
    }
    let registry = Registry::embedded()?;
    let sdk = ember_aws::sdk_config().await;
    let deps = Deps {
        stream: Box::new(KinesisEventStream::from_conf(&sdk, stream_name)),
        profiles: Box::new(DynamoProfileStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            profiles_table,
        )),
        ledger: Box::new(DynamoLedger::from_conf(&sdk, ledger_table)),
        registry,
        config,
        clock: Box::new(SystemClock),
    };
    let deps = &deps;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handle(deps, req).await)
    }))
    .await
}
