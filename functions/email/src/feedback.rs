//! SES feedback → Ember events. Accepts what SES publishes for a configuration set's event
//! destination, delivered either by EventBridge (`source` `aws.ses`, detail types
//! `Email Bounced`, `Email Complaint Received`, `Email Opened`, `Email Clicked`, …) or by SNS
//! (`Records[].Sns.Message` holding the same JSON record).
//!
//! - permanent bounce → `email_suppressed` (`hard_bounce`), complaint → `email_suppressed`
//!   (`complaint`); the hashed address is also written to the ledger's suppression partition
//!   at once, so sends stop before enrich has folded the event;
//! - open → `email_opened`, click → `email_clicked` (campaign from the message tags, for the
//!   fold's attribution);
//! - everything else (send, delivery, delays, transient bounces) is acknowledged and dropped.
//!
//! Event ids are deterministic (`ses-<message id>-<kind>`), so SES' at-least-once delivery and
//! Lambda retries are de-duplicated by enrich.

use ember_core::metrics::{self, Metrics, Recorder};
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ember_core::event::{Context, Envelope, EventHeader, EventType};
use ember_core::ports::{EventStream, Ledger};
use ember_core::unsubscribe::{suppression_key, SUPPRESSION_PK};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::EmailError;
use crate::handler::{identify, put_all, stream_record};
use crate::tags;

/// One SES event record (the EventBridge `detail`, or the SNS message).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesRecord {
    /// `Bounce`, `Complaint`, `Delivery`, `Send`, `Reject`, `Open`, `Click`, …
    #[serde(alias = "notificationType")]
    pub event_type: String,
    pub mail: Mail,
    #[serde(default)]
    pub bounce: Option<Bounce>,
    #[serde(default)]
    pub complaint: Option<Complaint>,
    #[serde(default)]
    pub open: Option<Timestamped>,
    #[serde(default)]
    pub click: Option<Click>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    pub message_id: String,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    pub email_address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounce {
    /// `Permanent`, `Transient` or `Undetermined`.
    pub bounce_type: String,
    #[serde(default)]
    pub bounced_recipients: Vec<Recipient>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Complaint {
    #[serde(default)]
    pub complained_recipients: Vec<Recipient>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Timestamped {
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Click {
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub link: Option<String>,
}

/// What one record became.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedbackOutcome {
    /// An Ember event was put on the stream (`event_id`, `type`).
    Event {
        event_id: String,
        event_type: EventType,
    },
    /// Addresses suppressed in the ledger (count), with or without a profile to tell.
    Suppressed {
        addresses: usize,
    },
    Ignored {
        reason: String,
    },
}

/// Extracts SES records from an EventBridge event or an SNS notification batch.
pub fn records(input: &Value) -> Result<Vec<SesRecord>, EmailError> {
    let bad = |e: String| EmailError::InvalidEvent(format!("SES feedback: {e}"));
    if let Some(list) = input.get("Records").and_then(Value::as_array) {
        return list
            .iter()
            .map(|r| {
                let message = r
                    .pointer("/Sns/Message")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("SNS record without Sns.Message".into()))?;
                serde_json::from_str(message).map_err(|e| bad(e.to_string()))
            })
            .collect();
    }
    let detail = input
        .get("detail")
        .ok_or_else(|| bad("neither an EventBridge event nor SNS records".into()))?;
    serde_json::from_value(detail.clone())
        .map(|r| vec![r])
        .map_err(|e| bad(e.to_string()))
}

fn tag<'a>(mail: &'a Mail, name: &str) -> Option<&'a str> {
    mail.tags
        .get(name)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// `ses-<message id>-<kind>`, restricted to the envelope's id alphabet.
pub fn event_id(message_id: &str, kind: &str) -> String {
    let clean: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        .take(100)
        .collect();
    format!("ses-{clean}-{kind}")
}

/// Converts SES feedback into ledger suppressions and Ember events.
pub struct Feedback<L, S> {
    pub ledger: L,
    pub stream: S,
    /// Where each invocation's metrics (SES events by kind) are written.
    pub metrics: Metrics,
}

/// An SES event type as a metric dimension: one of the kinds SES publishes, or `other`.
fn kind_of(event_type: &str) -> &'static str {
    const KINDS: [&str; 10] = [
        "send",
        "delivery",
        "bounce",
        "complaint",
        "reject",
        "open",
        "click",
        "rendering_failure",
        "delivery_delay",
        "subscription",
    ];
    let snake = match event_type {
        "Rendering Failure" | "RenderingFailure" => "rendering_failure".to_owned(),
        "DeliveryDelay" => "delivery_delay".to_owned(),
        other => other.to_ascii_lowercase(),
    };
    KINDS.into_iter().find(|k| *k == snake).unwrap_or("other")
}

