//! The versioned event envelope shared by every producer and consumer.
//!
//! ```json
//! {"event_id":"…","type":"add_to_cart","version":1,"user_id":"u-1","anonymous_id":null,
//!  "occurred_at":"2026-11-20T10:00:00Z","source":"web","context":{…},"payload":{…}}
//! ```
//! The payload's shape is fixed per `(type, version)` by the JSON Schema files in `schemas/`.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every event type Ember understands. The string form is the `type` field of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    PageView,
    ProductView,
    AddToCart,
    RemoveFromCart,
    CheckoutStarted,
    Purchase,
    EmailOpened,
    EmailClicked,
    HeatPreference,
    PollAnswer,
    ConsentChanged,
    Identify,
    /// Profile attributes (email address, name, time zone) supplied by the shop.
    ProfileUpdated,
    /// An email for this user bounced or was complained about (from SES feedback).
    EmailSuppressed,
    /// Money returned for an order (from the payments webhook): revenue and attribution shrink.
    Refund,
    /// The email function placed the customer in a campaign group (a variant that was sent, or
    /// the holdout that would have been): the start of the campaign's attribution window.
    CampaignAssigned,
}

impl EventType {
    pub const ALL: [EventType; 16] = [
        EventType::PageView,
        EventType::ProductView,
        EventType::AddToCart,
        EventType::RemoveFromCart,
        EventType::CheckoutStarted,
        EventType::Purchase,
        EventType::EmailOpened,
        EventType::EmailClicked,
        EventType::HeatPreference,
        EventType::PollAnswer,
        EventType::ConsentChanged,
        EventType::Identify,
        EventType::ProfileUpdated,
        EventType::EmailSuppressed,
        EventType::Refund,
        EventType::CampaignAssigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "page_view",
            EventType::ProductView => "product_view",
            EventType::AddToCart => "add_to_cart",
            EventType::RemoveFromCart => "remove_from_cart",
            EventType::CheckoutStarted => "checkout_started",
            EventType::Purchase => "purchase",
            EventType::EmailOpened => "email_opened",
            EventType::EmailClicked => "email_clicked",
            EventType::HeatPreference => "heat_preference",
            EventType::PollAnswer => "poll_answer",
            EventType::ConsentChanged => "consent_changed",
            EventType::Identify => "identify",
            EventType::ProfileUpdated => "profile_updated",
            EventType::EmailSuppressed => "email_suppressed",
            EventType::Refund => "refund",
            EventType::CampaignAssigned => "campaign_assigned",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Request context captured by the producer (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// IANA time zone of the customer, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// The envelope every event travels in (HTTP in, Kinesis, dead letters): the header's fields,
/// then `context` and `payload`, all at the top level of the JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(flatten)]
    pub header: EventHeader<'static>,
    #[serde(default)]
    pub context: Context,
    #[serde(default)]
    pub payload: serde_json::Value,
    /// The W3C `traceparent` of the request that accepted it ([`crate::trace`]), set by the
    /// API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// An RFC 3339 timestamp (`2026-11-20T10:00:00Z`, `2026-11-20T11:00:00.5+01:00`) as UTC.
pub fn read_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// What the fold needs of an event's envelope once the enrichment has read its context and
/// payload (into `EnrichedEvent`'s fact, UTM parameters and device): who, what, when, from
/// where. The enrichment borrows its strings from the Kinesis record (`'a`); an [`Envelope`]
/// owns them (`'static`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventHeader<'a> {
    pub event_id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<Cow<'a, str>>,
    pub occurred_at: DateTime<Utc>,
    pub source: Cow<'a, str>,
}

/// Prefix of profile keys for visitors known only by an anonymous id.
pub const ANON_PREFIX: &str = "anon:";

impl Envelope {
    /// The profile this event belongs to: the user id, else `anon:<anonymous_id>`.
    /// Also the Kinesis partition key, so one profile's events stay in order on one shard.
    pub fn profile_key(&self) -> Option<String> {
        self.header.profile_key()
    }
}

impl<'a> EventHeader<'a> {
    /// The profile this event belongs to: the user id, else `anon:<anonymous_id>`.
    pub fn profile_key(&self) -> Option<String> {
        self.profile_key_ref().map(Cow::into_owned)
    }

    /// [`Self::profile_key`] borrowing the user id where it can.
    pub fn profile_key_ref(&self) -> Option<Cow<'a, str>> {
        match (&self.user_id, &self.anonymous_id) {
            (Some(u), _) if !u.is_empty() => Some(u.clone()),
            (_, Some(a)) if !a.is_empty() => Some(Cow::Owned(format!("{ANON_PREFIX}{a}"))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_round_trips_through_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(EventType::parse("nope"), None);
    }

    #[test]
    fn timestamps_are_read_as_utc_with_clear_errors() {
        assert_eq!(
            read_timestamp("2026-11-20T11:00:00.5+01:00"),
            read_timestamp("2026-11-20T10:00:00.5Z")
        );
        assert_eq!(read_timestamp("2026-11-20 10:00"), None);
        let e: Result<Envelope, _> = serde_json::from_value(serde_json::json!({
            "event_id": "e1", "type": "page_view", "version": 1,
            "occurred_at": "2026-11-20T11:00:00+01:00", "source": "web"
        }));
        assert_eq!(
            Some(e.unwrap().header.occurred_at),
            read_timestamp("2026-11-20T10:00:00Z")
        );
        let e: Result<Envelope, _> = serde_json::from_value(serde_json::json!({
            "event_id": "e1", "type": "page_view", "version": 1,
            "occurred_at": "yesterday", "source": "web"
        }));
        assert_eq!(
            e.unwrap_err().to_string(),
            "input contains invalid characters"
        );
    }

    #[test]
    fn the_header_is_flat_on_the_wire() {
        let text = r#"{"event_id":"e1","type":"page_view","version":1,"user_id":"u1","occurred_at":"2026-11-20T10:00:00Z","source":"web","context":{"locale":"de-DE"},"payload":{"url":"https://shop.example/"}}"#;
        let e: Envelope = serde_json::from_str(text).unwrap();
        assert_eq!(e.header.event_id, "e1");
        assert_eq!(e.context.locale.as_deref(), Some("de-DE"));
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
    }

    #[test]
    fn profile_key_prefers_user_id() {
        let mut e: Envelope = serde_json::from_value(serde_json::json!({
            "event_id": "e1", "type": "page_view", "version": 1, "anonymous_id": "a1",
            "occurred_at": "2026-11-20T10:00:00Z", "source": "web", "payload": {}
        }))
        .unwrap();
        assert_eq!(e.profile_key().as_deref(), Some("anon:a1"));
        e.header.user_id = Some("u1".into());
        assert_eq!(e.profile_key().as_deref(), Some("u1"));
    }
}
