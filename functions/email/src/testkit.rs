//! In-memory implementations of the ports for unit tests (the integration tests in `tests/`
//! use the real DynamoDB, SESv2 and Kinesis adapters against the emulator).

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use ember_core::ports::{EmailMessage, EventStream, Mailer, PortResult, SendError, StreamRecord};

/// The ledger: ember-core's in-memory one (conditional create, compare-and-set, counters).
pub type MemoryLedger = ember_core::memory::MemoryLedger;

pub type MemoryProfiles = ember_core::memory::MemoryProfileStore;

/// Records sent messages; answers with scripted results first, then message ids.
#[derive(Default)]
pub struct RecordingMailer {
    pub sent: Mutex<Vec<EmailMessage>>,
    pub script: Mutex<VecDeque<Result<String, SendError>>>,
}

impl RecordingMailer {
    pub fn fail_next(&self, error: SendError) {
        self.script.lock().unwrap().push_back(Err(error));
    }

    pub fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    pub fn last(&self) -> EmailMessage {
        self.sent
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a message was sent")
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, message: &EmailMessage) -> Result<String, SendError> {
        if let Some(result) = self.script.lock().unwrap().pop_front() {
            return result;
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(message.clone());
        Ok(format!("msg-{}", sent.len()))
    }
}

#[derive(Default)]
pub struct MemoryStream {
    pub records: Mutex<Vec<StreamRecord>>,
}

impl MemoryStream {
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.data).unwrap())
            .collect()
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    async fn put(&self, records: &[StreamRecord]) -> Vec<PortResult<String>> {
        let mut stored = self.records.lock().unwrap();
        records
            .iter()
            .map(|r| {
                stored.push(r.clone());
                Ok(stored.len().to_string())
            })
            .collect()
    }
}
