//! Deterministic, realistic workloads: the same `(records, users, seed)` always yields the
//! same events, so benchmark runs and test assertions are comparable.

use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Workload {
    pub records: usize,
    pub users: usize,
    /// Prefix of user ids (`<prefix>-<n>`); tests use a unique one per run.
    pub user_prefix: String,
    /// Prefix of event ids (`<prefix>-<i>`).
    pub event_prefix: String,
    /// Event ids are UUIDs (what the HTTP API assigns) instead of `<prefix>-<i>`; derived from
    /// the prefix, the seed and the index, so still deterministic and unique per prefix.
    pub uuid_ids: bool,
    pub seed: u64,
    /// Every `invalid_every`-th record is broken (bad JSON or schema violations); 0 = none.
    pub invalid_every: usize,
}

impl Workload {
    pub fn new(records: usize, users: usize) -> Workload {
        Workload {
            records,
            users: users.max(1),
            user_prefix: "u".into(),
            event_prefix: "evt".into(),
            uuid_ids: false,
            seed: 7,
            invalid_every: 0,
        }
    }

    pub fn prefixed(mut self, user_prefix: &str, event_prefix: &str) -> Workload {
        self.user_prefix = user_prefix.to_owned();
        self.event_prefix = event_prefix.to_owned();
        self
    }

    pub fn with_uuid_ids(mut self) -> Workload {
        self.uuid_ids = true;
        self
    }

