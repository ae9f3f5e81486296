//! Ember's HTTP function behind API Gateway HTTP API (payload format 2.0): first-party events,
//! provider webhooks, one-click unsubscribe and the privacy endpoints. Everything accepted
//! goes on the Kinesis event stream; the enrich function does the rest.
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `POST /v1/events` | API key | one event -> 202 `{"accepted":[id]}` |
//! | `POST /v1/events/batch` | API key | ≤500 events, all-or-nothing validation |
//! | `POST /v1/webhooks/{provider}` | HMAC signature | `payments`, `polls` |
//! | `GET`/`POST /v1/unsubscribe?token=` | signed token | RFC 8058 one-click |
//! | `GET`/`DELETE /v1/profiles/{user_id}` | admin key | export / erasure |
//! | `GET /v1/config`, `/v1/config/versions`, `POST /v1/config/rollback` | admin key | the configuration version in force, every version, rollback |
//! | `GET /v1/{segments,campaigns,templates}[/{name}]`, `PUT`/`DELETE …/{name}` | admin key | runtime configuration, validated and published as a new version (`?dry_run=true`) |
//! | `GET /v1/segments/{name}/preview`, `POST` with a rule not yet published | admin key | who matches a segment now (parallel scan) |
//! | `GET /v1/campaigns/{name}/preview` | admin key | how many emails a campaign would send now, and why not the others |
//!
//! The OpenAPI document `openapi.yaml` beside this crate's `Cargo.toml` describes them; a test
//! keeps it in step with [`router::ROUTES`] and [`error::ERROR_CODES`].
//!
//! # Layout
//! - [`handle`]: the entry point: route, dispatch, map every error to a JSON response.
//! - [`router`]: the route table and path matching (404 / 405).
//! - [`events`]: defaults, schema validation, stream writes and per-entry results.
//! - [`webhooks`]: signature schemes and provider mappings.
//! - [`unsubscribe`], [`privacy`]: consent withdrawal, export and erasure;
//!   [`archive_eraser`]: the scheduled function that clears the archive of erased customers.
//! - [`admin`]: the configuration admin API and the one publish path (also used by the
//!   `ember-local config` command); [`preview`]: segment and campaign previews by parallel scan;
//!   [`report`]: a campaign's report (variants, holdout, uplift) from its counters.
//! - [`auth`]: hashed API keys, constant-time comparison.
//! - [`http`]: body limit, content type, JSON parsing and responses.
//! - [`config`]: [`Settings`] from the environment (`Settings::from_lookup`).
//! - [`deps`]: [`Deps`], the ports a request needs, and `Deps::build`, the one production
//!   wiring (used by `main.rs` and by the local runner).
//! - [`error`]: the error enum and its HTTP mapping.

pub mod admin;
pub mod archive_eraser;
pub mod auth;
pub mod config;
pub mod deps;
pub mod error;
pub mod events;
pub mod http;
pub mod preview;
pub mod privacy;
pub mod report;
pub mod router;
pub mod unsubscribe;
pub mod webhooks;

use ember_core::privacy::{redact_addresses, redact_path};
use lambda_http::{Body, Request, RequestExt, Response};

pub use config::{ApiConfig, Settings};
pub use deps::Deps;
pub use ember_core::clock::{Clock, FixedClock, SystemClock};
pub use error::ApiError;
use router::Endpoint;

/// Handles one request. Never fails: every error becomes a JSON response.
pub async fn handle(deps: &Deps, req: Request) -> Response<Body> {
    let method = req.method().as_str().to_owned();
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path().to_owned()
    } else {
        raw.to_owned()
    };
    let result = match router::resolve(&method, &path) {
        Ok(endpoint) => dispatch(deps, &req, endpoint).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => response,
        Err(err) => {
            if err.status().is_server_error() {
                tracing::error!(method, path = %redact_path(&path), code = err.code(), error = %redact_addresses(&err.to_string()), "request failed");
            } else {
                tracing::info!(method, path = %redact_path(&path), code = err.code(), error = %redact_addresses(&err.to_string()), "request refused");
            }
            http::error(&err)
        }
    }
}

