//! Configuration from the environment and the production wiring of the ports.

use aws_config::SdkConfig;
use ember_aws::eventbridge::EventBridgeBus;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::sqs::SqsDeadLetterSink;
use ember_core::clock::SharedClock;
use ember_core::config::{ttl_from_lookup, ConfigDoc, ConfigSource, ConfigStore};
use ember_core::fold::FoldConfig;
use ember_core::metrics::{stage_from_lookup, Metrics};
use ember_core::segment::RuleSet;
use std::sync::Arc;

use crate::handler::{Enricher, DEFAULT_DEDUP_WINDOW_DAYS};
use crate::reevaluate::{Reevaluator, DEFAULT_TOTAL_SEGMENTS};

/// The function's errors; only initialisation can fail (the handler reports per record).
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Core(#[from] ember_core::CoreError),
}

impl EnrichError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// What the `enrich` function reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `PROFILES_TABLE`
    pub profiles_table: String,
    /// `LEDGER_TABLE`: where event-id claims are kept.
    pub ledger_table: String,
    /// `EVENT_BUS_NAME`
    pub event_bus_name: String,
    /// `DEAD_LETTER_QUEUE_URL`
    pub dead_letter_queue_url: String,
    /// `HEAT_HALF_LIFE_DAYS` (optional, default 30): half-life of the heat preference decay.
    pub fold: FoldConfig,
    /// `DEDUP_WINDOW_DAYS` (optional, default 35): how long an event id is remembered.
    pub dedup_window: chrono::Duration,
    /// `CONFIG_TTL_SECONDS` (optional, default 60): how soon a published version is used.
    pub config_ttl: std::time::Duration,
    /// `EMBER_STAGE` (optional, default `local`): the stage dimension of its metrics.
    pub stage: String,
}

impl Settings {
    pub fn from_env() -> Result<Settings, EnrichError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment in production).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, EnrichError> {
        let required = |name: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    EnrichError::Config(format!("environment variable {name} is not set"))
                })
        };
        let mut fold = FoldConfig::default();
        if let Some(raw) = lookup("HEAT_HALF_LIFE_DAYS").filter(|v| !v.trim().is_empty()) {
            let days: f64 = raw
                .trim()
                .parse()
                .ok()
                .filter(|d: &f64| d.is_finite() && *d > 0.0)
                .ok_or_else(|| {
                    EnrichError::Config(format!(
                        "HEAT_HALF_LIFE_DAYS must be a positive number of days, got {raw:?}"
                    ))
                })?;
            fold.heat_half_life =
                chrono::Duration::milliseconds((days * 86_400_000.0).round() as i64);
        }
        let dedup_days = match lookup("DEDUP_WINDOW_DAYS").filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_DEDUP_WINDOW_DAYS,
            Some(raw) => raw
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| {
                    EnrichError::Config(format!(
                        "DEDUP_WINDOW_DAYS must be a whole number of days from 1 to 3650, got {raw:?}"
                    ))
                })?,
        };
        Ok(Settings {
            profiles_table: required("PROFILES_TABLE")?,
            ledger_table: required("LEDGER_TABLE")?,
            event_bus_name: required("EVENT_BUS_NAME")?,
            dead_letter_queue_url: required("DEAD_LETTER_QUEUE_URL")?,
            fold,
            dedup_window: chrono::Duration::days(dedup_days),
            config_ttl: ttl_from_lookup(&lookup).map_err(EnrichError::Config)?,
            stage: stage_from_lookup(&lookup),
        })
    }
}

/// The production handler: real DynamoDB, EventBridge and SQS adapters.
pub type Deps = Enricher<DynamoProfileStore, DynamoLedger, EventBridgeBus, SqsDeadLetterSink>;

impl Deps {
    /// Builds the adapters from one `SdkConfig` (clients are created once per process); the
    /// claims expire on `clock` (the system clock in production, event time in a replay).
    pub fn build(
        sdk: &SdkConfig,
        config: &Settings,
        clock: SharedClock,
    ) -> Result<Deps, EnrichError> {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let mut deps = Enricher::new(
            DynamoProfileStore::new(dynamo.clone(), &config.profiles_table)
                .with_report_table(&config.ledger_table),
            DynamoLedger::new(dynamo.clone(), &config.ledger_table).with_clock(clock),
            EventBridgeBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                &config.event_bus_name,
            ),
            SqsDeadLetterSink::new(aws_sdk_sqs::Client::new(sdk), &config.dead_letter_queue_url),
            config.fold.clone(),
        )?;
        deps.dedup_window = config.dedup_window;
        deps.metrics = Metrics::stdout(&config.stage);
        deps.rules = stored_rules(dynamo, &config.ledger_table, config.config_ttl)?;
        Ok(deps)
    }
}

/// The segment rules of the published configuration in `ledger_table` (the built-in ones
/// until something is published).
fn stored_rules(
    dynamo: aws_sdk_dynamodb::Client,
    ledger_table: &str,
    ttl: std::time::Duration,
) -> Result<ConfigSource<RuleSet>, EnrichError> {
    let store = ConfigStore::new(Arc::new(DynamoLedger::new(dynamo, ledger_table)));
    Ok(ConfigSource::stored(
        store,
        ttl,
        RuleSet::embedded()?,
        Box::new(|doc: &ConfigDoc| RuleSet::from_doc(&doc.segments)),
    ))
}

