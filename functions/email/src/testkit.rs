//! In-memory implementations of the ports for unit tests (the integration tests in `tests/`
//! use the real DynamoDB, SESv2 and Kinesis adapters against the emulator).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ember_core::ports::{
    EmailMessage, EventStream, Ledger, Mailer, PortError, PortResult, StreamRecord,
};

/// `(pk, sk)` → `(attributes, expiry)`.
type Records = BTreeMap<(String, String), (serde_json::Value, Option<DateTime<Utc>>)>;

#[derive(Default)]
pub struct MemoryLedger {
    pub records: Mutex<Records>,
}

impl MemoryLedger {
    /// Expiry is stored but not simulated: the handler's clock is injected (fixtures carry
    /// fixed dates) while TTLs are wall-clock; the DynamoDB adapter's expiry is tested there.
    fn live(_: &(serde_json::Value, Option<DateTime<Utc>>)) -> bool {
        true
    }

    pub fn keys(&self, pk_prefix: &str) -> Vec<(String, String)> {
        let map = self.records.lock().unwrap();
        map.iter()
            .filter(|(k, v)| k.0.starts_with(pk_prefix) && Self::live(v))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn claim(
        &self,
        pk: &str,
        sk: &str,
        attrs: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut map = self.records.lock().unwrap();
        let key = (pk.to_owned(), sk.to_owned());
        if map.get(&key).is_some_and(Self::live) {
            return Ok(false);
        }
        map.insert(key, (attrs.clone(), expires_at));
        Ok(true)
    }

    async fn get(&self, pk: &str, sk: &str) -> PortResult<Option<serde_json::Value>> {
        let map = self.records.lock().unwrap();
        Ok(map
            .get(&(pk.to_owned(), sk.to_owned()))
            .filter(|v| Self::live(v))
            .map(|v| v.0.clone()))
    }

    async fn query(
        &self,
        pk: &str,
        sk_prefix: &str,
    ) -> PortResult<Vec<(String, serde_json::Value)>> {
        let map = self.records.lock().unwrap();
        Ok(map
            .iter()
            .filter(|(k, v)| k.0 == pk && k.1.starts_with(sk_prefix) && Self::live(v))
            .map(|(k, v)| (k.1.clone(), v.0.clone()))
            .collect())
    }

    async fn increment_below(
        &self,
        pk: &str,
        sk: &str,
        limit: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> PortResult<bool> {
        let mut map = self.records.lock().unwrap();
        let entry = map
            .entry((pk.to_owned(), sk.to_owned()))
            .or_insert((serde_json::json!({"count": 0}), expires_at));
        let count = entry.0["count"].as_u64().unwrap_or(0);
        if count >= limit {
            return Ok(false);
        }
        entry.0["count"] = (count + 1).into();
        Ok(true)
    }

    async fn delete(&self, pk: &str, sk: &str) -> PortResult<()> {
        self.records
            .lock()
            .unwrap()
            .remove(&(pk.to_owned(), sk.to_owned()));
        Ok(())
    }
}

pub type MemoryProfiles = ember_core::memory::MemoryProfileStore;

/// Records sent messages; answers with scripted results first, then message ids.
#[derive(Default)]
pub struct RecordingMailer {
    pub sent: Mutex<Vec<EmailMessage>>,
    pub script: Mutex<VecDeque<PortResult<String>>>,
}

impl RecordingMailer {
    pub fn fail_next(&self, error: PortError) {
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
    async fn send(&self, message: &EmailMessage) -> PortResult<String> {
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
