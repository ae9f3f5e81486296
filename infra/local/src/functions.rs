//! The in-process stand-ins for the Lambda functions: for each binary the template names
//! (`Metadata.BuildProperties.Binary`), the real handler from its function crate, built from
//! the environment the template gives that function (resolved against the provisioned
//! resources) and the run's clock.
//!
//! Non-HTTP functions are called across the same JSON boundary Lambda uses: the event as JSON
//! in, the response as JSON out (`Err` = a function error).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response};
use serde_json::Value;

use crate::clock::SimClock;
use crate::error::LocalError;

pub type JsonFn = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;
pub type HttpFn = Arc<dyn Fn(Request) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

#[derive(Clone)]
pub enum Handler {
    Http(HttpFn),
    Json(JsonFn),
}

/// The api function's clock, following the run's clock.
struct ApiClock(Arc<SimClock>);

impl ember_api::Clock for ApiClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

fn config_error(binary: &str, e: impl std::fmt::Display) -> LocalError {
    LocalError::Template(format!(
        "function {binary}: configuration from the template's environment: {e}"
    ))
}

fn required(
    env: &BTreeMap<String, String>,
    binary: &str,
    name: &str,
) -> Result<String, LocalError> {
    env.get(name)
        .filter(|v| !v.trim().is_empty())
        .cloned()
        .ok_or_else(|| config_error(binary, format!("{name} is not set")))
}

/// The ledger, deciding expiry on the run's clock (a replay of last week's events must not
/// see its timers and caps as long expired).
fn ledger(
    sdk: &SdkConfig,
    table: String,
    clock: &Arc<SimClock>,
) -> ember_aws::ledger::DynamoLedger {
    let clock = clock.clone();
    ember_aws::ledger::DynamoLedger::from_conf(sdk, table).with_clock(move || clock.now())
}

async fn call_api(deps: Arc<ember_api::Deps>, req: Request) -> Response<Body> {
    ember_api::handle(&deps, req).await
}

/// Builds the handler of `binary` with `env` (the function's resolved template environment).
pub async fn build(
    binary: &str,
    env: &BTreeMap<String, String>,
    sdk: &SdkConfig,
    clock: Arc<SimClock>,
) -> Result<Handler, LocalError> {
    let lookup = |name: &str| env.get(name).cloned();
    match binary {
        "api" => {
            let config = ember_api::ApiConfig::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let registry = ember_core::schema::Registry::embedded().map_err(|e| config_error(binary, e))?;
            let deps = Arc::new(ember_api::Deps {
                stream: Box::new(ember_aws::kinesis::KinesisEventStream::from_conf(
                    sdk,
                    required(env, binary, "STREAM_NAME")?,
                )),
                profiles: Box::new(ember_aws::profiles::DynamoProfileStore::new(
                    aws_sdk_dynamodb::Client::new(sdk),
                    required(env, binary, "PROFILES_TABLE")?,
                )),
                ledger: Box::new(ledger(sdk, required(env, binary, "LEDGER_TABLE")?, &clock)),
                registry,
                config,
                clock: Box::new(ApiClock(clock.clone())),
            });
            Ok(Handler::Http(Arc::new(move |req| {
                let deps = deps.clone();
                Box::pin(call_api(deps, req))
            })))
        }
        "enrich" => {
            let config = ember_enrich::Config::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let deps = Arc::new(ember_enrich::Deps::from_config(sdk, &config).map_err(|e| config_error(binary, e))?);
            Ok(Handler::Json(Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move {
                    let event: aws_lambda_events::event::kinesis::KinesisEvent =
                        serde_json::from_value(event).map_err(|e| format!("not a Kinesis event: {e}"))?;
                    let request_id = uuid::Uuid::new_v4().to_string();
                    let response = deps.handle(&event, &request_id).await;
                    serde_json::to_value(response).map_err(|e| e.to_string())
                })
            })))
        }
        "reevaluate" => {
            let config = ember_enrich::ReevaluateConfig::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let deps = Arc::new(ember_enrich::ReevaluateDeps::from_config(sdk, &config).map_err(|e| config_error(binary, e))?);
            Ok(Handler::Json(Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move {
                    // The schedule's `time` is the run's clock (pollers::scheduled_event).
                    let event: aws_lambda_events::eventbridge::EventBridgeEvent<Value> =
                        serde_json::from_value(event).map_err(|e| format!("not a Scheduled Event: {e}"))?;
                    let request_id = uuid::Uuid::new_v4().to_string();
                    let stats = deps.handle(&event, &request_id).await.map_err(|e| e.to_string())?;
                    serde_json::to_value(stats).map_err(|e| e.to_string())
                })
            })))
        }
        "email" => {
            let (campaigns, rules, renderer) =
                ember_email::embedded_config().map_err(|e| config_error(binary, e))?;
            let settings = ember_email::Settings {
                sender: required(env, binary, "EMBER_SENDER")?,
                public_base_url: required(env, binary, "EMBER_PUBLIC_BASE_URL")?,
                unsubscribe_keys: ember_core::unsubscribe::Keys::parse(&required(
                    env,
                    binary,
                    "EMBER_UNSUBSCRIBE_SECRETS",
                )?)
                .map_err(|e| config_error(binary, e))?,
            };
            let deps = Arc::new(ember_email::Email {
                profiles: ember_aws::profiles::DynamoProfileStore::new(
                    aws_sdk_dynamodb::Client::new(sdk),
                    required(env, binary, "PROFILES_TABLE")?,
                ),
                ledger: ledger(sdk, required(env, binary, "LEDGER_TABLE")?, &clock),
                mailer: ember_aws::sesv2::SesMailer::from_conf(
                    sdk,
                    env.get("SES_CONFIGURATION_SET").filter(|s| !s.is_empty()).cloned(),
                ),
                stream: ember_aws::kinesis::KinesisEventStream::from_conf(sdk, required(env, binary, "STREAM_NAME")?),
                campaigns,
                rules,
                renderer,
                settings,
            });
            Ok(Handler::Json(Arc::new(move |event| {
                let deps = deps.clone();
                let clock = clock.clone();
                Box::pin(async move {
                    let event: aws_lambda_events::eventbridge::EventBridgeEvent<Value> =
                        serde_json::from_value(event).map_err(|e| format!("not an EventBridge event: {e}"))?;
                    let outcomes = deps.handle(&event, clock.now()).await.map_err(|e| e.to_string())?;
                    // Like the binary: the response is the number of emails sent.
                    Ok(Value::from(outcomes.iter().filter(|o| o.is_sent()).count()))
                })
            })))
        }
        "feedback" => {
            let deps = Arc::new(ember_email::Feedback {
                ledger: ledger(sdk, required(env, binary, "LEDGER_TABLE")?, &clock),
                stream: ember_aws::kinesis::KinesisEventStream::from_conf(sdk, required(env, binary, "STREAM_NAME")?),
            });
            Ok(Handler::Json(Arc::new(move |event| {
                let deps = deps.clone();
                let clock = clock.clone();
                Box::pin(async move {
                    let outcomes = deps.handle(&event, clock.now()).await.map_err(|e| e.to_string())?;
                    Ok(Value::from(outcomes.len()))
                })
            })))
        }
        other => Err(LocalError::Template(format!(
            "binary {other} has no in-process handler in ember-local (known: api, enrich, reevaluate, email, feedback)"
        ))),
    }
}
