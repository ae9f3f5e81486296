//! The baseline: what a straightforward per-record Lambda with Powertools-style idempotency
//! does. For every record it decodes, writes an idempotency record for the event id (a
//! conditional put, "in progress"; an id already recorded is a duplicate), reads the profile
//! (GetItem), folds the one event, evaluates the segments, writes the profile (PutItem),
//! marks the idempotency record completed (a second put), and publishes each segment/cart
//! change with its own `PutEvents`; a bad record is dead-lettered on its own. It uses the
//! same domain code and adapters as Ember's handler, so a comparison isolates the strategy.

use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use ember_core::enrich::decode;
use ember_core::error::describe;
use ember_core::fold::FoldConfig;
use ember_core::outbox::cart_event;
use ember_core::ports::Decided;
use ember_core::ports::{
    Claim, DeadLetter, DeadLetterSink, EventBus, EventClaims, PortResult, ProfileStore,
};
use ember_core::profile::Profile;
use ember_core::schema::Registry;
use ember_core::segment::RuleSet;
use ember_enrich::handler::transitions;

/// What the baseline did with one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NaiveStats {
    pub records: usize,
    pub dead_letters: usize,
    pub writes: usize,
    pub published: usize,
    pub duplicates: usize,
}

pub struct Naive<S, C, B, D> {
    pub store: S,
    /// Where the idempotency records go.
    pub idempotency: C,
    pub bus: B,
    pub dead_letters: D,
    pub registry: Registry,
    pub rules: RuleSet,
    pub fold: FoldConfig,
}

impl<S: ProfileStore, C: EventClaims, B: EventBus, D: DeadLetterSink> Naive<S, C, B, D> {
    pub fn new(
        store: S,
        idempotency: C,
        bus: B,
        dead_letters: D,
    ) -> Result<Self, ember_core::CoreError> {
        Ok(Naive {
            store,
            idempotency,
            bus,
            dead_letters,
            registry: Registry::embedded()?,
            rules: RuleSet::embedded()?,
            fold: FoldConfig::default(),
        })
    }

    /// Processes the batch record by record; stops at the first port failure.
    pub async fn process(&self, event: &KinesisEvent) -> PortResult<NaiveStats> {
        let mut stats = NaiveStats {
            records: event.records.len(),
            ..NaiveStats::default()
        };
        for record in &event.records {
            let data = record.kinesis.data.0.as_slice();
            let decoded = decode(data, &self.registry).and_then(|e| {
                let key = e.header.profile_key().ok_or_else(|| {
                    vec![ember_core::error::Problem::new(
                        "/user_id",
                        "missing user id",
                    )]
                })?;
                Ok((key, e))
            });
            let (key, enriched) = match decoded {
                Ok(ok) => ok,
                Err(problems) => {
                    let letter = DeadLetter {
                        origin: format!("kinesis:{}", record.kinesis.sequence_number),
                        stage: "validate".into(),
                        reason: describe(&problems),
                        raw_base64: base64::engine::general_purpose::STANDARD.encode(data),
                        at: chrono::Utc::now(),
                    };
                    self.dead_letters
                        .send(std::slice::from_ref(&letter))
                        .await?;
                    stats.dead_letters += 1;
                    continue;
                }
            };
            let id = &enriched.header.event_id;
            let origin = format!("naive:{}", record.kinesis.sequence_number);
            let expires = chrono::Utc::now() + chrono::Duration::days(35);
            if self.idempotency.claim(id, &origin, expires).await? == Claim::Held {
                stats.duplicates += 1;
                continue;
            }
            let stored = self.store.get(&key).await?;
            let expected = stored.as_ref().map_or(0, |p| p.version);
            let mut profile = stored.unwrap_or_else(|| Profile::new(&key));
            let before_cart = profile.cart.clone();
            profile.apply(&enriched, &self.fold);
            let at = enriched.header.occurred_at;
            let version = expected + 1;
            profile.version = version;
            let segments = self.rules.evaluate(&profile, at);
            let mut changes = transitions(
                &profile.id,
                &profile.segments,
                &segments,
                at,
                version,
                Some(&enriched.header.event_id),
                Decided::default(),
            );
            profile.segments = segments;
            if profile.cart != before_cart {
                changes.push(cart_event(&profile, version, at));
            }
            // Campaign report counters, if the event moved any, in the same write (as Ember).
            let tallies = std::mem::take(&mut profile.tallies);
            self.store.put_tallied(&profile, expected, &tallies).await?;
            // "Completed": the idempotency record is written again with its result.
            self.idempotency.claim(id, &origin, expires).await?;
            stats.writes += 3;
            for change in changes {
                if let Some(Err(e)) = self.bus.publish(std::slice::from_ref(&change)).await.pop() {
                    return Err(e);
                }
                stats.published += 1;
            }
        }
        Ok(stats)
    }
}
