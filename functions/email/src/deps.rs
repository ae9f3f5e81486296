//! What the `email` and `feedback` functions read from their environment, and the one
//! production wiring of each (`main.rs`, `bin/feedback.rs` and the local runner use it).

use aws_config::SdkConfig;
use ember_aws::kinesis::KinesisEventStream;
use ember_aws::ledger::DynamoLedger;
use ember_aws::profiles::DynamoProfileStore;
use ember_aws::sesv2::SesMailer;
use std::sync::Arc;

use ember_core::clock::SharedClock;
use ember_core::config::{ttl_from_lookup, ConfigSource, ConfigStore};
use ember_core::metrics::{stage_from_lookup, Metrics};
use ember_core::unsubscribe::Keys;

use crate::error::EmailError;
use crate::feedback::Feedback;
use crate::handler::{Email, MessageSettings};
use crate::send_rate::SendRate;

/// Reads a required, non-blank variable.
fn required(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, EmailError> {
    lookup(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| EmailError::Config(format!("environment variable {name} is not set")))
}

/// How long a send waits for a free slot of the rate before it is deferred to a timer.
const SEND_RATE_MAX_WAIT_SECONDS: u32 = 2;

fn send_rate_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<SendRate, EmailError> {
    let per_second = match lookup("EMAIL_SEND_RATE_PER_SECOND").filter(|v| !v.trim().is_empty()) {
        None => 0,
        Some(raw) => raw.trim().parse::<u64>().map_err(|_| {
            EmailError::Config(format!(
                "EMAIL_SEND_RATE_PER_SECOND must be a whole number of emails per second (0: no limit), got {raw:?}"
            ))
        })?,
    };
    Ok(SendRate {
        per_second,
        max_wait_seconds: SEND_RATE_MAX_WAIT_SECONDS,
    })
}

/// What the `email` function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PROFILES_TABLE`
    pub profiles_table: String,
    /// `LEDGER_TABLE`
    pub ledger_table: String,
    /// `STREAM_NAME`: where sends report back (`EmailSent`).
    pub stream_name: String,
    /// `SES_CONFIGURATION_SET` (optional): SES event publishing for the feedback loop.
    pub configuration_set: Option<String>,
    /// `EMBER_SENDER`, `EMBER_PUBLIC_BASE_URL`, `EMBER_UNSUBSCRIBE_SECRETS`.
    pub message: MessageSettings,
    /// `CONFIG_TTL_SECONDS` (optional, default 60): how soon a published version is used.
    pub config_ttl: std::time::Duration,
    /// `EMAIL_SEND_RATE_PER_SECOND` (optional, default 0 = no limit): the SES account's
    /// sending rate, held across concurrent invocations.
    pub send_rate: SendRate,
    /// `EMBER_STAGE` (optional, default `local`): the stage dimension of its metrics.
    pub stage: String,
}

impl Settings {
    /// Reads the settings through `lookup` (the environment in production, the template's
    /// resolved environment in the local runner).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, EmailError> {
        let secrets = required(&lookup, "EMBER_UNSUBSCRIBE_SECRETS")?;
        Ok(Settings {
            profiles_table: required(&lookup, "PROFILES_TABLE")?,
            ledger_table: required(&lookup, "LEDGER_TABLE")?,
            stream_name: required(&lookup, "STREAM_NAME")?,
            configuration_set: lookup("SES_CONFIGURATION_SET").filter(|s| !s.trim().is_empty()),
            config_ttl: ttl_from_lookup(&lookup).map_err(EmailError::Config)?,
            send_rate: send_rate_from_lookup(&lookup)?,
            stage: stage_from_lookup(&lookup),
            message: MessageSettings {
                sender: required(&lookup, "EMBER_SENDER")?,
                public_base_url: required(&lookup, "EMBER_PUBLIC_BASE_URL")?,
                unsubscribe_keys: Keys::parse(&secrets)
                    .map_err(|e| EmailError::Config(format!("EMBER_UNSUBSCRIBE_SECRETS: {e}")))?,
            },
        })
    }

    pub fn from_env() -> Result<Settings, EmailError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The production email function: DynamoDB, SESv2 and Kinesis adapters.