async fn dispatch(
    deps: &Deps,
    req: &Request,
    endpoint: Endpoint,
) -> Result<Response<Body>, ApiError> {
    match endpoint {
        Endpoint::PostEvent => events::post_event(deps, req).await,
        Endpoint::PostEventBatch => events::post_batch(deps, req).await,
        Endpoint::PostWebhook { provider } => webhooks::post(deps, &provider, req).await,
        Endpoint::UnsubscribePage => unsubscribe::confirm_page(deps, req).await,
        Endpoint::Unsubscribe => unsubscribe::unsubscribe(deps, req).await,
        Endpoint::ExportProfile { user_id } => privacy::export(deps, req, &user_id).await,
        Endpoint::DeleteProfile { user_id } => privacy::erase(deps, req, &user_id).await,
        Endpoint::GetConfig => admin::get_config(deps, req).await,
        Endpoint::ConfigVersions => admin::versions(deps, req).await,
        Endpoint::Rollback => admin::rollback(deps, req).await,
        Endpoint::ListConfig { kind } => admin::list(deps, req, kind).await,
        Endpoint::GetConfigItem { kind, name } => admin::get(deps, req, kind, &name).await,
        Endpoint::PutConfigItem { kind, name } => {
            admin::change(deps, req, kind, &name, false).await
        }
        Endpoint::DeleteConfigItem { kind, name } => {
            admin::change(deps, req, kind, &name, true).await
        }
        Endpoint::PreviewSegment { name } => preview::published(deps, req, &name).await,
        Endpoint::PreviewRule { name } => preview::posted(deps, req, &name).await,
        Endpoint::PreviewCampaign { name } => preview::campaign(deps, req, &name).await,
        Endpoint::CampaignReport { name } => report::get(deps, req, &name).await,
    }
}

#[cfg(test)]
mod tests {
    //! The handler with fixtures from `events/apigw/` and in-memory ports (the emulator tests
    //! in `tests/tests/api.rs` use the real adapters).

    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use chrono::DateTime;
    use ember_core::ports::{PortResult, StreamRecord};
    use serde_json::{json, Value};

    use super::*;

    #[derive(Clone, Default)]
    struct Memory {
        records: Arc<Mutex<Vec<StreamRecord>>>,
        ledger: ember_core::memory::MemoryLedger,
        bus: ember_core::memory::MemoryBus,
        metrics: ember_core::memory::MemoryMetrics,
    }

    #[async_trait]
    impl ember_core::ports::EventStream for Memory {
        async fn put(&self, records: &[StreamRecord]) -> Vec<PortResult<String>> {
            let mut all = self.records.lock().unwrap();
            records
                .iter()
                .map(|r| {
                    all.push(r.clone());
                    Ok(all.len().to_string())
                })
                .collect()
        }
    }

    fn deps(memory: &Memory) -> Deps {
        let config = ApiConfig::from_lookup(|name| {
            Some(match name {
                "EMBER_API_KEY_HASHES" => auth::KeyHashes::hash_key("ember-fixture-api-key"),
                "EMBER_BROWSER_KEY_HASHES" => auth::KeyHashes::hash_key("ember-browser-key"),
                "EMBER_ADMIN_KEY_HASHES" => auth::KeyHashes::hash_key("ember-fixture-admin-key"),
                "EMBER_PAYMENTS_WEBHOOK_SECRETS" => "whsec_ember_fixture_payments_1".into(),
                "EMBER_POLLS_WEBHOOK_SECRETS" => "ember_fixture_polls_secret_1".into(),
                "EMBER_UNSUBSCRIBE_SECRETS" => "ember-fixture-unsubscribe-secret-1".into(),
                _ => return None,
            })
        })
        .unwrap();
        Deps {
            stream: Box::new(memory.clone()),
            profiles: Box::new(ember_core::memory::MemoryProfileStore::default()),
            ledger: Arc::new(memory.ledger.clone()),
            bus: Box::new(memory.bus.clone()),
            registry: ember_core::schema::Registry::embedded().unwrap(),
            config,
            clock: Box::new(FixedClock(
                DateTime::from_timestamp(1_795_168_805, 0).unwrap(),
            )),
            metrics: memory.metrics.metrics(),
        }
    }