/// Settings of the `reevaluate` binary, read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ReevaluateSettings {
    /// `PROFILES_TABLE`
    pub profiles_table: String,
    /// `EVENT_BUS_NAME`
    pub event_bus_name: String,
    /// `LEDGER_TABLE`: where the published configuration is.
    pub ledger_table: String,
    /// `SCAN_TOTAL_SEGMENTS` (optional, default 4): parallel scan segments per run.
    pub total_segments: u32,
    /// `CONFIG_TTL_SECONDS` (optional, default 60).
    pub config_ttl: std::time::Duration,
    /// `EMBER_STAGE` (optional, default `local`): the stage dimension of its metrics.
    pub stage: String,
}

impl ReevaluateSettings {
    pub fn from_env() -> Result<ReevaluateSettings, EnrichError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment in production).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ReevaluateSettings, EnrichError> {
        let required = |name: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    EnrichError::Config(format!("environment variable {name} is not set"))
                })
        };
        let total_segments = match lookup("SCAN_TOTAL_SEGMENTS").filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_TOTAL_SEGMENTS,
            Some(raw) => raw
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| {
                    EnrichError::Config(format!(
                        "SCAN_TOTAL_SEGMENTS must be a whole number from 1 to 1000000, got {raw:?}"
                    ))
                })?,
        };
        Ok(ReevaluateSettings {
            profiles_table: required("PROFILES_TABLE")?,
            event_bus_name: required("EVENT_BUS_NAME")?,
            ledger_table: required("LEDGER_TABLE")?,
            total_segments,
            config_ttl: ttl_from_lookup(&lookup).map_err(EnrichError::Config)?,
            stage: stage_from_lookup(&lookup),
        })
    }
}

/// The production re-evaluation: real DynamoDB and EventBridge adapters.
pub type ReevaluateDeps = Reevaluator<DynamoProfileStore, EventBridgeBus>;

impl ReevaluateDeps {
    /// Builds the adapters from one `SdkConfig` (clients are created once per process).
    pub fn build(
        sdk: &SdkConfig,
        config: &ReevaluateSettings,
    ) -> Result<ReevaluateDeps, EnrichError> {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let mut deps = Reevaluator::new(
            DynamoProfileStore::new(dynamo.clone(), &config.profiles_table),
            EventBridgeBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                &config.event_bus_name,
            ),
            config.total_segments,
        )?;
        deps.rules = stored_rules(dynamo, &config.ledger_table, config.config_ttl)?;
        deps.metrics = Metrics::stdout(&config.stage);
        Ok(deps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::memory::environment as env;

    #[test]
    fn reads_required_and_optional_settings() {
        let base = [
            ("PROFILES_TABLE", "p"),
            ("LEDGER_TABLE", "l"),
            ("EVENT_BUS_NAME", "b"),
            ("DEAD_LETTER_QUEUE_URL", "q"),
        ];
        let c = Settings::from_lookup(env(&base)).unwrap();
        assert_eq!(c.fold, FoldConfig::default());
        assert_eq!(
            c.dedup_window,
            chrono::Duration::days(DEFAULT_DEDUP_WINDOW_DAYS)
        );
        let mut days = base.to_vec();
        days.push(("DEDUP_WINDOW_DAYS", "0"));
        assert!(Settings::from_lookup(env(&days))
            .unwrap_err()
            .to_string()
            .contains("DEDUP_WINDOW_DAYS"));
        let mut with = base.to_vec();
        with.push(("HEAT_HALF_LIFE_DAYS", "14"));
        let c = Settings::from_lookup(env(&with)).unwrap();
        assert_eq!(c.fold.heat_half_life, chrono::Duration::days(14));
        with.pop();
        with.push(("HEAT_HALF_LIFE_DAYS", "-1"));
        assert!(Settings::from_lookup(env(&with))
            .unwrap_err()
            .to_string()
            .contains("HEAT_HALF_LIFE_DAYS"));
        let err = Settings::from_lookup(env(&base[..3]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DEAD_LETTER_QUEUE_URL"), "{err}");
    }

    #[test]
    fn reevaluate_settings_default_and_validate_the_segment_count() {
        let base = [
            ("PROFILES_TABLE", "p"),
            ("EVENT_BUS_NAME", "b"),
            ("LEDGER_TABLE", "l"),
        ];
        let c = ReevaluateSettings::from_lookup(env(&base)).unwrap();
        assert_eq!(c.total_segments, DEFAULT_TOTAL_SEGMENTS);
        assert_eq!(c.config_ttl, std::time::Duration::from_secs(60));
        let mut with = base.to_vec();
        with.push(("CONFIG_TTL_SECONDS", "soon"));
        let err = ReevaluateSettings::from_lookup(env(&with))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_TTL_SECONDS"), "{err}");
        let mut with = base.to_vec();
        with.push(("SCAN_TOTAL_SEGMENTS", "8"));
        assert_eq!(
            ReevaluateSettings::from_lookup(env(&with))
                .unwrap()
                .total_segments,
            8
        );
        with.pop();
        with.push(("SCAN_TOTAL_SEGMENTS", "0"));
        let err = ReevaluateSettings::from_lookup(env(&with))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SCAN_TOTAL_SEGMENTS"), "{err}");
        let err = ReevaluateSettings::from_lookup(env(&base[..1]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("EVENT_BUS_NAME"), "{err}");
    }
}
