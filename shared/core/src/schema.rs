//! JSON Schema validation of the envelope and of each event type's payload.
//!
//! The schemas live in `schemas/` (`envelope.v1.json` and `<type>.v1.json` per event type),
//! are embedded into the binary with `include_str!` and compiled once by
//! [`Registry::embedded`] into `checker`'s nodes (the draft 2020-12 subset the files use;
//! any other keyword is refused at compile time, so no rule is silently skipped).
//! [`Registry::validate`] reports *every* problem it finds, each with the JSON pointer of the
//! offending field, e.g. `/payload/items/0/quantity: -1 is less than
//! the minimum of 1` — envelope problems (missing `event_id`, bad `occurred_at`, unknown
//! `type`, unsupported `version`) included.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::{CoreError, Problem};
use crate::event::{read_timestamp, Context, Envelope, EventHeader, EventType};

#[cfg(test)]
mod against_jsonschema;
mod checker;

use checker::{Node, Path};

/// The envelope schema, version 1.
pub const ENVELOPE_SCHEMA: &str = include_str!("../schemas/envelope.v1.json");

/// `(type, version, schema text)` of every payload schema Ember ships.
pub const PAYLOAD_SCHEMAS: &[(EventType, u32, &str)] = &[
    (
        EventType::PageView,
        1,
        include_str!("../schemas/page_view.v1.json"),
    ),
    (
        EventType::ProductView,
        1,
        include_str!("../schemas/product_view.v1.json"),
    ),
    (
        EventType::AddToCart,
        1,
        include_str!("../schemas/add_to_cart.v1.json"),
    ),
    (
        EventType::RemoveFromCart,
        1,
        include_str!("../schemas/remove_from_cart.v1.json"),
    ),
    (
        EventType::CheckoutStarted,
        1,
        include_str!("../schemas/checkout_started.v1.json"),
    ),
    (
        EventType::Purchase,
        1,
        include_str!("../schemas/purchase.v1.json"),
    ),
    (
        EventType::EmailOpened,
        1,
        include_str!("../schemas/email_opened.v1.json"),
    ),
    (
        EventType::EmailClicked,
        1,
        include_str!("../schemas/email_clicked.v1.json"),
    ),
    (
        EventType::HeatPreference,
        1,
        include_str!("../schemas/heat_preference.v1.json"),
    ),
    (
        EventType::PollAnswer,
        1,
        include_str!("../schemas/poll_answer.v1.json"),
    ),
    (
        EventType::ConsentChanged,
        1,
        include_str!("../schemas/consent_changed.v1.json"),
    ),
    (
        EventType::Identify,
        1,
        include_str!("../schemas/identify.v1.json"),
    ),
    (
        EventType::ProfileUpdated,
        1,
        include_str!("../schemas/profile_updated.v1.json"),
    ),
    (
        EventType::EmailSuppressed,
        1,
        include_str!("../schemas/email_suppressed.v1.json"),
    ),
    (
        EventType::Refund,
        1,
        include_str!("../schemas/refund.v1.json"),
    ),
    (
        EventType::CampaignAssigned,
        1,
        include_str!("../schemas/campaign_assigned.v1.json"),
    ),
];

