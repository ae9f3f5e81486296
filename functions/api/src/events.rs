//! First-party events: `POST /v1/events` and `POST /v1/events/batch`.
//!
//! Each event gets server defaults (`event_id` = UUID v4, `source` = `"api"`, `occurred_at` =
//! the time the API received it) where the client left them out, is validated with the shared
//! schemas, and is put on the stream keyed by its profile. A batch is all-or-nothing at
//! validation: if any entry is invalid, nothing is written and every problem is reported with
//! the entry's index. Stream failures that remain after retries are reported per entry
//! (207 when some entries were written, 503 when none were), never silently dropped.

use chrono::{DateTime, SecondsFormat, Utc};
use ember_core::error::Problem;
use ember_core::event::EventType;
use ember_core::metrics::{self, Recorder};
use ember_core::ports::{EventStream, PortError, StreamRecord};
use ember_core::schema::Registry;
use ember_core::trace::TraceContext;
use ember_core::Envelope;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};

use crate::auth::{self, Scope};
use crate::error::{ApiError, IndexedProblem};
use crate::{http, Deps};

/// Most events one batch may carry (one Kinesis `PutRecords` call).
pub const MAX_BATCH: usize = 500;

/// Source recorded for events that do not name one.
pub const DEFAULT_SOURCE: &str = "api";

/// An event that passed validation, ready for the stream.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub envelope: Envelope,
    pub record: StreamRecord,
}

/// Fills `event_id`, `source` and `occurred_at` where absent (or null). Non-objects are left
/// alone for the schema to report.
pub fn fill_defaults(event: &mut Value, now: DateTime<Utc>) {
    if let Some(map) = event.as_object_mut() {
        let missing =
            |m: &serde_json::Map<String, Value>, k: &str| m.get(k).is_none_or(Value::is_null);
        if missing(map, "event_id") {
            map.insert("event_id".into(), json!(uuid::Uuid::new_v4().to_string()));
        }
        if missing(map, "source") {
            map.insert("source".into(), json!(DEFAULT_SOURCE));
        }
        if missing(map, "occurred_at") {
            map.insert(
                "occurred_at".into(),
                json!(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
    }
}

/// Validates one event and turns it into a stream record keyed by its profile, carrying
/// `trace` (the request's trace context) or else the one the event names.
pub fn prepare(
    registry: &Registry,
    event: &Value,
    trace: Option<&TraceContext>,
) -> Result<Prepared, Vec<Problem>> {
    let mut envelope = registry.validate(event)?;
    if let Some(t) = trace {
        envelope.trace = Some(t.to_string());
    }
    let Some(partition_key) = envelope.profile_key() else {
        return Err(vec![Problem::new(
            "/user_id",
            "either user_id or anonymous_id is required",
        )]);
    };
    let data = serde_json::to_vec(&envelope)
        .map_err(|e| vec![Problem::new("", format!("cannot serialise the event: {e}"))])?;
    Ok(Prepared {
        envelope,
        record: StreamRecord {
            partition_key,
            data,
        },
    })
}

/// Validates every event; all problems of all entries, or all prepared events.
pub fn prepare_all(
    registry: &Registry,
    events: &[Value],
    trace: Option<&TraceContext>,
) -> Result<Vec<Prepared>, ApiError> {
    let mut prepared = Vec::with_capacity(events.len());
    let mut problems = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match prepare(registry, event, trace) {
            Ok(p) => prepared.push(p),
            Err(ps) => problems.extend(ps.into_iter().map(|p| IndexedProblem::new(index, p))),
        }
    }
    if problems.is_empty() {
        Ok(prepared)
    } else {
        Err(ApiError::ValidationFailed(problems))
    }
}

/// The trace context of a request: its `traceparent` header, else the X-Ray trace of the
/// invocation (Lambda's context, or API Gateway's `x-amzn-trace-id` header).
pub fn request_trace(req: &Request) -> Option<TraceContext> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    header("traceparent")
        .and_then(TraceContext::from_traceparent)
        .or_else(|| {
            req.lambda_context_ref()?
                .xray_trace_id
                .as_deref()
                .and_then(TraceContext::from_xray)
        })
        .or_else(|| header("x-amzn-trace-id").and_then(TraceContext::from_xray))
}

/// The event type of a raw entry as a metric dimension: a known type's name or `unknown`
/// (a client's free text never becomes a dimension).
fn type_of(entry: &Value) -> &'static str {
    entry["type"]
        .as_str()
        .and_then(EventType::parse)
        .map_or("unknown", EventType::as_str)
}

