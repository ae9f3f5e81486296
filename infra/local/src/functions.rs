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
use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response};
use serde_json::Value;

use crate::clock::SimClock;
use crate::error::LocalError;
use ember_core::clock::{Clock, SharedClock};
use ember_core::memory::MemoryMetrics;
use ember_core::metrics::Metrics;

pub type JsonFn = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;
pub type HttpFn = Arc<dyn Fn(Request) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

#[derive(Clone)]
pub enum Handler {
    Http(HttpFn),
    Json(JsonFn),
}

fn config_error(binary: &str, e: impl std::fmt::Display) -> LocalError {
    LocalError::Template(format!(
        "function {binary}: configuration from the template's environment: {e}"
    ))
}

async fn call_api(deps: Arc<ember_api::Deps>, req: Request) -> Response<Body> {
    ember_api::handle(&deps, req).await
}

/// Builds the handler of `binary` with `env` (the function's resolved template environment).
pub async fn build(
    binary: &str,
    env: &BTreeMap<String, String>,
    sdk: &SdkConfig,
    sim: Arc<SimClock>,
    collect: Option<&MemoryMetrics>,
) -> Result<Handler, LocalError> {
    let clock: SharedClock = sim;
    let lookup = |name: &str| env.get(name).cloned();
    // The function's own metrics (its stage), written where the run collects them.
    let sink = |metrics: &Metrics| match collect {
        Some(c) => metrics.with_sink(Arc::new(c.clone())),
        None => metrics.clone(),
    };
    match binary {
        "api" => {
            let settings = ember_api::Settings::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let mut deps = ember_api::Deps::build(sdk, settings, clock).map_err(|e| config_error(binary, e))?;
            deps.metrics = sink(&deps.metrics);
            let deps = Arc::new(deps);
            Ok(Handler::Http(Arc::new(move |req| {
                let deps = deps.clone();
                Box::pin(call_api(deps, req))
            })))
        }
        "enrich" => {
            let settings = ember_enrich::Settings::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let mut deps = ember_enrich::Deps::build(sdk, &settings, clock).map_err(|e| config_error(binary, e))?;
            deps.metrics = sink(&deps.metrics);
            let deps = Arc::new(deps);
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
            let settings = ember_enrich::ReevaluateSettings::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let mut deps = ember_enrich::ReevaluateDeps::build(sdk, &settings).map_err(|e| config_error(binary, e))?;
            deps.metrics = sink(&deps.metrics);
            let deps = Arc::new(deps);
            Ok(Handler::Json(Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move {
                    // The schedule's `time` is the run's clock (rule_delivery::scheduled_event).
                    let event: aws_lambda_events::eventbridge::EventBridgeEvent<Value> =
                        serde_json::from_value(event).map_err(|e| format!("not a Scheduled Event: {e}"))?;
                    let request_id = uuid::Uuid::new_v4().to_string();
                    let stats = deps.handle(&event, &request_id).await.map_err(|e| e.to_string())?;
                    serde_json::to_value(stats).map_err(|e| e.to_string())
                })
            })))
        }
        "archive-eraser" => {
            let settings = ember_api::archive_eraser::EraserSettings::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let deps = Arc::new(ember_api::archive_eraser::EraserDeps::build(sdk, &settings));
            Ok(Handler::Json(Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move {
                    let event: aws_lambda_events::eventbridge::EventBridgeEvent<Value> =
                        serde_json::from_value(event).map_err(|e| format!("not a Scheduled Event: {e}"))?;
                    let at = event.time.ok_or("a Scheduled Event without a time")?;
                    // As on Lambda: the function's 15 minutes less the margin.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(840);
                    let report = deps.handle(at, deadline).await.map_err(|e| e.to_string())?;
                    serde_json::to_value(report).map_err(|e| e.to_string())
                })
            })))
        }
        "email" => {
            let settings = ember_email::Settings::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let mut deps = ember_email::Deps::build(sdk, settings, clock.clone()).map_err(|e| config_error(binary, e))?;
            deps.metrics = sink(&deps.metrics);
            let deps = Arc::new(deps);
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
            let settings = ember_email::FeedbackSettings::from_lookup(lookup).map_err(|e| config_error(binary, e))?;
            let mut deps = ember_email::FeedbackDeps::build(sdk, settings, clock.clone());
            deps.metrics = sink(&deps.metrics);
            let deps = Arc::new(deps);
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
            "binary {other} has no in-process handler in ember-local (known: api, archive-eraser, enrich, reevaluate, email, feedback)"
        ))),
    }
}
