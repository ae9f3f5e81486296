//! Provider webhooks: `POST /v1/webhooks/{provider}`.
//!
//! Order of work, so nothing unauthenticated is ever stored:
//! 1. known provider (else 404), body within the limit (else 413);
//! 2. signature (and, for payments, timestamp window) verified over the raw body (else 401);
//! 3. JSON parsed and mapped to Ember events, which are validated with the shared schemas;
//! 4. the events go on the stream; 200 only once they are all there, else 503 so the provider
//!    retries.
//!
//! Nothing is claimed here: event ids are derived from the provider's ids ([`derived_id`]),
//! so a redelivery puts the same ids on the stream again and enrichment's event-id claims
//! apply each event once. A claim at the API would turn a lost answer, or a crash between the
//! claim and the stream write, into a "duplicate" answer for events that never reached the
//! stream, and the provider would stop retrying a paid order.

pub mod payments;
pub mod polls;
pub mod signature;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::Scope;
use crate::error::ApiError;
use crate::events;
use crate::{http, Deps};

/// Providers Ember accepts webhooks from.
pub const PROVIDERS: &[&str] = &[payments::PROVIDER, polls::PROVIDER];

/// What a verified provider payload means for Ember.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Events {
        delivery_id: String,
        events: Vec<Value>,
    },
    /// Verified but of no interest (answered 200 so the provider does not retry).
    Ignored { delivery_id: String, reason: String },
}

/// A stable UUID (version 8, SHA-256 based) for an Ember event derived from a provider id.
pub fn derived_id(provider: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("ember:webhook:{provider}:{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// `POST /v1/webhooks/{provider}`.
pub async fn post(deps: &Deps, provider: &str, req: &Request) -> Result<Response<Body>, ApiError> {
    let cfg = &deps.config;
    let secrets = match provider {
        payments::PROVIDER => &cfg.payments_secrets,
        polls::PROVIDER => &cfg.polls_secrets,
        other => return Err(ApiError::UnknownProvider(other.to_owned())),
    };
    if secrets.is_empty() {
        tracing::warn!(
            provider,
            "webhook received but no signing secret is configured"
        );
        return Err(ApiError::UnknownProvider(format!(
            "{provider} (not configured)"
        )));
    }
    let body = http::body(req, cfg.max_body_bytes)?;
    let now = deps.clock.now();
    match provider {
        payments::PROVIDER => {
            signature::verify_timestamped(
                http::header(req, "stripe-signature"),
                body,
                secrets,
                now,
                cfg.webhook_tolerance,
            )?;
        }
        _ => signature::verify_body(http::header(req, "x-poll-signature"), body, secrets)?,
    }
    http::require_json(req)?;
    let value = http::parse_json(body)?;
    let mapped = match provider {
        payments::PROVIDER => payments::map(&value, now)?,
        _ => polls::map(&value, now)?,
    };
    let (delivery_id, raw_events) = match mapped {
        Mapped::Ignored {
            delivery_id,
            reason,
        } => {
            tracing::info!(provider, delivery_id, reason, "webhook ignored");
            return Ok(http::json(
                StatusCode::OK,
                &json!({ "status": "ignored", "reason": reason }),
            ));
        }
        Mapped::Events {
            delivery_id,
            events,
        } => (delivery_id, events),
    };
    let written = events::accept(deps, req, &raw_events, Scope::Server).await?;
    events::log_written("webhook", &written);
    let ids = written.accepted.clone();
    if let Some((_, _, err)) = written.failed.first() {
        // The provider retries; the derived ids make the events already written harmless.
        return Err(ApiError::dependency("kinesis.put_records", err.clone()));
    }
    tracing::info!(
        provider,
        delivery_id,
        events = ids.len(),
        "webhook accepted"
    );
    Ok(http::json(
        StatusCode::OK,
        &json!({ "status": "accepted", "delivery_id": delivery_id, "event_ids": ids }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_uuids() {
        let a = derived_id("payments", "purchase:pi_1");
        assert_eq!(a, derived_id("payments", "purchase:pi_1"));
        assert_ne!(a, derived_id("polls", "purchase:pi_1"));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 8);
    }
}