impl<L: Ledger, S: EventStream> Feedback<L, S> {
    pub async fn handle(
        &self,
        input: &Value,
        now: DateTime<Utc>,
    ) -> Result<Vec<FeedbackOutcome>, EmailError> {
        let mut outcomes = Vec::new();
        let mut pending = Vec::new();
        let records = records(input)?;
        let mut counted = Recorder::default();
        for record in &records {
            counted.count(&metrics::SES_FEEDBACK, &[kind_of(&record.event_type)], 1);
        }
        self.metrics.flush(counted, Utc::now());
        for record in records {
            let profile_id = tag(&record.mail, tags::PROFILE_ID).and_then(tags::decode_profile_id);
            let campaign = tag(&record.mail, tags::CAMPAIGN).map(str::to_owned);
            let message_id = record.mail.message_id.clone();
            let (event_type, kind, payload, at, suppress): (
                EventType,
                &str,
                Value,
                Option<DateTime<Utc>>,
                Vec<String>,
            ) = match record.event_type.as_str() {
                "Bounce" => match &record.bounce {
                    Some(b) if b.bounce_type == "Permanent" => (
                        EventType::EmailSuppressed,
                        "bounce",
                        json!({"reason": "hard_bounce", "message_id": message_id}),
                        b.timestamp,
                        b.bounced_recipients
                            .iter()
                            .map(|r| r.email_address.clone())
                            .collect(),
                    ),
                    _ => {
                        outcomes.push(FeedbackOutcome::Ignored {
                            reason: "soft bounce".into(),
                        });
                        continue;
                    }
                },
                "Complaint" => {
                    let c = record.complaint.as_ref();
                    (
                        EventType::EmailSuppressed,
                        "complaint",
                        json!({"reason": "complaint", "message_id": message_id}),
                        c.and_then(|c| c.timestamp),
                        c.map(|c| {
                            c.complained_recipients
                                .iter()
                                .map(|r| r.email_address.clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                    )
                }
                "Open" | "Click" if campaign.is_none() => {
                    outcomes.push(FeedbackOutcome::Ignored {
                        reason: "no campaign tag".into(),
                    });
                    continue;
                }
                "Open" => (
                    EventType::EmailOpened,
                    "open",
                    json!({"campaign": campaign, "message_id": message_id}),
                    record.open.as_ref().and_then(|o| o.timestamp),
                    Vec::new(),
                ),
                "Click" => {
                    let mut payload = json!({"campaign": campaign, "message_id": message_id});
                    if let Some(link) = record
                        .click
                        .as_ref()
                        .and_then(|c| c.link.as_ref())
                        .filter(|l| !l.is_empty() && l.len() <= 2048)
                    {
                        payload["link"] = json!(link);
                    }
                    (
                        EventType::EmailClicked,
                        "click",
                        payload,
                        record.click.as_ref().and_then(|c| c.timestamp),
                        Vec::new(),
                    )
                }
                other => {
                    outcomes.push(FeedbackOutcome::Ignored {
                        reason: format!("{other} events are not used"),
                    });
                    continue;
                }
            };
            for address in &suppress {
                let hashed = suppression_key(address);
                let attrs =
                    json!({"reason": payload["reason"], "message_id": message_id, "at": now});
                self.ledger
                    .claim(SUPPRESSION_PK, &hashed, &attrs, None)
                    .await
                    .map_err(EmailError::port("suppression.put"))?;
                tracing::info!(address_hash = %hashed, reason = %payload["reason"], "address suppressed");
            }
            if !suppress.is_empty() {
                outcomes.push(FeedbackOutcome::Suppressed {
                    addresses: suppress.len(),
                });
            }
            let Some(profile_id) = profile_id else {
                tracing::warn!(message_id = %message_id, kind, "SES event without profile tag; no Ember event");
                outcomes.push(FeedbackOutcome::Ignored {
                    reason: "no profile tag".into(),
                });
                continue;
            };
            let mut envelope = Envelope {
                header: EventHeader {
                    event_id: event_id(&message_id, kind).into(),
                    event_type,
                    version: 1,
                    user_id: None,
                    anonymous_id: None,
                    occurred_at: at.or(record.mail.timestamp).unwrap_or(now),
                    source: "ses".into(),
                },
                context: Context::default(),
                payload,
                trace: None,
            };
            identify(&mut envelope, &profile_id);
            tracing::info!(profile = %ember_core::privacy::masked(&profile_id), event_id = %envelope.header.event_id, event_type = %event_type, "feedback event");
            outcomes.push(FeedbackOutcome::Event {
                event_id: envelope.header.event_id.to_string(),
                event_type,
            });
            pending.push(stream_record(&envelope)?);
        }
        put_all(&self.stream, pending).await?;
        Ok(outcomes)
    }
}