    fn fixture(name: &str) -> Request {
        let path = format!("{}/../../events/apigw/{name}", env!("CARGO_MANIFEST_DIR"));
        lambda_http::request::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    async fn call(deps: &Deps, name: &str) -> (u16, Value) {
        let r = handle(deps, fixture(name)).await;
        let body: &[u8] = r.body().as_ref();
        (
            r.status().as_u16(),
            serde_json::from_slice(body).unwrap_or(Value::Null),
        )
    }

    /// A fixture request with another key and body.
    fn with(name: &str, key: &str, body: Option<Value>) -> Request {
        let path = format!("{}/../../events/apigw/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut payload: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        payload["headers"]["x-api-key"] = json!(key);
        if let Some(b) = body {
            payload["body"] = json!(b.to_string());
            payload["headers"]["content-length"] = json!(b.to_string().len().to_string());
        }
        lambda_http::request::from_str(&payload.to_string()).unwrap()
    }

    async fn status_and_body(deps: &Deps, req: Request) -> (u16, Value) {
        let r = handle(deps, req).await;
        let body: &[u8] = r.body().as_ref();
        (
            r.status().as_u16(),
            serde_json::from_slice(body).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn the_configuration_fixtures_publish_refuse_and_preview() {
        let memory = Memory::default();
        let deps = deps(&memory);
        let (status, body) = call(&deps, "config-get.json").await;
        assert_eq!((status, &body["version"]), (200, &json!(0)), "{body}");
        let (status, body) = call(&deps, "config-campaign-invalid.json").await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_config")));
        assert_eq!(
            body["problems"][0]["path"], "campaigns/vip_thanks",
            "{body}"
        );
        let (status, body) = call(&deps, "config-template-subject.json").await;
        assert_eq!((status, &body["version"]), (200, &json!(1)), "{body}");
        let announced = memory.bus.take();
        assert!(
            matches!(&announced[..], [ember_core::ports::BusEvent::ConfigPublished(c)] if c.version == 1),
            "{announced:?}"
        );
        let (status, body) = call(&deps, "config-get.json").await;
        assert_eq!((status, &body["note"]), (200, &json!("new-subject-line")));
        let (status, body) = call(&deps, "config-segment-preview.json").await;
        assert_eq!((status, &body["matching"]), (200, &json!(0)), "{body}");
    }

    #[tokio::test]
    async fn a_browser_key_sends_behavioural_events_only() {
        let memory = Memory::default();
        let deps = deps(&memory);
        let view = json!({"type": "page_view", "version": 1, "anonymous_id": "a-1",
                          "payload": {"url": "https://shop.example/"}});
        let (status, _) = status_and_body(
            &deps,
            with("event-single.json", "ember-browser-key", Some(view.clone())),
        )
        .await;
        assert_eq!(status, 202);
        let batch = json!([
            view,
            {"type": "profile_updated", "version": 1, "user_id": "u-victim",
             "payload": {"email": "attacker@example.com"}},
            {"type": "consent_changed", "version": 1, "user_id": "u-victim",
             "payload": {"channel": "email", "granted": true}},
        ]);
        let (status, body) = status_and_body(
            &deps,
            with("event-batch.json", "ember-browser-key", Some(batch.clone())),
        )
        .await;
        assert_eq!(
            (status, &body["error"]),
            (403, &json!("insufficient_scope")),
            "{body}"
        );
        let indices: Vec<u64> = body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indices, [1, 2], "every refused entry is named");
        assert_eq!(
            memory.records.lock().unwrap().len(),
            1,
            "nothing of the batch accepted"
        );
        // The same batch with a server key is accepted.
        let (status, _) = status_and_body(
            &deps,
            with("event-batch.json", "ember-fixture-api-key", Some(batch)),
        )
        .await;
        assert_eq!(status, 202);

        // The EMF lines count every entry by type, refused ones by reason.
        let m = &memory.metrics;
        let refused = |t: &str, why: &str| m.sum("EventsRefused", &[("Type", t), ("Reason", why)]);
        assert_eq!(refused("profile_updated", "insufficient_scope"), 1.0);
        assert_eq!(refused("consent_changed", "insufficient_scope"), 1.0);
        assert_eq!(refused("page_view", "batch_refused"), 1.0);
        assert_eq!(m.sum("EventsAccepted", &[("Type", "page_view")]), 2.0);
        assert_eq!(m.sum("EventsAccepted", &[("Type", "profile_updated")]), 1.0);
        assert_eq!(m.sum("EventsAccepted", &[]), 4.0);
        for doc in m.documents() {
            assert_eq!(doc["Stage"], "test");
            assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Ember");
        }
    }

    #[tokio::test]
    async fn events_carry_the_requests_trace_context() {
        let memory = Memory::default();
        let deps = deps(&memory);
        let trace = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
        let mut req = with("event-single.json", "ember-fixture-api-key", None);
        req.headers_mut()
            .insert("traceparent", trace.parse().unwrap());
        assert_eq!(status_and_body(&deps, req).await.0, 202);
        // Without a traceparent: API Gateway's X-Ray header.
        assert_eq!(call(&deps, "event-batch.json").await.0, 202);
        let records = memory.records.lock().unwrap().clone();
        let traces: Vec<Value> = records
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.data).unwrap()["trace"].clone())
            .collect();
        assert_eq!(traces[0], json!(trace));
        let xray = "00-6740a1b20123456789abcdef01234567-89abcdef01234567-00";
        assert!(traces[1..].iter().all(|t| *t == json!(xray)), "{traces:?}");
    }

    #[tokio::test]
    async fn an_unsubscribe_link_expires() {
        let memory = Memory::default();
        let mut deps = deps(&memory);
        let (status, _) = call(&deps, "unsubscribe-one-click.json").await;
        assert_eq!(status, 200);
        deps.config.unsubscribe_token_ttl = chrono::Duration::seconds(1);
        let (status, body) = call(&deps, "unsubscribe-one-click.json").await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid_token")),
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("expired"),
            "{body}"
        );
    }

