//! The operator's side of the failure queues: list what failed and why, put it back once
//! the cause is fixed, or purge it.
//!
//! - The dead-letter queue holds the records enrich refused ([`DeadLetter`]s): [`redrive`]
//!   puts them back on the stream. Enrich released the event-id claims of the records it
//!   dead-lettered, so a redriven record is applied once; a record put twice (a lost answer,
//!   a delete that failed so the message came back) is a duplicate by its claim. Records go
//!   back oldest first, one at a time, and a customer whose record could not be put has none
//!   of its later ones put, so a customer's events keep their order.
//! - The email failure queue holds the bus events the email functions failed on (the rule's
//!   dead letters, or Lambda's on-failure records around them): [`redrive_events`] publishes
//!   them on the bus again. The email function keys sends by the event's own id, so an email
//!   already sent is not sent again.
//!
//! A message is deleted only once what it holds is back; those an operation leaves alone are
//! made visible again when it ends.

use std::time::Duration;

use base64::Engine;
use ember_core::ports::{BusEvent, DeadLetter, EventBus, EventStream, PortResult, StreamRecord};

use crate::retry::classify;

/// How long an operation holds the messages it received (those it leaves alone are made
/// visible again when it ends).
const HOLD: Duration = Duration::from_secs(60);

/// The origin reported for a message that holds no dead letter.
pub const UNREADABLE: &str = "(unreadable message)";

/// Which dead letters an operation takes: all, or those of one stage and/or whose reason
/// contains a text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub stage: Option<String>,
    pub reason: Option<String>,
}

impl Selection {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.stage.as_ref().is_none_or(|s| letter.stage == *s)
            && self
                .reason
                .as_ref()
                .is_none_or(|r| letter.reason.contains(r.as_str()))
    }
}

/// One message of the queue: its receipt (to delete it) and the dead letter it holds, or why
/// it holds none.
#[derive(Debug, Clone)]
pub struct Queued {
    pub receipt: String,
    pub body: String,
    pub letter: Result<DeadLetter, String>,
}

/// What a redrive or purge did, by origin (`kinesis:<shard>:<sequence number>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Put back on the stream (or, for a purge, deleted).
    pub done: Vec<String>,
    /// Left in the queue, with the reason.
    pub kept: Vec<(String, String)>,
    /// Not selected.
    pub skipped: usize,
}

/// The record to put back for `letter`: its raw bytes, keyed by the customer they name.
pub fn record_of(letter: &DeadLetter) -> Result<StreamRecord, String> {
    if letter.reason.contains(crate::sqs::TRUNCATED) {
        return Err("the raw record was truncated to fit the queue".into());
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(&letter.raw_base64)
        .map_err(|e| format!("raw record is not base64: {e}"))?;
    // The partition key the API gave it: the user id, else `anon:<anonymous id>`.
    let value: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| format!("raw record is not JSON: {e}"))?;
    let text = |k: &str| value[k].as_str().filter(|s| !s.is_empty());
    let partition_key = match (text("user_id"), text("anonymous_id")) {
        (Some(user), _) => user.to_owned(),
        (None, Some(anon)) => format!("{}{anon}", ember_core::event::ANON_PREFIX),
        (None, None) => return Err("the record names no customer".into()),
    };
    Ok(StreamRecord {
        partition_key,
        data,
    })
}

/// The bus event a message of the email failure queue holds: the EventBridge event itself
/// (the rule's dead-letter queue) or the `requestPayload` of Lambda's on-failure record.
pub fn bus_event_of(body: &str) -> Result<BusEvent, String> {
    let message: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let event = match message.get("requestPayload") {
        Some(payload) => payload,
        None => &message,
    };
    let detail_type = event["detail-type"]
        .as_str()
        .ok_or("no EventBridge event in the message")?;
    if detail_type == "Scheduled Event" {
        return Err("a schedule's run: the next run does its work".into());
    }
    BusEvent::from_parts(detail_type, event["detail"].clone())
        .ok_or_else(|| format!("not an Ember bus event ({detail_type})"))
}