/// All embedded schemas, compiled once. Cheap to share (`&Registry`) across invocations.
pub struct Registry {
    envelope: Node,
    payloads: BTreeMap<(EventType, u32), Node>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("payloads", &self.payloads.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn compile(name: &str, text: &str) -> Result<Node, CoreError> {
    let config = |reason: String| CoreError::Config {
        what: format!("schema {name}"),
        reason,
    };
    let schema: Value = serde_json::from_str(text).map_err(|e| config(e.to_string()))?;
    Node::compile(&schema, "#").map_err(config)
}

impl Registry {
    /// Compiles the schemas shipped in `schemas/`. Fails only if a shipped schema is broken.
    pub fn embedded() -> Result<Registry, CoreError> {
        let envelope = compile("envelope.v1", ENVELOPE_SCHEMA)?;
        let mut payloads = BTreeMap::new();
        for (t, v, text) in PAYLOAD_SCHEMAS {
            payloads.insert((*t, *v), compile(&format!("{t}.v{v}"), text)?);
        }
        Ok(Registry { envelope, payloads })
    }

    /// Versions supported for an event type, ascending.
    pub fn versions(&self, event_type: EventType) -> Vec<u32> {
        self.payloads
            .keys()
            .filter(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
            .collect()
    }

    /// Validates a decoded JSON document; on success returns the typed envelope.
    /// On failure returns every problem found, envelope and payload alike.
    pub fn validate(&self, value: &Value) -> Result<Envelope, Vec<Problem>> {
        let header = self.header(value)?;
        let text = |k: &str| value.get("context")?.get(k)?.as_str().map(str::to_owned);
        let context = Context {
            user_agent: text("user_agent"),
            page_url: text("page_url"),
            referrer: text("referrer"),
            locale: text("locale"),
            timezone: text("timezone"),
        };
        let payload = value.get("payload").cloned().unwrap_or_default();
        Ok(Envelope {
            header,
            context,
            payload,
            trace: value
                .get("trace")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// [`Registry::validate`] reading only the header: the enrichment reads context and
    /// payload from `value` itself.
    pub fn header(&self, value: &Value) -> Result<EventHeader<'static>, Vec<Problem>> {
        let checked = self.check(value)?;
        Ok(checked.header(|k| Some(Cow::Owned(value.get(k)?.as_str()?.to_owned()))))
    }

    /// Checks envelope and payload and reads the envelope's header fields but its strings.
    fn check(&self, value: &Value) -> Result<Checked, Vec<Problem>> {
        if !value.is_object() {
            return Err(vec![Problem::new("", "the event must be a JSON object")]);
        }
        let mut problems = Vec::new();
        self.envelope.check(value, Path::Root(""), &mut problems);

        let event_type = match value.get("type").and_then(Value::as_str) {
            Some(name) => {
                let parsed = EventType::parse(name);
                if parsed.is_none() && !name.is_empty() {
                    problems.push(Problem::new(
                        "/type",
                        format!("unknown event type '{name}'"),
                    ));
                }
                parsed
            }
            None => None,
        };
        let version = value.get("version").and_then(Value::as_u64);
        let mut checked_version = None;
        if let (Some(t), Some(v)) = (event_type, version) {
            let key = u32::try_from(v).ok().map(|v| (t, v));
            match key.and_then(|k| Some((k.1, self.payloads.get(&k)?))) {
                Some((v, node)) => {
                    checked_version = Some(v);
                    if let Some(payload) = value.get("payload").filter(|p| p.is_object()) {
                        node.check(payload, Path::Root("/payload"), &mut problems);
                    }
                }
                None => {
                    let supported = self
                        .versions(t)
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>();
                    problems.push(Problem::new(
                        "/version",
                        format!(
                            "unsupported version {v} of '{t}' (supported: {})",
                            supported.join(", ")
                        ),
                    ));
                }
            }
        } else if let (Some(_), Some(v)) = (event_type, value.get("version")) {
            let reported = problems.iter().any(|p| p.path == "/version");
            if version.is_none() && !reported && v.is_number() {
                // `1.0`: an integer to JSON Schema, but not a version number.
                problems.push(Problem::new(
                    "/version",
                    format!("{v} is not a version number (write it without a fraction)"),
                ));
            }
        }
        let occurred_at = match value.get("occurred_at").and_then(Value::as_str) {
            Some(ts) => {
                let at = read_timestamp(ts);
                if at.is_none() {
                    problems.push(Problem::new(
                        "/occurred_at",
                        format!("'{ts}' is not an RFC 3339 timestamp (e.g. 2026-11-20T10:00:00Z)"),
                    ));
                }
                at
            }
            None => None,
        };
        let text = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if text("user_id").is_none() && text("anonymous_id").is_none() {
            problems.push(Problem::new(
                "",
                "either user_id or anonymous_id is required",
            ));
        }
        // Every field below was checked by the envelope schema above: with no problem found,
        // each is present (where required) with its type.
        match (event_type, checked_version, occurred_at) {
            (Some(event_type), Some(version), Some(occurred_at)) if problems.is_empty() => {
                Ok(Checked {
                    event_type,
                    version,
                    occurred_at,
                })
            }
            _ => {
                if problems.is_empty() {
                    problems.push(Problem::new("", "the envelope could not be read"));
                }
                Err(problems)
            }
        }
    }
}

/// The header fields a valid envelope's check has read; its strings come from the document.
struct Checked {
    event_type: EventType,
    version: u32,
    occurred_at: DateTime<Utc>,
}

impl Checked {
    /// The header, with `text` reading a top-level string member of the checked document.
    /// The envelope schema has checked that the required ones are there.
    fn header<'a>(self, text: impl Fn(&str) -> Option<Cow<'a, str>>) -> EventHeader<'a> {
        EventHeader {
            event_id: text("event_id").unwrap_or_default(),
            event_type: self.event_type,
            version: self.version,
            user_id: text("user_id"),
            anonymous_id: text("anonymous_id"),
            occurred_at: self.occurred_at,
            source: text("source").unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry() -> Registry {
        Registry::embedded().unwrap()
    }

    fn valid() -> Value {
        json!({
            "event_id": "e-1", "type": "add_to_cart", "version": 1, "anonymous_id": "a-1",
            "occurred_at": "2026-11-20T10:00:00Z", "source": "web",
            "context": {"page_url": "https://shop.example/p/ghost?utm_source=news"},
            "payload": {"sku": "HS-1", "name": "Ghost Pepper Sauce", "price": "12.50",
                        "currency": "EUR", "quantity": 2}
        })
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn every_embedded_schema_compiles_and_every_type_has_one() {
        let r = registry();
        for t in EventType::ALL {
            assert_eq!(r.versions(t), vec![1], "{t}");
        }
    }

    #[test]
    fn accepts_a_valid_event() {
        let e = registry().validate(&valid()).unwrap();
        assert_eq!(e.header.event_type, EventType::AddToCart);
        assert_eq!(e.profile_key().as_deref(), Some("anon:a-1"));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let mut v = valid();
        v["event_id"] = json!(null);
        v["occurred_at"] = json!("yesterday");
        v["payload"]["quantity"] = json!(0);
        v["payload"]["price"] = json!(true);
        v["payload"]["colour"] = json!("red");
        let problems = registry().validate(&v).unwrap_err();
        let p = paths(&problems);
        assert!(p.contains(&"/event_id"), "{problems:?}");
        assert!(p.contains(&"/occurred_at"), "{problems:?}");
        assert!(p.contains(&"/payload/quantity"), "{problems:?}");
        assert!(p.contains(&"/payload/price"), "{problems:?}");
        assert!(
            p.contains(&"/payload/colour"),
            "additional property reported: {problems:?}"
        );
    }

    #[test]
    fn reports_nested_item_paths() {
        let v = json!({
            "event_id": "e-2", "type": "purchase", "version": 1, "user_id": "u-1",
            "occurred_at": "2026-11-20T10:00:00Z", "source": "shop",
            "payload": {"order_id": "o-1", "total": "10.00", "currency": "EUR",
                        "items": [{"sku": "A", "name": "A", "price": "10.00", "quantity": "2"}]}
        });
        let problems = registry().validate(&v).unwrap_err();
        assert_eq!(
            paths(&problems),
            vec!["/payload/items/0/quantity"],
            "{problems:?}"
        );
        assert!(problems[0].message.contains("integer"), "{problems:?}");
    }

    #[test]
    fn missing_event_id_is_reported_at_its_path() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("event_id");
        let problems = registry().validate(&v).unwrap_err();
        assert_eq!(problems, vec![Problem::new("/event_id", "is required")]);
    }

    #[test]
    fn unknown_type_gets_a_clear_message() {
        let mut v = valid();
        v["type"] = json!("x");
        let problems = registry().validate(&v).unwrap_err();
        assert_eq!(
            problems,
            vec![Problem::new("/type", "unknown event type 'x'")]
        );
    }

    #[test]
    fn unsupported_version_is_reported() {
        let mut v = valid();
        v["version"] = json!(7);
        let problems = registry().validate(&v).unwrap_err();
        assert_eq!(paths(&problems), vec!["/version"]);
        assert!(problems[0]
            .message
            .contains("unsupported version 7 of 'add_to_cart'"));
    }

    #[test]
    fn requires_some_identity() {
        let mut v = valid();
        v["anonymous_id"] = json!(null);
        let problems = registry().validate(&v).unwrap_err();
        assert_eq!(
            problems,
            vec![Problem::new(
                "",
                "either user_id or anonymous_id is required"
            )]
        );
    }

    #[test]
    fn non_objects_are_rejected() {
        let problems = registry().validate(&json!([1, 2])).unwrap_err();
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn a_fractional_version_number_is_refused_at_its_path() {
        let mut v = valid();
        v["version"] = json!(1.0);
        assert_eq!(
            registry().validate(&v).unwrap_err(),
            vec![Problem::new(
                "/version",
                "1.0 is not a version number (write it without a fraction)"
            )]
        );
    }

    #[test]
    fn heat_preference_accepts_numbers_and_text() {
        let r = registry();
        for value in [json!(50_000), json!("hot"), json!("I like it really hot")] {
            let v = json!({"event_id": "h", "type": "heat_preference", "version": 1,
                "user_id": "u", "occurred_at": "2026-11-20T10:00:00Z", "source": "quiz",
                "payload": {"value": value}});
            r.validate(&v).unwrap();
        }
    }
}
