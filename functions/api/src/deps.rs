//! What a request needs, and the production wiring of it.

use aws_config::SdkConfig;
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_core::clock::{Clock, SharedClock};
use std::sync::Arc;

use ember_aws::eventbridge::EventBridgeBus;
use ember_core::config::ConfigStore;
use ember_core::metrics::Metrics;
use ember_core::ports::{EventBus, EventStream, Ledger, ProfileStore};
use ember_core::schema::Registry;

use crate::config::{ApiConfig, Settings};

/// Everything a request needs, built once per cold start.
pub struct Deps {
    pub stream: Box<dyn EventStream>,
    pub profiles: Box<dyn ProfileStore>,
    pub ledger: Arc<dyn Ledger>,
    /// Where configuration publishes are announced (`ConfigPublished`).
    pub bus: Box<dyn EventBus>,
    pub registry: Registry,
    pub config: ApiConfig,
    pub clock: Box<dyn Clock>,
    pub metrics: Metrics,
}

impl Deps {
    /// The AWS adapters for `settings`, on `clock` (the system clock in production; the local
    /// runner passes its simulated one, so token expiry and ledger TTLs follow event time).
    pub fn build(sdk: &SdkConfig, settings: Settings, clock: SharedClock) -> Result<Deps, String> {
        if settings.api.api_keys.is_empty() {
            tracing::warn!("EMBER_API_KEY_HASHES is empty: every event request will be refused");
        }
        let registry = Registry::embedded().map_err(|e| e.to_string())?;
        Ok(Deps {
            stream: Box::new(KinesisEventStream::from_conf(sdk, settings.stream_name)),
            profiles: Box::new(DynamoProfileStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                settings.profiles_table,
            )),
            ledger: Arc::new(
                DynamoLedger::from_conf(sdk, settings.ledger_table).with_clock(clock.clone()),
            ),
            bus: Box::new(EventBridgeBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                settings.event_bus_name,
            )),
            registry,
            config: settings.api,
            clock: Box::new(clock),
            metrics: Metrics::stdout(&settings.stage),
        })
    }
}

impl Deps {
    /// The configuration versions, in the ledger table.
    pub fn config_store(&self) -> ConfigStore {
        ConfigStore::new(self.ledger.clone())
    }
}