/// The dead-letter queue, read and emptied by an operator.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl DeadLetterQueue {
    pub fn from_conf(config: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        DeadLetterQueue {
            client: aws_sdk_sqs::Client::new(config),
            url: url.into(),
        }
    }

    /// Every message, oldest letter first, each once. A received message stays invisible
    /// for `hold` (it comes back then unless deleted or released); the read stops when the
    /// queue answers nothing new.
    pub async fn receive_all(&self, hold: Duration) -> PortResult<Vec<Queued>> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(i32::MAX))
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| classify(&e, "sqs.receive_message"))?;
            let fresh: Vec<_> = out
                .messages()
                .iter()
                .filter(|m| seen.insert(m.message_id().unwrap_or_default().to_owned()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for m in fresh {
                let body = m.body().unwrap_or_default().to_owned();
                let letter = serde_json::from_str::<DeadLetter>(&body)
                    .map_err(|e| format!("not a dead letter: {e}"));
                all.push(Queued {
                    receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                    body,
                    letter,
                });
            }
        }
        all.sort_by(|a, b| match (&a.letter, &b.letter) {
            (Ok(a), Ok(b)) => (a.at, &a.origin).cmp(&(b.at, &b.origin)),
            (a, b) => a.is_err().cmp(&b.is_err()),
        });
        Ok(all)
    }

    /// Every message, left in the queue (what `list` shows an operator).
    pub async fn list(&self) -> PortResult<Vec<Queued>> {
        let all = self.receive_all(HOLD).await?;
        for q in &all {
            self.release(&q.receipt).await?;
        }
        Ok(all)
    }

    /// Makes a received message visible again at once (one this operation leaves alone).
    pub async fn release(&self, receipt: &str) -> PortResult<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| classify(&e, "sqs.change_message_visibility"))?;
        Ok(())
    }

    pub async fn delete(&self, receipt: &str) -> PortResult<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| classify(&e, "sqs.delete_message"))?;
        Ok(())
    }
}

/// Puts the selected dead letters back on `stream` (see the module doc); `dry_run` only says
/// what it would do.
pub async fn redrive(
    queue: &DeadLetterQueue,
    stream: &impl EventStream,
    selection: &Selection,
    dry_run: bool,
) -> PortResult<Report> {
    let mut report = Report::default();
    let mut blocked: Vec<String> = Vec::new();
    let mut untouched: Vec<String> = Vec::new();
    for queued in queue.receive_all(HOLD).await? {
        let letter = match &queued.letter {
            Ok(l) if selection.matches(l) => l,
            Ok(_) => {
                report.skipped += 1;
                untouched.push(queued.receipt.clone());
                continue;
            }
            Err(why) => {
                report.kept.push((UNREADABLE.into(), why.clone()));
                untouched.push(queued.receipt.clone());
                continue;
            }
        };
        let record = match record_of(letter) {
            Ok(r) => r,
            Err(why) => {
                report.kept.push((letter.origin.clone(), why));
                untouched.push(queued.receipt.clone());
                continue;
            }
        };
        if blocked.contains(&record.partition_key) {
            let why = "an earlier record of the same customer was not put back";
            report.kept.push((letter.origin.clone(), why.into()));
            untouched.push(queued.receipt.clone());
            continue;
        }
        if dry_run {
            report.done.push(letter.origin.clone());
            untouched.push(queued.receipt.clone());
            continue;
        }
        let put = stream.put(std::slice::from_ref(&record)).await;
        match put.into_iter().next() {
            Some(Ok(_)) => {
                // On the stream: a message that cannot be deleted comes back, and its second
                // redrive is a duplicate enrich drops.
                if let Err(e) = queue.delete(&queued.receipt).await {
                    tracing::warn!(origin = %letter.origin, error = %e, "redriven, not deleted");
                }
                report.done.push(letter.origin.clone());
            }
            Some(Err(e)) => {
                blocked.push(record.partition_key);
                report.kept.push((letter.origin.clone(), e.to_string()));
                untouched.push(queued.receipt.clone());
            }
            None => {
                blocked.push(record.partition_key);
                let why = "the stream answered nothing";
                report.kept.push((letter.origin.clone(), why.into()));
                untouched.push(queued.receipt.clone());
            }
        }
    }
    release_all(queue, &untouched).await?;
    Ok(report)
}

async fn release_all(queue: &DeadLetterQueue, receipts: &[String]) -> PortResult<()> {
    for receipt in receipts {
        queue.release(receipt).await?;
    }
    Ok(())
}

/// Publishes the bus events of the email failure queue again (see the module doc); `dry_run`
/// only says what it would do. The report names each event by its id.
pub async fn redrive_events(
    queue: &DeadLetterQueue,
    bus: &impl EventBus,
    dry_run: bool,
) -> PortResult<Report> {
    let mut report = Report::default();
    let mut untouched: Vec<String> = Vec::new();
    for queued in queue.receive_all(HOLD).await? {
        let event = match bus_event_of(&queued.body) {
            Ok(e) => e,
            Err(why) => {
                report.kept.push((UNREADABLE.into(), why));
                untouched.push(queued.receipt.clone());
                continue;
            }
        };
        let id = event.id().to_owned();
        if dry_run {
            report.done.push(id);
            untouched.push(queued.receipt.clone());
            continue;
        }
        match bus
            .publish(std::slice::from_ref(&event))
            .await
            .into_iter()
            .next()
        {
            Some(Ok(())) => {
                if let Err(e) = queue.delete(&queued.receipt).await {
                    tracing::warn!(event = %id, error = %e, "republished, not deleted");
                }
                report.done.push(id);
            }
            other => {
                let why = other
                    .and_then(Result::err)
                    .map_or_else(|| "the bus answered nothing".to_owned(), |e| e.to_string());
                report.kept.push((id, why));
                untouched.push(queued.receipt.clone());
            }
        }
    }
    release_all(queue, &untouched).await?;
    Ok(report)
}

