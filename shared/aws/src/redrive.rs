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
    let partition_key =
        crate::archive::customer_of(&value).ok_or("the record names no customer")?;
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

/// One operation's progress: its report, and the messages it leaves alone (made visible
/// again when it ends).
#[derive(Default)]
struct Run {
    report: Report,
    untouched: Vec<String>,
}

impl Run {
    fn skip(&mut self, queued: &Queued) {
        self.report.skipped += 1;
        self.untouched.push(queued.receipt.clone());
    }

    fn keep(&mut self, queued: &Queued, what: &str, why: impl Into<String>) {
        self.report.kept.push((what.to_owned(), why.into()));
        self.untouched.push(queued.receipt.clone());
    }

    /// A dry run's answer: it would be done; the message stays.
    fn would(&mut self, queued: &Queued, what: &str) {
        self.report.done.push(what.to_owned());
        self.untouched.push(queued.receipt.clone());
    }

    /// Settles a message by the answer to putting back what it held: deleted once back (a
    /// message that cannot be deleted comes back, and its next redrive is a duplicate the
    /// consumer drops), else kept with the error. Whether it is back.
    async fn settle<T>(
        &mut self,
        queue: &DeadLetterQueue,
        queued: &Queued,
        what: &str,
        answer: Vec<PortResult<T>>,
    ) -> bool {
        match answer.into_iter().next() {
            Some(Ok(_)) => {
                if let Err(error) = queue.delete(&queued.receipt).await {
                    tracing::warn!(%error, "put back, message not deleted: it comes back");
                }
                self.report.done.push(what.to_owned());
                true
            }
            Some(Err(e)) => {
                self.keep(queued, what, e.to_string());
                false
            }
            None => {
                self.keep(queued, what, "no answer");
                false
            }
        }
    }

    async fn finish(self, queue: &DeadLetterQueue) -> PortResult<Report> {
        for receipt in &self.untouched {
            queue.release(receipt).await?;
        }
        Ok(self.report)
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
    let mut run = Run::default();
    let mut blocked: Vec<String> = Vec::new();
    for queued in queue.receive_all(HOLD).await? {
        let letter = match &queued.letter {
            Ok(l) if selection.matches(l) => l,
            Ok(_) => {
                run.skip(&queued);
                continue;
            }
            Err(why) => {
                run.keep(&queued, UNREADABLE, why.as_str());
                continue;
            }
        };
        let origin = letter.origin.as_str();
        match record_of(letter) {
            Err(why) => run.keep(&queued, origin, why),
            Ok(record) if blocked.contains(&record.partition_key) => {
                let why = "an earlier record of the same customer was not put back";
                run.keep(&queued, origin, why);
            }
            Ok(_) if dry_run => run.would(&queued, origin),
            Ok(record) => {
                let answer = stream.put(std::slice::from_ref(&record)).await;
                if !run.settle(queue, &queued, origin, answer).await {
                    blocked.push(record.partition_key);
                }
            }
        }
    }
    run.finish(queue).await
}

/// Publishes the bus events of the email failure queue again (see the module doc); `dry_run`
/// only says what it would do. The report names each event by its id.
pub async fn redrive_events(
    queue: &DeadLetterQueue,
    bus: &impl EventBus,
    dry_run: bool,
) -> PortResult<Report> {
    let mut run = Run::default();
    for queued in queue.receive_all(HOLD).await? {
        match bus_event_of(&queued.body) {
            Err(why) => run.keep(&queued, UNREADABLE, why),
            Ok(event) if dry_run => run.would(&queued, event.id()),
            Ok(event) => {
                let answer = bus.publish(std::slice::from_ref(&event)).await;
                run.settle(queue, &queued, event.id(), answer).await;
            }
        }
    }
    run.finish(queue).await
}

/// Deletes the selected dead letters for good.
pub async fn purge(queue: &DeadLetterQueue, selection: &Selection) -> PortResult<Report> {
    let mut run = Run::default();
    for queued in queue.receive_all(HOLD).await? {
        match &queued.letter {
            Ok(l) if selection.matches(l) => {
                queue.delete(&queued.receipt).await?;
                run.report.done.push(l.origin.clone());
            }
            Ok(_) => run.skip(&queued),
            Err(why) => run.keep(&queued, UNREADABLE, why.as_str()),
        }
    }
    run.finish(queue).await
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