/// Validates `entries`, checks them against the key's `scope`, stamps the request's trace
/// and puts them on the stream. Counts every entry as accepted or refused, by type and
/// reason (`invalid`, `insufficient_scope`, `batch_refused` for the valid entries of a
/// refused batch, `not_written`).
pub async fn accept(
    deps: &Deps,
    req: &Request,
    entries: &[Value],
    scope: Scope,
) -> Result<Written, ApiError> {
    let mut counted = Recorder::default();
    let result = accept_entries(deps, req, entries, scope).await;
    let refused = |counted: &mut Recorder, problems: &[IndexedProblem], reason: &str| {
        for (i, entry) in entries.iter().enumerate() {
            let own = problems.iter().any(|p| p.index == i);
            let why = if own { reason } else { "batch_refused" };
            counted.count(&metrics::EVENTS_REFUSED, &[type_of(entry), why], 1);
        }
    };
    match &result {
        Ok(written) => {
            for (i, entry) in entries.iter().enumerate() {
                if written.failed.iter().any(|(index, _, _)| *index == i) {
                    counted.count(
                        &metrics::EVENTS_REFUSED,
                        &[type_of(entry), "not_written"],
                        1,
                    );
                } else {
                    counted.count(&metrics::EVENTS_ACCEPTED, &[type_of(entry)], 1);
                }
            }
        }
        Err(ApiError::ValidationFailed(problems)) => refused(&mut counted, problems, "invalid"),
        Err(ApiError::InsufficientScope(problems)) => {
            refused(&mut counted, problems, "insufficient_scope")
        }
        Err(_) => {}
    }
    deps.metrics.flush(counted, Utc::now());
    result
}

async fn accept_entries(
    deps: &Deps,
    req: &Request,
    entries: &[Value],
    scope: Scope,
) -> Result<Written, ApiError> {
    let trace = request_trace(req);
    let prepared = prepare_all(&deps.registry, entries, trace.as_ref())?;
    check_scope(scope, &prepared)?;
    Ok(write(deps.stream.as_ref(), &prepared).await)
}

/// Per-entry outcome of writing prepared events.
#[derive(Debug, Default)]
pub struct Written {
    pub accepted: Vec<String>,
    /// `(index, event id, error)` of the entries that could not be written.
    pub failed: Vec<(usize, String, PortError)>,
}

/// Puts the events on the stream and sorts the per-record results.
pub async fn write(stream: &dyn EventStream, prepared: &[Prepared]) -> Written {
    let records: Vec<StreamRecord> = prepared.iter().map(|p| p.record.clone()).collect();
    let results = stream.put(&records).await;
    let mut written = Written::default();
    for (index, (p, result)) in prepared.iter().zip(results).enumerate() {
        match result {
            Ok(_) => written
                .accepted
                .push(p.envelope.header.event_id.to_string()),
            Err(e) => written
                .failed
                .push((index, p.envelope.header.event_id.to_string(), e)),
        }
    }
    written
}

/// 202 when everything was written; otherwise 207 (some written) or 503/500 (none written)
/// naming exactly which entries were accepted and which failed.
pub fn written_response(written: &Written) -> Response<Body> {
    if written.failed.is_empty() {
        return http::json(
            StatusCode::ACCEPTED,
            &json!({ "accepted": written.accepted }),
        );
    }
    let failed: Vec<Value> = written
        .failed
        .iter()
        .map(|(index, id, e)| {
            json!({ "index": index, "event_id": id, "message": e.to_string(), "retryable": e.is_retryable() })
        })
        .collect();
    let total = written.accepted.len() + written.failed.len();
    let message = format!(
        "{} of {total} events could not be written; resend only the failed entries (same event_id)",
        written.failed.len()
    );
    let (status, code) = if !written.accepted.is_empty() {
        (StatusCode::MULTI_STATUS, "partially_accepted")
    } else if written.failed.iter().any(|(_, _, e)| e.is_retryable()) {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
    };
    http::json(
        status,
        &json!({ "error": code, "message": message, "accepted": written.accepted, "failed": failed }),
    )
}

fn read_json(deps: &Deps, req: &Request) -> Result<(Value, Scope), ApiError> {
    let scope = auth::scope(req, &deps.config.api_keys, &deps.config.browser_keys)?;
    http::require_json(req)?;
    let body = http::body(req, deps.config.max_body_bytes)?;
    Ok((http::parse_json(body)?, scope))
}

/// A browser key sends behavioural events only, and no key sends the events Ember writes
/// itself: every such event is listed, nothing is accepted.
fn check_scope(scope: Scope, prepared: &[Prepared]) -> Result<(), ApiError> {
    let refused: Vec<IndexedProblem> = prepared
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let kind = p.envelope.header.event_type.as_str();
            let why = if auth::INTERNAL_EVENT_TYPES.contains(&kind) {
                format!("{kind} events are written by Ember itself")
            } else if scope == Scope::Browser && !auth::BROWSER_EVENT_TYPES.contains(&kind) {
                format!("{kind} events need a server key")
            } else {
                return None;
            };
            Some(IndexedProblem::new(i, Problem::new("/type", why)))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InsufficientScope(refused))
    }
}

/// `POST /v1/events`.
pub async fn post_event(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let (mut event, scope) = read_json(deps, req)?;
    fill_defaults(&mut event, deps.clock.now());
    let written = accept(deps, req, std::slice::from_ref(&event), scope).await?;
    log_written("events", &written);
    Ok(written_response(&written))
}

