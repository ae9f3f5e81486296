//! SESv2 implementation of the [`Mailer`] port: `SendEmail` with *Simple* content (subject,
//! HTML and text parts, custom headers such as RFC 8058 `List-Unsubscribe`), through a
//! configuration set (so SES publishes bounce/complaint/open/click events), with message tags.
//!
//! `SendEmail` has no idempotency key, so a request is never repeated once it may have been
//! accepted: the client has the SDK's retries off, and errors are classified for the caller:
//! - SES refused the request (an error answer with a 4xx status): nothing was sent,
//!   [`SendError::NotSent`]. Throttling and the sending quota are retried here with backoff,
//!   then [`PortError::Transient`] (the event is retried later); a rejected *recipient* (bad
//!   address, `MessageRejected`) is [`PortError::Permanent`] with stage [`STAGE_RECIPIENT`]
//!   (suppress it); anything else (unverified sender, missing configuration set, suspended
//!   account) is permanent with stage [`STAGE_SEND`], a deployment problem;
//! - no answer, or a 5xx (timeouts, dropped connections, SES failures): the email may have
//!   gone out, [`SendError::OutcomeUnknown`]. The caller records it; it is never retried.

use async_trait::async_trait;
use aws_sdk_sesv2::error::ProvideErrorMetadata;
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag,
};
use aws_sdk_sesv2::Client;
use aws_smithy_types::retry::RetryConfig;
use ember_core::ports::{EmailMessage, Mailer, PortError, PortResult, SendError};

use crate::retry::{classify, Backoff};

/// Stage of permanent errors caused by the recipient's address (suppress it).
pub const STAGE_RECIPIENT: &str = "ses.recipient";
/// Stage of every other SES failure.
pub const STAGE_SEND: &str = "ses.send";
/// SES limits on tag names and values.
pub const MAX_TAG_LEN: usize = 256;

/// Replaces every character SES does not allow in tag names and values (ASCII letters,
/// digits, `_`, `-`) by `_`, and truncates to 256 characters. Never empty.
pub fn sanitize_tag(s: &str) -> String {
    let clean: String = s
        .chars()
        .take(MAX_TAG_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "_".to_owned()
    } else {
        clean
    }
}

/// Sends through SESv2.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: Client,
    configuration_set: Option<String>,
    backoff: Backoff,
}

impl SesMailer {
    /// `configuration_set`: the SES configuration set (`SES_CONFIGURATION_SET`); `None` sends
    /// without one (no event publishing — only sensible for local runs). `client` must not
    /// retry on its own ([`SesMailer::from_conf`] builds one that does not).
    pub fn new(client: Client, configuration_set: Option<String>) -> Self {
        SesMailer {
            client,
            configuration_set,
            backoff: Backoff::default(),
        }
    }

    /// A client from the process's `SdkConfig`, with the SDK's automatic retries off.
    pub fn from_conf(config: &aws_config::SdkConfig, configuration_set: Option<String>) -> Self {
        let conf = aws_sdk_sesv2::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build();
        Self::new(Client::from_conf(conf), configuration_set)
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    async fn send_once(&self, message: &EmailMessage) -> Result<String, SendError> {
        let content = build_content(message).map_err(SendError::NotSent)?;
        let tags = build_tags(message).map_err(SendError::NotSent)?;
        let out = self
            .client
            .send_email()
            .from_email_address(&message.from)
            .destination(Destination::builder().to_addresses(&message.to).build())
            .content(content)
            .set_email_tags(Some(tags))
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| classify_send(&e))?;
        out.message_id
            .ok_or_else(|| SendError::OutcomeUnknown("SES answered without a message id".into()))
    }
}

fn build_err(e: impl std::fmt::Display) -> PortError {
    PortError::Permanent {
        stage: STAGE_SEND,
        reason: format!("cannot build request: {e}"),
    }
}

/// The Simple content: UTF-8 subject, HTML and text bodies, custom headers.
pub fn build_content(message: &EmailMessage) -> PortResult<EmailContent> {
    let utf8 = |data: &str| {
        Content::builder()
            .data(data)
            .charset("UTF-8")
            .build()
            .map_err(build_err)
    };
    let mut simple = Message::builder().subject(utf8(&message.subject)?).body(
        Body::builder()
            .html(utf8(&message.html)?)
            .text(utf8(&message.text)?)
            .build(),
    );
    for (name, value) in &message.headers {
        simple = simple.headers(
            MessageHeader::builder()
                .name(name)
                .value(value)
                .build()
                .map_err(build_err)?,
        );
    }
    Ok(EmailContent::builder().simple(simple.build()).build())
}

