//! Poll provider submissions mapped to Ember events.
//!
//! Body (signed with `X-Poll-Signature: sha256=<hex>` over the raw bytes):
//! ```json
//! {"delivery_id": "dlv_1", "poll_id": "heat-check", "user_id": "u-1",
//!  "submitted_at": "2026-11-20T10:00:00Z",
//!  "answers": [{"question": "heat", "answer": "extra-hot"}, {"question": "sauce", "answer": "habanero"}]}
//! ```
//! Every answer becomes a `poll_answer`; an answer to a heat question (`heat`, `heat_level`,
//! `heat_preference`, `spice`, `spice_level`) also becomes a `heat_preference` with the answer
//! as its value (a level, SHU number or free text: enrichment normalises it).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{derived_id, Mapped};
use crate::error::ApiError;

pub const PROVIDER: &str = "polls";

/// Question ids treated as a heat preference.
pub const HEAT_QUESTIONS: &[&str] = &[
    "heat",
    "heat_level",
    "heat_preference",
    "spice",
    "spice_level",
];

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Maps one verified poll submission.
pub fn map(body: &Value, now: DateTime<Utc>) -> Result<Mapped, ApiError> {
    let invalid = |m: String| ApiError::InvalidRequest(format!("poll submission: {m}"));
    let s = |p: &str| {
        body.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let delivery_id = s("/delivery_id").ok_or_else(|| invalid("missing delivery_id".into()))?;
    let user_id = s("/user_id");
    let anonymous_id = s("/anonymous_id");
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(invalid("either user_id or anonymous_id is required".into()));
    }
    let occurred_at = match s("/submitted_at") {
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| invalid(format!("submitted_at is not RFC 3339: {e}")))?
            .with_timezone(&Utc),
        None => now,
    }
    .to_rfc3339_opts(SecondsFormat::Secs, true);
    let answers = body
        .get("answers")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("answers must be a non-empty array".into()))?;
    let poll_id = s("/poll_id");

    let base = |event_type: &str, key: &str, payload: Value| {
        let mut e = json!({
            "event_id": derived_id(PROVIDER, &format!("{delivery_id}:{key}")),
            "type": event_type, "version": 1, "occurred_at": occurred_at,
            "source": PROVIDER, "payload": payload,
        });
        if let Some(u) = user_id {
            e["user_id"] = json!(u);
        }
        if let Some(a) = anonymous_id {
            e["anonymous_id"] = json!(a);
        }
        e
    };
    let mut events = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let question = a
            .get("question")
            .and_then(text)
            .ok_or_else(|| invalid(format!("answers[{i}].question is missing")))?;
        let answer = a
            .get("answer")
            .and_then(text)
            .ok_or_else(|| invalid(format!("answers[{i}].answer is missing")))?;
        let mut payload = json!({ "question_id": question, "answer": answer });
        if let Some(p) = poll_id {
            payload["poll_id"] = json!(p);
        }
        events.push(base("poll_answer", &format!("{i}:poll_answer"), payload));
        if HEAT_QUESTIONS.contains(&question.to_ascii_lowercase().as_str()) {
            let value = a
                .get("answer")
                .filter(|v| v.is_number())
                .cloned()
                .unwrap_or(json!(answer));
            events.push(base(
                "heat_preference",
                &format!("{i}:heat_preference"),
                json!({ "value": value, "source": "poll" }),
            ));
        }
    }
    Ok(Mapped::Events {
        delivery_id: delivery_id.to_owned(),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_answers_also_become_heat_preferences() {
        let body = json!({"delivery_id": "d1", "poll_id": "p", "user_id": "u-1",
            "answers": [{"question": "heat", "answer": "extra-hot"}, {"question": "sauce", "answer": "habanero"},
                        {"question": "spice_level", "answer": 50000}]});
        let Mapped::Events {
            events,
            delivery_id,
        } = map(&body, Utc::now()).unwrap()
        else {
            panic!()
        };
        assert_eq!(delivery_id, "d1");
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "poll_answer",
                "heat_preference",
                "poll_answer",
                "poll_answer",
                "heat_preference"
            ]
        );
        assert_eq!(
            events[1]["payload"],
            json!({"value": "extra-hot", "source": "poll"})
        );
        assert_eq!(events[4]["payload"]["value"], 50000);
        assert_eq!(events[3]["payload"]["answer"], "50000");
        // Deterministic ids: the same delivery maps to the same ids.
        let Mapped::Events { events: again, .. } = map(&body, Utc::now()).unwrap() else {
            panic!()
        };
        assert_eq!(events[0]["event_id"], again[0]["event_id"]);
        assert_ne!(events[0]["event_id"], events[1]["event_id"]);
    }

    #[test]
    fn incomplete_submissions_are_refused() {
        let now = Utc::now();
        assert!(map(
            &json!({"user_id": "u", "answers": [{"question": "q", "answer": "a"}]}),
            now
        )
        .is_err());
        assert!(map(
            &json!({"delivery_id": "d", "answers": [{"question": "q", "answer": "a"}]}),
            now
        )
        .is_err());
        assert!(map(
            &json!({"delivery_id": "d", "user_id": "u", "answers": []}),
            now
        )
        .is_err());
        assert!(map(
            &json!({"delivery_id": "d", "user_id": "u", "answers": [{"question": "q"}]}),
            now
        )
        .is_err());
        assert!(map(
            &json!({"delivery_id": "d", "user_id": "u", "submitted_at": "yesterday",
            "answers": [{"question": "q", "answer": "a"}]}),
            now
        )
        .is_err());
    }
}
