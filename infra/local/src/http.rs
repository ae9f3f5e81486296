//! The local HTTP API: a hyper server on 127.0.0.1 that does what API Gateway (HTTP API,
//! payload format 2.0) does for the template's routes: match the route (404 `Not Found` like
//! API Gateway otherwise), build the v2 request event, hand it to the api handler as a
//! `lambda_http::Request`, and write its response back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use chrono::Utc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::LocalError;
use crate::functions::HttpFn;

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// A route from the template's `HttpApi` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
}

impl Route {
    /// Whether the path ends in a greedy `{name+}` parameter.
    pub fn is_greedy(&self) -> bool {
        self.path.ends_with("+}")
    }

    /// Path parameters when `path` matches this route's template (`{name}` = one segment,
    /// `{name+}` = the rest).
    pub fn matches(&self, method: &str, path: &str) -> Option<BTreeMap<String, String>> {
        if self.method != "ANY" && !self.method.eq_ignore_ascii_case(method) {
            return None;
        }
        let want: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut params = BTreeMap::new();
        for (i, w) in want.iter().enumerate() {
            if let Some(name) = w.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                if let Some(greedy) = name.strip_suffix('+') {
                    let rest = got.get(i..)?.join("/");
                    if rest.is_empty() {
                        return None;
                    }
                    params.insert(greedy.to_owned(), rest);
                    return Some(params);
                }
                let seg = got.get(i).filter(|s| !s.is_empty())?;
                params.insert(name.to_owned(), percent_decode(seg));
            } else if got.get(i) != Some(w) {
                return None;
            }
        }
        (want.len() == got.len()).then_some(params)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    routes: Arc<Vec<(Route, HttpFn)>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LocalError> {
    let local = listener
        .local_addr()
        .map_err(|e| LocalError::pipeline("http bind", e))?;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return Ok(()),
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(respond(req, &routes, local, peer).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
}

async fn respond(
    req: hyper::Request<Incoming>,
    routes: &[(Route, HttpFn)],
    local: SocketAddr,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(413, r#"{"message":"Request Entity Too Large"}"#),
    };
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    // Like API Gateway, a specific route wins over a greedy (`{proxy+}`) one.
    let Some((route, handler, params)) = [false, true].into_iter().find_map(|greedy| {
        routes
            .iter()
            .filter(|(r, _)| r.is_greedy() == greedy)
            .find_map(|(r, h)| r.matches(&method, &path).map(|p| (r, h, p)))
    }) else {
        return plain(404, r#"{"message":"Not Found"}"#);
    };
    let event = v2_event(&parts, &body, route, &params, local, peer);
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not build the API Gateway v2 request");
            return plain(500, r#"{"message":"Internal Server Error"}"#);
        }
    };
    let response = handler(request).await;
    let (rparts, rbody) = response.into_parts();
    let bytes = match rbody {
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    let mut out = hyper::Response::new(Full::new(bytes));
    *out.status_mut() = rparts.status;
    *out.headers_mut() = rparts.headers;
    out
}

fn plain(status: u16, body: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The API Gateway HTTP API (payload 2.0) event for a request.
fn v2_event(
    parts: &http::request::Parts,
    body: &Bytes,
    route: &Route,
    params: &BTreeMap<String, String>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::COOKIE {
            cookies.extend(v.split(';').map(|c| Value::String(c.trim().to_owned())));
            continue;
        }
        let key = name.as_str().to_ascii_lowercase();
        match headers.get_mut(&key) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                headers.insert(key, Value::String(v));
            }
        }
    }
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let mut query = Map::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match query.get_mut(&k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    let (body_text, b64) = match std::str::from_utf8(body) {
        Ok(s) => (s.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let now = Utc::now();
    let route_key = format!("{} {}", route.method, route.path);
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": local.to_string(),
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": parts.headers.get(hyper::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": b64,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !params.is_empty() {
        event["pathParameters"] = json!(params);
    }
    if !body.is_empty() {
        event["body"] = Value::String(body_text);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Route {
        Route {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn routes_match_like_api_gateway() {
        let r = route("GET", "/v1/profiles/{user_id}");
        assert_eq!(
            r.matches("GET", "/v1/profiles/u%2D1").unwrap()["user_id"],
            "u-1"
        );
        assert!(r.matches("DELETE", "/v1/profiles/u1").is_none());
        assert!(r.matches("GET", "/v1/profiles").is_none());
        assert!(r.matches("GET", "/v1/profiles/a/b").is_none());
        let any = route("ANY", "/files/{key+}");
        assert_eq!(any.matches("PUT", "/files/a/b").unwrap()["key"], "a/b");
    }

    #[test]
    fn broken_percent_escapes_never_panic() {
        let r = route("GET", "/v1/profiles/{user_id}");
        // A `%` right before a multi-byte character used to slice inside it and panic.
        assert_eq!(
            r.matches("GET", "/v1/profiles/%aé").unwrap()["user_id"],
            "%aé"
        );
        assert_eq!(
            r.matches("GET", "/v1/profiles/u%41").unwrap()["user_id"],
            "uA"
        );
        assert_eq!(
            r.matches("GET", "/v1/profiles/u%").unwrap()["user_id"],
            "u%"
        );
    }
}