/// Extracts the entries of a batch body: a JSON array, or `{"events": [...]}`.
pub fn batch_entries(body: Value) -> Result<Vec<Value>, ApiError> {
    let entries = match body {
        Value::Array(entries) => entries,
        Value::Object(mut map) if map.len() == 1 && map.contains_key("events") => {
            match map.remove("events") {
                Some(Value::Array(entries)) => entries,
                _ => {
                    return Err(ApiError::InvalidRequest(
                        "\"events\" must be an array".into(),
                    ))
                }
            }
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "a batch is a JSON array of events or an object {\"events\": [...]}".into(),
            ))
        }
    };
    if entries.is_empty() {
        return Err(ApiError::InvalidRequest("the batch is empty".into()));
    }
    if entries.len() > MAX_BATCH {
        return Err(ApiError::InvalidRequest(format!(
            "the batch has {} events; the limit is {MAX_BATCH}",
            entries.len()
        )));
    }
    Ok(entries)
}

/// `POST /v1/events/batch`.
pub async fn post_batch(deps: &Deps, req: &Request) -> Result<Response<Body>, ApiError> {
    let (body, scope) = read_json(deps, req)?;
    let mut entries = batch_entries(body)?;
    let now = deps.clock.now();
    for entry in &mut entries {
        fill_defaults(entry, now);
    }
    let written = accept(deps, req, &entries, scope).await?;
    log_written("events_batch", &written);
    Ok(written_response(&written))
}

pub(crate) fn log_written(endpoint: &str, written: &Written) {
    if written.failed.is_empty() {
        tracing::info!(
            endpoint,
            accepted = written.accepted.len(),
            "events written"
        );
    } else {
        tracing::error!(
            endpoint,
            stage = "kinesis.put_records",
            accepted = written.accepted.len(),
            failed = written.failed.len(),
            first_error = %written.failed[0].2,
            "some events could not be written"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn registry() -> Registry {
        Registry::embedded().unwrap()
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        let mut e =
            json!({"event_id": null, "type": "page_view", "occurred_at": "2026-01-01T00:00:00Z"});
        fill_defaults(&mut e, now);
        assert!(uuid::Uuid::parse_str(e["event_id"].as_str().unwrap()).is_ok());
        assert_eq!(e["source"], "api");
        assert_eq!(e["occurred_at"], "2026-01-01T00:00:00Z");
        let mut e = json!({"source": "web"});
        fill_defaults(&mut e, now);
        assert_eq!(e["source"], "web");
        assert_eq!(e["occurred_at"], "2026-11-20T10:00:00.000Z");
        let mut not_object = json!([1]);
        fill_defaults(&mut not_object, now);
        assert_eq!(not_object, json!([1]));
    }

    #[test]
    fn batch_shapes() {
        assert_eq!(batch_entries(json!([{}, {}])).unwrap().len(), 2);
        assert_eq!(batch_entries(json!({"events": [{}]})).unwrap().len(), 1);
        assert!(matches!(
            batch_entries(json!([])),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            batch_entries(json!({"events": 1})),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            batch_entries(json!({"x": []})),
            Err(ApiError::InvalidRequest(_))
        ));
        let big = Value::Array(vec![json!({}); MAX_BATCH + 1]);
        assert!(
            matches!(batch_entries(big), Err(ApiError::InvalidRequest(m)) if m.contains("501"))
        );
    }

    #[test]
    fn validation_reports_every_entry_by_index() {
        let r = registry();
        let good = json!({"event_id": "e1", "type": "page_view", "version": 1, "user_id": "u1",
            "occurred_at": "2026-11-20T10:00:00Z", "source": "web", "payload": {"url": "https://shop.example/"}});
        let mut bad = good.clone();
        bad["version"] = json!("one");
        let no_profile = json!({"event_id": "e3", "type": "page_view", "version": 1,
            "occurred_at": "2026-11-20T10:00:00Z", "source": "web", "payload": {"url": "https://shop.example/"}});
        match prepare_all(&r, &[good.clone(), bad, no_profile], None) {
            Err(ApiError::ValidationFailed(problems)) => {
                assert!(
                    problems
                        .iter()
                        .any(|p| p.index == 1 && p.path == "/version"),
                    "{problems:?}"
                );
                assert!(problems.iter().any(|p| p.index == 2), "{problems:?}");
                assert!(problems.iter().all(|p| p.index != 0), "{problems:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let ok = prepare_all(&r, &[good], None).unwrap();
        assert_eq!(ok[0].record.partition_key, "u1");
    }

    #[test]
    fn partial_failures_name_each_entry() {
        let transient = PortError::Transient {
            stage: "k",
            reason: "throttled".into(),
        };
        let written = Written {
            accepted: vec!["a".into()],
            failed: vec![(1, "b".into(), transient.clone())],
        };
        let r = written_response(&written);
        assert_eq!(r.status(), StatusCode::MULTI_STATUS);
        let none = Written {
            accepted: vec![],
            failed: vec![(0, "a".into(), transient)],
        };
        assert_eq!(
            written_response(&none).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let ok = Written {
            accepted: vec!["a".into()],
            failed: vec![],
        };
        assert_eq!(written_response(&ok).status(), StatusCode::ACCEPTED);
    }
}
