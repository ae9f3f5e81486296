//! `email`: segment-bus events and the sweeper's one-minute schedule. Initialisation only.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use ember_aws::config::env_var;
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::sesv2::SesMailer;
use ember_core::unsubscribe::Keys;
use ember_email::{Email, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

type Deps = Email<DynamoProfileStore, DynamoLedger, SesMailer, KinesisEventStream>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    ember_aws::telemetry::init();
    let sdk = ember_aws::sdk_config().await;
    let (campaigns, rules, renderer) = ember_email::embedded_config()?;
    let settings = Settings {
        sender: env_var("EMBER_SENDER")?,
        public_base_url: env_var("EMBER_PUBLIC_BASE_URL")?,
        unsubscribe_keys: Keys::parse(&env_var("EMBER_UNSUBSCRIBE_SECRETS")?)?,
    };
    let deps: Deps = Email {
        profiles: DynamoProfileStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            env_var("PROFILES_TABLE")?,
        ),
        ledger: DynamoLedger::from_conf(&sdk, env_var("LEDGER_TABLE")?),
        mailer: SesMailer::from_conf(
            &sdk,
            std::env::var("SES_CONFIGURATION_SET")
                .ok()
                .filter(|s| !s.is_empty()),
        ),
        stream: KinesisEventStream::from_conf(&sdk, env_var("STREAM_NAME")?),
        campaigns,
        rules,
        renderer,
        settings,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent<Value>>| async move {
        let outcomes = deps.handle(&event.payload, chrono::Utc::now()).await.inspect_err(|e| {
            tracing::error!(error = %e, retryable = e.is_retryable(), detail_type = %event.payload.detail_type, "email failed");
        })?;
        Ok::<usize, Error>(outcomes.iter().filter(|o| o.is_sent()).count())
    }))
    .await
}
