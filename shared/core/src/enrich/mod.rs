//! Normalisation of validated envelopes into typed [`Fact`]s.
//!
//! Every value that later drives a decision is normalised and checked for plausibility here,
//! so the fold and the segment rules only ever see clean data. Implausible values are
//! rejected with a [`Problem`] naming the field.
//!
//! # Layout
//! - this file: [`EnrichedEvent`], [`decode`] (bytes → event) and [`enrich`] (a validated
//!   envelope → event).
//! - [`fact`]: [`Fact`], one variant per event type, and its parts.
//! - `read`: the payload reader, one arm per event type, every problem with its path.
//! - [`money`]: amounts → exact minor units by ISO 4217 exponent.
//! - [`heat`]: heat preference → Scoville heat units (the phrase table is there).
//! - [`utm`]: `utm_*` parameters of the page URL (`url` crate).
//! - [`device`]: device class from the user agent.

pub mod device;
pub mod fact;
pub mod heat;
pub mod money;
mod read;
#[cfg(test)]
mod tests;
pub mod utm;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Problem;
use crate::event::EventHeader;
use crate::schema::Registry;

pub use device::{device_class, DeviceClass};
pub use fact::{Fact, LineItem, Product};
pub use heat::{heat_to_shu, MAX_SHU, SHU_EXTRA_HOT, SHU_HOT, SHU_MEDIUM, SHU_MILD, SHU_NONE};
pub use money::{currency_exponent, to_minor, MAX_AMOUNT_MAJOR};
pub use read::plausible_email;
pub use utm::{utm_of, Utm};

/// A validated, normalised event ready to be folded into a profile. [`decode`] gives events
/// that own their strings (`'static`); the scheduled and test paths may build events that
/// borrow (`'a`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent<'a> {
    /// The envelope's id, type, identities, time and source; its context and payload are
    /// read into `fact`, `utm` and `device`.
    pub header: EventHeader<'a>,
    pub fact: Fact<'a>,
    /// UTM parameters from `context.page_url` (`utm_source`, `utm_campaign`, …).
    #[serde(default)]
    pub utm: Utm<'a>,
    /// Device class from `context.user_agent`, if one was sent.
    #[serde(default)]
    pub device: Option<DeviceClass>,
    /// The record's W3C `traceparent`, if the API stamped one: carried on to the segment
    /// events it causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Cow<'a, str>>,
    /// Put back by a rebuild from the archive (`"replay": "rebuild"`): folded, never
    /// published (its emails went out when it first arrived).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuild: bool,
}

impl<'a> EnrichedEvent<'a> {
    /// An event of `user_id` stating `fact` (version 1, no UTM parameters or device): how
    /// the scheduled and test paths build events that did not come from a record.
    pub fn of_user(
        event_id: impl Into<Cow<'a, str>>,
        user_id: impl Into<Cow<'a, str>>,
        occurred_at: DateTime<Utc>,
        source: impl Into<Cow<'a, str>>,
        fact: Fact<'a>,
    ) -> EnrichedEvent<'a> {
        EnrichedEvent {
            header: EventHeader {
                event_id: event_id.into(),
                event_type: fact.event_type(),
                version: 1,
                user_id: Some(user_id.into()),
                anonymous_id: None,
                occurred_at,
                source: source.into(),
            },
            fact,
            utm: Utm::new(),
            device: None,
            trace: None,
            rebuild: false,
        }
    }
}

/// Parses, validates and enriches one raw record.
pub fn decode(bytes: &[u8], registry: &Registry) -> Result<EnrichedEvent<'static>, Vec<Problem>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| vec![Problem::new("", format!("not valid JSON: {e}"))])?;
    let header = registry.header(&value)?;
    let payload = value.get("payload").unwrap_or(&Value::Null);
    let mut event = enrich(header, value.get("context"), payload)?;
    event.trace = value
        .get("trace")
        .and_then(Value::as_str)
        .map(|t| Cow::Owned(t.to_owned()));
    event.rebuild = value.get("replay").and_then(Value::as_str) == Some("rebuild");
    Ok(event)
}

/// Turns a validated event (its header, its `context` object if it has one, and its payload)
/// into an [`EnrichedEvent`], rejecting implausible values.
pub fn enrich(
    header: EventHeader<'static>,
    context: Option<&Value>,
    payload: &Value,
) -> Result<EnrichedEvent<'static>, Vec<Problem>> {
    let member = |key: &str| context?.get(key);
    let page_url = member("page_url")
        .and_then(Value::as_str)
        .map(|url| Cow::Owned(url.to_owned()));
    let mut problems = Vec::new();
    let fact = {
        let mut p = read::Payload {
            value: payload,
            problems: &mut problems,
        };
        read::fact_of(&header, page_url.as_ref(), &mut p)
    };
    let utm = match page_url.as_deref().map(utm_of) {
        Some(Err(p)) => {
            problems.push(p);
            Utm::new()
        }
        Some(Ok(utm)) => utm,
        None => Utm::new(),
    };
    let device = member("user_agent")
        .and_then(Value::as_str)
        .map(device_class);
    if let Some(tz) = member("timezone").and_then(Value::as_str) {
        if let Err(p) = read::check_timezone(tz, "/context/timezone") {
            problems.push(p);
        }
    }
    match fact {
        Some(fact) if problems.is_empty() => Ok(EnrichedEvent {
            header,
            fact,
            utm,
            device,
            trace: None,
            rebuild: false,
        }),
        _ => {
            if problems.is_empty() {
                problems.push(Problem::new("/payload", "payload could not be read"));
            }
            Err(problems)
        }
    }
}