/// The message tags, sanitised to SES's allowed characters.
pub fn build_tags(message: &EmailMessage) -> PortResult<Vec<MessageTag>> {
    message
        .tags
        .iter()
        .map(|(name, value)| {
            MessageTag::builder()
                .name(sanitize_tag(name))
                .value(sanitize_tag(value))
                .build()
                .map_err(build_err)
        })
        .collect()
}

fn classify_send(err: &aws_sdk_sesv2::error::SdkError<SendEmailError>) -> SendError {
    let refused = match err {
        aws_sdk_sesv2::error::SdkError::ServiceError(s) => s.raw().status().is_client_error(),
        aws_sdk_sesv2::error::SdkError::ConstructionFailure(_) => true,
        _ => false,
    };
    if !refused {
        return SendError::OutcomeUnknown(ember_core::privacy::redact_addresses(
            &aws_sdk_sesv2::error::DisplayErrorContext(err).to_string(),
        ));
    }
    SendError::NotSent(classify_refusal(err))
}

/// A request SES refused: why, and whether it is the recipient's fault.
fn classify_refusal(err: &aws_sdk_sesv2::error::SdkError<SendEmailError>) -> PortError {
    let reason = ember_core::privacy::redact_addresses(
        &aws_sdk_sesv2::error::DisplayErrorContext(err).to_string(),
    );
    match err.as_service_error() {
        Some(SendEmailError::TooManyRequestsException(_))
        | Some(SendEmailError::LimitExceededException(_)) => PortError::Transient {
            stage: STAGE_SEND,
            reason,
        },
        // SES' own words for a recipient it refuses; a sandbox's unverified *sender* is not
        // the recipient's fault.
        Some(SendEmailError::MessageRejected(e))
            if !e
                .message()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("not verified") =>
        {
            PortError::Permanent {
                stage: STAGE_RECIPIENT,
                reason,
            }
        }
        Some(SendEmailError::BadRequestException(e)) if mentions_address(e.message()) => {
            PortError::Permanent {
                stage: STAGE_RECIPIENT,
                reason,
            }
        }
        _ if err.code() == Some("InvalidParameterValue") && mentions_address(err.message()) => {
            PortError::Permanent {
                stage: STAGE_RECIPIENT,
                reason,
            }
        }
        _ => match classify(err, STAGE_SEND) {
            PortError::Permanent { stage, .. } => PortError::Permanent { stage, reason },
            other => other,
        },
    }
}

fn mentions_address(message: Option<&str>) -> bool {
    let m = message.unwrap_or_default().to_ascii_lowercase();
    m.contains("address") || m.contains("recipient") || m.contains("domain")
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, message: &EmailMessage) -> Result<String, SendError> {
        let mut attempt = 0;
        loop {
            match self.send_once(message).await {
                Err(SendError::NotSent(e @ PortError::Transient { .. }))
                    if self.backoff.can_retry(attempt) =>
                {
                    tracing::warn!(stage = STAGE_SEND, attempt, error = %e, "SES send failed; backing off");
                    self.backoff.wait(attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> EmailMessage {
        EmailMessage {
            to: "ana@example.com".into(),
            from: "Shop <shop@example.com>".into(),
            subject: "Your cart".into(),
            html: "<p>Hi</p>".into(),
            text: "Hi".into(),
            headers: vec![
                (
                    "List-Unsubscribe".into(),
                    "<https://x.example/u?t=1>".into(),
                ),
                (
                    "List-Unsubscribe-Post".into(),
                    "List-Unsubscribe=One-Click".into(),
                ),
            ],
            tags: vec![
                ("campaign".into(), "cart_abandonment".into()),
                ("profile_id".into(), "anon:a b".into()),
            ],
        }
    }

    #[test]
    fn tags_are_sanitised() {
        assert_eq!(sanitize_tag("anon:a b"), "anon_a_b");
        assert_eq!(sanitize_tag(""), "_");
        assert_eq!(sanitize_tag(&"x".repeat(300)).len(), MAX_TAG_LEN);
        let tags = build_tags(&message()).unwrap();
        assert_eq!(tags[1].value(), "anon_a_b");
    }

    #[test]
    fn simple_content_carries_both_parts_and_headers() {
        let content = build_content(&message()).unwrap();
        let simple = content.simple().unwrap();
        assert_eq!(simple.subject().map(|c| c.data()), Some("Your cart"));
        let body = simple.body().unwrap();
        assert_eq!(body.html().map(|c| c.data()), Some("<p>Hi</p>"));
        assert_eq!(body.text().map(|c| c.data()), Some("Hi"));
        let headers: Vec<_> = simple
            .headers()
            .iter()
            .map(|h| (h.name(), h.value()))
            .collect();
        assert_eq!(
            headers[1],
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        );
    }
}