/// Deletes the selected dead letters for good.
pub async fn purge(queue: &DeadLetterQueue, selection: &Selection) -> PortResult<Report> {
    let mut report = Report::default();
    let mut untouched: Vec<String> = Vec::new();
    for queued in queue.receive_all(HOLD).await? {
        match &queued.letter {
            Ok(l) if selection.matches(l) => {
                queue.delete(&queued.receipt).await?;
                report.done.push(l.origin.clone());
                continue;
            }
            Ok(_) => report.skipped += 1,
            Err(why) => report.kept.push((UNREADABLE.into(), why.clone())),
        }
        untouched.push(queued.receipt.clone());
    }
    release_all(queue, &untouched).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            origin: "kinesis:shardId-000000000000:1".into(),
            stage: "profile.put".into(),
            reason: reason.into(),
            raw_base64: base64::engine::general_purpose::STANDARD.encode(raw),
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_record_goes_back_under_its_customers_key() {
        let user = letter(r#"{"event_id":"e1","user_id":"u-1"}"#, "refused");
        let r = record_of(&user).unwrap();
        assert_eq!(r.partition_key, "u-1");
        assert_eq!(r.data, br#"{"event_id":"e1","user_id":"u-1"}"#);
        let anon = letter(r#"{"user_id":"","anonymous_id":"a-9"}"#, "refused");
        assert_eq!(record_of(&anon).unwrap().partition_key, "anon:a-9");
    }

    #[test]
    fn records_that_cannot_go_back_say_why() {
        for (l, why) in [
            (letter(r#"{"event_id":"e1"}"#, "x"), "names no customer"),
            (letter("not json", "x"), "not JSON"),
            (
                letter(
                    r#"{"user_id":"u"}"#,
                    &format!("too big {}", crate::sqs::TRUNCATED),
                ),
                "truncated",
            ),
        ] {
            let err = record_of(&l).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let mut bad = letter("{}", "x");
        bad.raw_base64 = "***".into();
        assert!(record_of(&bad).unwrap_err().contains("base64"));
    }

    #[test]
    fn a_bus_event_is_read_from_the_rule_dead_letter_or_the_on_failure_record() {
        let event = serde_json::json!({
            "version": "0", "id": "eb-1", "source": "ember.enrich",
            "detail-type": "SegmentEntered",
            "detail": {"id": "u-1:vip:entered:3", "profile_id": "u-1", "segment": "vip",
                       "at": "2026-11-20T10:00:00Z", "profile_version": 3}
        });
        let on_failure = serde_json::json!({
            "requestContext": {"condition": "RetriesExhausted"},
            "requestPayload": event,
        });
        for body in [event.to_string(), on_failure.to_string()] {
            let e = bus_event_of(&body).unwrap();
            assert_eq!(
                (e.detail_type(), e.id()),
                ("SegmentEntered", "u-1:vip:entered:3")
            );
        }
        let schedule = serde_json::json!({"detail-type": "Scheduled Event", "detail": {}});
        assert!(bus_event_of(&schedule.to_string())
            .unwrap_err()
            .contains("schedule"));
        let other = serde_json::json!({"detail-type": "Something", "detail": {}});
        assert!(bus_event_of(&other.to_string())
            .unwrap_err()
            .contains("not an Ember"));
        assert!(bus_event_of("{}")
            .unwrap_err()
            .contains("no EventBridge event"));
    }

    #[test]
    fn a_selection_matches_stage_and_reason_text() {
        let l = letter("{}", "ValidationException: item too large");
        assert!(Selection::default().matches(&l));
        let stage = |s: &str| Selection {
            stage: Some(s.into()),
            reason: None,
        };
        assert!(stage("profile.put").matches(&l));
        assert!(!stage("validate").matches(&l));
        let reason = Selection {
            stage: Some("profile.put".into()),
            reason: Some("too large".into()),
        };
        assert!(reason.matches(&l));
        let other = Selection {
            reason: Some("schema".into()),
            ..Selection::default()
        };
        assert!(!other.matches(&l));
    }
}