    /// The event id of record `i`.
    pub fn event_id(&self, i: usize) -> String {
        if !self.uuid_ids {
            return format!("{}-{i}", self.event_prefix);
        }
        let prefix = self
            .event_prefix
            .bytes()
            .fold(self.seed, |a, b| splitmix(a ^ u64::from(b)));
        let high = splitmix(prefix ^ (i as u64));
        let low = splitmix(high ^ 0x5851_F42D_4C95_7F2D);
        let bytes = (u128::from(high) << 64 | u128::from(low)).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    pub fn with_invalid_every(mut self, every: usize) -> Workload {
        self.invalid_every = every;
        self
    }

    /// Whether record `i` is one of the broken ones.
    pub fn is_invalid(&self, i: usize) -> bool {
        self.invalid_every > 0 && (i + 1) % self.invalid_every == 0
    }

    /// The user id of record `i`.
    pub fn user_of(&self, i: usize) -> String {
        let mut x = splitmix(self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
        x %= self.users as u64;
        format!("{}-{x}", self.user_prefix)
    }

    /// `(partition key, raw bytes)` per record, in stream order.
    pub fn records(&self) -> Vec<(String, Vec<u8>)> {
        let base: DateTime<Utc> = Utc
            .with_ymd_and_hms(2026, 11, 20, 8, 0, 0)
            .single()
            .unwrap_or_default();
        (0..self.records)
            .map(|i| {
                let user = self.user_of(i);
                let at = base + Duration::seconds(i as i64);
                let id = self.event_id(i);
                let bytes = if self.is_invalid(i) {
                    invalid(i, &user, at, &id)
                } else {
                    serde_json::to_vec(&event(i, self.seed, &user, at, &id)).unwrap_or_default()
                };
                (user, bytes)
            })
            .collect()
    }

    /// The records as the Lambda `KinesisEvent` the enrich function receives (one shard).
    pub fn kinesis_event(&self) -> KinesisEvent {
        kinesis_event("shardId-000000000000", 0, &self.records())
    }
}

/// Builds a Kinesis event as Lambda delivers it from `(partition key, data)` pairs, with
/// increasing sequence numbers starting after `first_sequence` on shard `shard_id`.
pub fn kinesis_event(
    shard_id: &str,
    first_sequence: u64,
    records: &[(String, Vec<u8>)],
) -> KinesisEvent {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, (key, data))| {
            let seq = format!("{:056}", first_sequence + i as u64 + 1);
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1_795_600_000.0 + i as f64,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard_id}:{seq}"),
                "eventName": "aws:kinesis:record",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap_or_default()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

const SAUCES: &[(&str, &str, &str)] = &[
    ("HS-HAB-01", "Habanero Heat", "12.50"),
    ("HS-GHO-03", "Ghost Pepper", "15.90"),
    ("HS-JAL-02", "Jalapeño Mild", "8.90"),
    ("HS-CAR-07", "Carolina Reaper", "19.90"),
    ("HS-CHI-04", "Chipotle Smoke", "9.50"),
];

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
];

/// One valid event; the type mix follows a storefront: mostly views, some carts, few orders.
fn event(i: usize, seed: u64, user: &str, at: DateTime<Utc>, id: &str) -> Value {
    let r = splitmix(seed.wrapping_add(i as u64 * 31)) % 100;
    let (sku, name, price) = SAUCES[i % SAUCES.len()];
    let context = json!({
        "user_agent": AGENTS[i % AGENTS.len()],
        "page_url": format!("https://shop.example/p/{sku}?utm_source=newsletter&utm_campaign=winter"),
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
    });
    let (kind, payload) = match r {
        0..=39 => (
            "page_view",
            json!({"url": "https://shop.example/sauces", "title": "Hot sauces"}),
        ),
        40..=64 => (
            "product_view",
            json!({"sku": sku, "name": name, "price": price, "currency": "EUR",
                   "url": format!("https://shop.example/p/{sku}")}),
        ),
        65..=79 => (
            "add_to_cart",
            json!({"sku": sku, "name": name, "price": price, "currency": "EUR", "quantity": 1 + (i % 3)}),
        ),
        80..=84 => ("remove_from_cart", json!({"sku": sku, "quantity": 1})),
        85..=89 => (
            "checkout_started",
            json!({"checkout_id": format!("co-{i}"), "total": price, "currency": "EUR"}),
        ),
        90..=94 => (
            "purchase",
            json!({"order_id": format!("o-{i}"), "total": price, "currency": "EUR",
                   "items": [{"sku": sku, "name": name, "price": price, "quantity": 1}]}),
        ),
        _ => {
            // Each customer has a consistent taste, so heat segments actually form.
            let taste = user
                .bytes()
                .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
            let level = ["mild", "medium", "hot", "extra-hot"][(taste % 4) as usize];
            ("heat_preference", json!({"value": level, "source": "quiz"}))
        }
    };
    json!({
        "event_id": id,
        "type": kind,
        "version": 1,
        "user_id": user,
        "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "source": "web",
        "context": context,
        "payload": payload,
    })
}

/// A broken record: alternately not JSON at all, and JSON that violates the schemas.
fn invalid(i: usize, user: &str, at: DateTime<Utc>, id: &str) -> Vec<u8> {
    if i % 2 == 0 {
        format!("{{\"event_id\": \"{id}\", \"type\": \"page_view\", oops").into_bytes()
    } else {
        serde_json::to_vec(&json!({
            "event_id": id, "type": "add_to_cart", "version": 1,
            "user_id": user, "occurred_at": at.to_rfc3339(), "source": "web",
            "payload": {"sku": "HS-HAB-01", "currency": "EURO", "quantity": 0},
        }))
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_deterministic_and_valid() {
        let w = Workload::new(300, 20).with_invalid_every(10);
        assert_eq!(w.records(), w.records());
        let registry = ember_core::schema::Registry::embedded().unwrap();
        let mut users = std::collections::BTreeSet::new();
        for (i, (user, bytes)) in w.records().iter().enumerate() {
            users.insert(user.clone());
            let decoded = ember_core::enrich::decode(bytes, &registry);
            assert_eq!(decoded.is_err(), w.is_invalid(i), "record {i}: {decoded:?}");
        }
        assert_eq!(users.len(), 20);
        assert_eq!(w.kinesis_event().records.len(), 300);
    }

    #[test]
    fn uuid_event_ids_are_canonical_deterministic_and_unique_per_prefix() {
        let a = Workload::new(1_000, 10).with_uuid_ids();
        let b = a.clone().prefixed("u", "other");
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1_000 {
            let id = a.event_id(i);
            let uuid = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(uuid.hyphenated().to_string(), id, "canonical text");
            assert_eq!(id, a.event_id(i));
            assert!(seen.insert(id) && seen.insert(b.event_id(i)));
        }
        let registry = ember_core::schema::Registry::embedded().unwrap();
        for (_, bytes) in a.records() {
            let event = ember_core::enrich::decode(&bytes, &registry).unwrap();
            assert!(seen.contains(&*event.header.event_id));
        }
    }

    #[test]
    fn workloads_move_customers_between_segments() {
        let handler = crate::memory::memory_enricher().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (response, stats, _) =
            runtime.block_on(handler.process(&Workload::new(300, 20).kinesis_event()));
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(stats.users, 20);
        let events = handler.bus.take();
        let entered = events
            .iter()
            .filter(|e| matches!(e, ember_core::ports::BusEvent::SegmentEntered(_)))
            .count();
        let carts = events
            .iter()
            .filter(|e| matches!(e, ember_core::ports::BusEvent::CartUpdated(_)))
            .count();
        assert!(
            entered >= 5 && carts >= 5,
            "entered {entered}, carts {carts}"
        );
    }
}
