//! Request and response plumbing shared by the handlers: JSON responses, body limits,
//! content-type checks and JSON parsing with line and column.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::Value;

use crate::error::ApiError;

/// A JSON response with the given status.
pub fn json(status: StatusCode, body: &Value) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An HTML response with the given status.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The JSON error response for `err` (with `Allow` on 405).
pub fn error(err: &ApiError) -> Response<Body> {
    let mut response = json(err.status(), &err.body());
    if let ApiError::MethodNotAllowed { allowed, .. } = err {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(header::ALLOW, v);
        }
    }
    response
}

/// A header's value as text, if present and visible ASCII.
pub fn header<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The raw body bytes, refused when larger than `limit`.
pub fn body(req: &Request, limit: usize) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > limit {
        return Err(ApiError::PayloadTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Refuses requests whose media type is not `application/json` (parameters such as
/// `charset=utf-8` are allowed).
pub fn require_json(req: &Request) -> Result<(), ApiError> {
    let given = header(req, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if given.is_empty() {
        Err(ApiError::UnsupportedMediaType("no content-type".to_owned()))
    } else {
        Err(ApiError::UnsupportedMediaType(given.to_owned()))
    }
}

/// Parses JSON, reporting serde's message with line and column.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson {
        message: e.to_string(),
        line: e.line(),
        column: e.column(),
    })
}

/// Whether the client prefers HTML (a browser) over JSON.
pub fn wants_html(req: &Request) -> bool {
    header(req, header::ACCEPT.as_str()).is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse_json(b"{\n  \"a\": 1,\n  \"b\": }").unwrap_err();
        match &err {
            ApiError::MalformedJson {
                line,
                column,
                message,
            } => {
                assert_eq!((*line, *column), (3, 8));
                assert!(message.contains("line 3 column 8"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn content_type_parameters_are_allowed() {
        let mut req = Request::new(Body::Empty);
        assert!(matches!(
            require_json(&req),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(require_json(&req).is_ok());
        req.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(require_json(&req).is_err());
    }

    #[test]
    fn oversize_bodies_are_refused_with_the_limit() {
        let req = Request::new(Body::Text("x".repeat(11)));
        assert!(body(&req, 11).is_ok());
        let err = body(&req, 10).unwrap_err();
        assert_eq!(err.body()["limit_bytes"], 10);
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
