//! One-click unsubscribe (RFC 8058): `GET` and `POST /v1/unsubscribe?token=…`.
//!
//! `GET` only verifies the token and shows a confirmation page whose button POSTs back: link
//! scanners and mail-client prefetchers follow GET links, and RFC 8058 requires that they do
//! not unsubscribe anyone. `POST` (what mailbox providers send for one-click, with the body
//! `List-Unsubscribe=One-Click`, and what the page's button sends) verifies the token and puts a
//! `consent_changed {channel: email, granted: false}` event on the stream for the profile the
//! token names; enrichment folds it into the profile and the email function honours it.

use std::str::FromStr;

use ember_core::ports::Erasures;
use ember_core::unsubscribe::{self, Unsubscribe};
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

use crate::auth::Scope;
use crate::error::ApiError;
use crate::events;
use crate::{http, Deps};

/// Source of the consent events this endpoint writes.
pub const SOURCE: &str = "unsubscribe";

/// The token from the query string, or (for POST) from a form-encoded body.
fn token(req: &Request, limit: usize) -> Result<String, ApiError> {
    if let Some(t) = req
        .query_string_parameters_ref()
        .and_then(|q| q.first("token"))
    {
        return Ok(t.to_owned());
    }
    let body = http::body(req, limit)?;
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| QueryMap::from_str(b).ok())
        .and_then(|q| q.first("token").map(str::to_owned))
        .ok_or_else(|| ApiError::InvalidToken("missing token".into()))
}

fn verify(deps: &Deps, req: &Request) -> Result<Unsubscribe, ApiError> {
    let keys = deps.config.unsubscribe_keys.as_ref().ok_or_else(|| {
        ApiError::dependency(
            "config",
            ember_core::ports::PortError::Permanent {
                stage: "config",
                reason: "EMBER_UNSUBSCRIBE_SECRETS is not set".into(),
            },
        )
    })?;
    let token = token(req, deps.config.max_body_bytes)?;
    let claims =
        unsubscribe::verify(keys, &token).map_err(|e| ApiError::InvalidToken(e.to_string()))?;
    let age = deps.clock.now() - claims.issued_at;
    if age > deps.config.unsubscribe_token_ttl {
        return Err(ApiError::InvalidToken(format!(
            "this unsubscribe link expired {} days after the email was sent; use a link from a newer email",
            deps.config.unsubscribe_token_ttl.num_days()
        )));
    }
    Ok(claims)
}

fn page(title: &str, text: &str, form: bool) -> String {
    let button = if form {
        r#"<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>"#
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p>{button}</body></html>"
    )
}

/// `GET /v1/unsubscribe`: verify and ask for confirmation.
pub async fn confirm_page(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    verify(deps, req)?;
    if http::wants_html(req) {
        Ok(http::html(
            StatusCode::OK,
            page(
                "Unsubscribe",
                "Press the button to stop receiving marketing emails from us.",
                true,
            ),
        ))
    } else {
        Ok(http::json(
            StatusCode::OK,
            &json!({ "status": "confirm", "message": "POST to this URL to unsubscribe" }),
        ))
    }
}

/// `POST /v1/unsubscribe`: withdraw email consent.
pub async fn unsubscribe(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let claims = verify(deps, req)?;
    let now = deps.clock.now();
    if deps
        .ledger
        .is_erased(&claims.profile_id)
        .await
        .map_err(|e| ApiError::dependency("ledger.tombstone", e))?
    {
        // Erased: nothing is left to unsubscribe, and nothing may bring the profile back.
        tracing::info!(campaign = %claims.campaign, "unsubscribe of an erased profile: nothing written");
        return Ok(unsubscribed(req));
    }
    let mut event = json!({
        "type": "consent_changed", "version": 1, "source": SOURCE,
        "payload": { "channel": "email", "granted": false },
    });
    match claims
        .profile_id
        .strip_prefix(ember_core::event::ANON_PREFIX)
    {
        Some(anon) => event["anonymous_id"] = json!(anon),
        None => event["user_id"] = json!(claims.profile_id),
    }
    events::fill_defaults(&mut event, now);
    let written = events::accept(deps, req, std::slice::from_ref(&event), Scope::Server).await?;
    if let Some((_, _, err)) = written.failed.first() {
        return Err(ApiError::dependency("kinesis.put_records", err.clone()));
    }
    tracing::info!(campaign = %claims.campaign, "unsubscribed from email");
    Ok(unsubscribed(req))
}

fn unsubscribed(req: &Request) -> Response<Body> {
    if http::wants_html(req) {
        http::html(
            StatusCode::OK,
            page(
                "Unsubscribed",
                "You will not receive marketing emails from us any more.",
                false,
            ),
        )
    } else {
        http::json(StatusCode::OK, &json!({ "status": "unsubscribed" }))
    }
}