pub type Deps = Email<DynamoProfileStore, DynamoLedger, SesMailer, KinesisEventStream>;

impl Deps {
    /// Builds the adapters and loads the embedded campaigns, rules and templates; caps and
    /// send records expire on `clock` (the system clock in production, event time in a replay).
    pub fn build(
        sdk: &SdkConfig,
        settings: Settings,
        clock: SharedClock,
    ) -> Result<Deps, EmailError> {
        let store = ConfigStore::new(Arc::new(DynamoLedger::from_conf(
            sdk,
            &settings.ledger_table,
        )));
        let config = ConfigSource::stored(
            store,
            settings.config_ttl,
            crate::compiled::builtin()?,
            Box::new(crate::compiled::compile),
        );
        Ok(Email {
            profiles: DynamoProfileStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                settings.profiles_table,
            ),
            ledger: DynamoLedger::from_conf(sdk, settings.ledger_table).with_clock(clock),
            mailer: SesMailer::from_conf(sdk, settings.configuration_set),
            stream: KinesisEventStream::from_conf(sdk, settings.stream_name),
            config,
            settings: settings.message,
            send_rate: settings.send_rate,
            metrics: Metrics::stdout(&settings.stage),
        })
    }
}

/// What the `feedback` function reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSettings {
    /// `LEDGER_TABLE`: where suppressions go.
    pub ledger_table: String,
    /// `STREAM_NAME`: where feedback events go.
    pub stream_name: String,
    /// `EMBER_STAGE` (optional, default `local`): the stage dimension of its metrics.
    pub stage: String,
}

impl FeedbackSettings {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<FeedbackSettings, EmailError> {
        Ok(FeedbackSettings {
            ledger_table: required(&lookup, "LEDGER_TABLE")?,
            stream_name: required(&lookup, "STREAM_NAME")?,
            stage: stage_from_lookup(&lookup),
        })
    }

    pub fn from_env() -> Result<FeedbackSettings, EmailError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The production feedback function: DynamoDB and Kinesis adapters.
pub type FeedbackDeps = Feedback<DynamoLedger, KinesisEventStream>;

impl FeedbackDeps {
    pub fn build(sdk: &SdkConfig, settings: FeedbackSettings, clock: SharedClock) -> FeedbackDeps {
        Feedback {
            ledger: DynamoLedger::from_conf(sdk, settings.ledger_table).with_clock(clock),
            stream: KinesisEventStream::from_conf(sdk, settings.stream_name),
            metrics: Metrics::stdout(&settings.stage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::memory::environment as env;

    #[test]
    fn email_settings_name_every_missing_or_bad_variable() {
        let base = [
            ("PROFILES_TABLE", "p"),
            ("LEDGER_TABLE", "l"),
            ("STREAM_NAME", "s"),
            ("EMBER_SENDER", "Shop <shop@example.com>"),
            ("EMBER_PUBLIC_BASE_URL", "https://shop.example"),
            (
                "EMBER_UNSUBSCRIBE_SECRETS",
                "a-long-enough-unsubscribe-secret",
            ),
        ];
        let s = Settings::from_lookup(env(&base)).unwrap();
        assert_eq!(s.configuration_set, None);
        assert_eq!(s.message.public_base_url, "https://shop.example");
        for missing in 0..base.len() {
            let mut without = base.to_vec();
            let (name, _) = without.remove(missing);
            let err = Settings::from_lookup(env(&without))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
        let mut with = base.to_vec();
        with.push(("SES_CONFIGURATION_SET", "ember"));
        let s = Settings::from_lookup(env(&with)).unwrap();
        assert_eq!(s.configuration_set.as_deref(), Some("ember"));
        let f = FeedbackSettings::from_lookup(env(&base)).unwrap();
        assert_eq!(f.stream_name, "s");
        assert!(FeedbackSettings::from_lookup(env(&base[..1])).is_err());
    }
}