    /// The handler's future must be `Send + 'static` when it owns its deps (runtimes and the
    /// local runner spawn it); this fails to compile otherwise.
    #[allow(clippy::manual_async_fn)] // the explicit `Send + 'static` bound is the point
    fn owned_handler_future(
        deps: Arc<Deps>,
        req: Request,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'static {
        async move { handle(&deps, req).await }
    }

    #[tokio::test]
    async fn handler_future_can_be_spawned() {
        let memory = Memory::default();
        let task = tokio::spawn(owned_handler_future(
            Arc::new(deps(&memory)),
            fixture("event-single.json"),
        ));
        assert_eq!(task.await.unwrap().status().as_u16(), 202);
    }

    #[tokio::test]
    async fn fixtures_get_the_documented_answers() {
        let memory = Memory::default();
        let deps = deps(&memory);
        let cases = [
            ("event-single.json", 202, None),
            ("event-batch.json", 202, None),
            ("event-bad-json.json", 400, Some("malformed_json")),
            ("event-wrong-types.json", 400, Some("validation_failed")),
            ("event-missing-fields.json", 400, Some("validation_failed")),
            ("event-unknown-type.json", 400, Some("validation_failed")),
            ("event-no-api-key.json", 401, Some("missing_credentials")),
            (
                "event-wrong-content-type.json",
                415,
                Some("unsupported_media_type"),
            ),
            (
                "webhook-payments-bad-signature.json",
                401,
                Some("invalid_signature"),
            ),
            (
                "webhook-payments-unsigned.json",
                401,
                Some("invalid_signature"),
            ),
            (
                "webhook-payments-replayed.json",
                401,
                Some("stale_timestamp"),
            ),
            (
                "webhook-unknown-provider.json",
                404,
                Some("unknown_provider"),
            ),
            ("unsubscribe-bad-token.json", 400, Some("invalid_token")),
            (
                "profile-delete-non-admin.json",
                403,
                Some("invalid_credentials"),
            ),
            ("profile-export.json", 404, Some("profile_not_found")),
            ("unknown-route.json", 404, Some("not_found")),
            ("wrong-method.json", 405, Some("method_not_allowed")),
        ];
        for (name, status, code) in cases {
            let (got, body) = call(&deps, name).await;
            assert_eq!(got, status, "{name}: {body}");
            if let Some(code) = code {
                assert_eq!(body["error"], code, "{name}: {body}");
                assert!(
                    body["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{name}: {body}"
                );
            }
        }
        assert_eq!(
            memory.records.lock().unwrap().len(),
            4,
            "1 single + 3 batch"
        );
    }

    #[tokio::test]
    async fn base64_encoded_bodies_are_decoded_before_checks() {
        use base64::Engine as _;
        let memory = Memory::default();
        let deps = deps(&memory);
        let path = format!(
            "{}/../../events/apigw/event-single.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut payload: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let body = payload["body"].as_str().unwrap().to_owned();
        payload["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
        payload["isBase64Encoded"] = json!(true);
        let r = handle(
            &deps,
            lambda_http::request::from_str(&payload.to_string()).unwrap(),
        )
        .await;
        assert_eq!(r.status().as_u16(), 202);
        assert_eq!(memory.records.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn webhook_deliveries_are_accepted_each_time_with_the_same_event_ids() {
        let memory = Memory::default();
        let deps = deps(&memory);
        let (status, first) = call(&deps, "webhook-payments-checkout-completed.json").await;
        assert_eq!(
            (status, &first["status"]),
            (200, &json!("accepted")),
            "{first}"
        );
        let (status, again) = call(&deps, "webhook-payments-checkout-completed.json").await;
        assert_eq!((status, &again["event_ids"]), (200, &first["event_ids"]));
        let (status, _) = call(&deps, "webhook-polls.json").await;
        assert_eq!(status, 200);
        assert_eq!(memory.records.lock().unwrap().len(), 2 + 3);
    }

    #[tokio::test]
    async fn unsubscribe_page_confirms_and_post_withdraws_consent() {
        let memory = Memory::default();
        let deps = deps(&memory);
        let r = handle(&deps, fixture("unsubscribe-page.json")).await;
        assert_eq!(r.status().as_u16(), 200);
        assert!(memory.records.lock().unwrap().is_empty());
        let (status, body) = call(&deps, "unsubscribe-one-click.json").await;
        assert_eq!((status, body), (200, json!({"status": "unsubscribed"})));
        let records = memory.records.lock().unwrap();
        let event: Value = serde_json::from_slice(&records[0].data).unwrap();
        assert_eq!(
            event["payload"],
            json!({"channel": "email", "granted": false})
        );
        assert_eq!(records[0].partition_key, "u-fixture-1");
    }
}
