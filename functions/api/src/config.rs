//! Configuration from environment variables, read once at cold start.
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `EMBER_API_KEY_HASHES` | comma-separated hex SHA-256 of server API keys (every event type) | none (events refused) |
//! | `EMBER_BROWSER_KEY_HASHES` | same, for keys shipped to browsers and apps: behavioural events only (see `auth::BROWSER_EVENT_TYPES`) | none |
//! | `EMBER_ADMIN_KEY_HASHES` | same, for the privacy endpoints | none (privacy refused) |
//! | `EMBER_PAYMENTS_WEBHOOK_SECRETS` | payments webhook signing secrets, comma-separated (rotation: all are accepted) | none (provider disabled) |
//! | `EMBER_POLLS_WEBHOOK_SECRETS` | polls webhook signing secrets | none (provider disabled) |
//! | `EMBER_UNSUBSCRIBE_SECRETS` | unsubscribe token secrets, current first (see `ember_core::unsubscribe`) | none (unsubscribe answers 500) |
//! | `EMBER_MAX_BODY_BYTES` | request body limit | 1048576 |
//! | `EMBER_WEBHOOK_TOLERANCE_SECS` | accepted clock distance of a signed webhook timestamp | 300 |
//! | `EMBER_UNSUBSCRIBE_TOKEN_DAYS` | how long an unsubscribe link works after the email was sent | 180 |
//!
//! In the SAM template these are `NoEcho` parameters, so no key is ever in the repository.
//! They can come from SSM Parameter Store: pass them at deploy time
//! (`--parameter-overrides ApiKeyHashes=$(aws ssm get-parameter --name /ember/prod/api-key-hashes
//! --query Parameter.Value --output text)`), or give the parameter the type
//! `AWS::SSM::Parameter::Value<String>` with the parameter's name as its value, or use a
//! `{{resolve:ssm:/ember/prod/api-key-hashes}}` dynamic reference in the environment. Key
//! *hashes* are not secret, so a plain `String` SSM parameter is fine for them; Lambda
//! environment variables cannot use `ssm-secure` references, so keep webhook and unsubscribe
//! secrets as `NoEcho` parameters (or Secrets Manager `{{resolve:secretsmanager:…}}`).

use chrono::Duration;
use ember_core::unsubscribe::Keys;

use crate::auth::KeyHashes;

/// Shared secrets of one webhook provider, all accepted (for rotation).
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("count", &self.0.len())
            .finish()
    }
}

impl Secrets {
    pub fn parse(list: &str) -> Secrets {
        Secrets(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub api_keys: KeyHashes,
    pub browser_keys: KeyHashes,
    pub admin_keys: KeyHashes,
    pub payments_secrets: Secrets,
    pub polls_secrets: Secrets,
    pub unsubscribe_keys: Option<Keys>,
    pub max_body_bytes: usize,
    pub webhook_tolerance: Duration,
    pub unsubscribe_token_ttl: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_keys: KeyHashes::default(),
            browser_keys: KeyHashes::default(),
            admin_keys: KeyHashes::default(),
            payments_secrets: Secrets::default(),
            polls_secrets: Secrets::default(),
            unsubscribe_keys: None,
            max_body_bytes: 1024 * 1024,
            webhook_tolerance: Duration::seconds(300),
            unsubscribe_token_ttl: Duration::days(180),
        }
    }
}

impl ApiConfig {
    /// Reads the configuration through `lookup` (`std::env::var` in production).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ApiConfig, String> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: i64| -> Result<i64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} must be a positive integer, got {v:?}")),
            }
        };
        let hashes = |name: &str| {
            KeyHashes::parse(&get(name).unwrap_or_default()).map_err(|e| format!("{name}: {e}"))
        };
        let unsubscribe_keys = match get("EMBER_UNSUBSCRIBE_SECRETS") {
            None => None,
            Some(list) => {
                Some(Keys::parse(&list).map_err(|e| format!("EMBER_UNSUBSCRIBE_SECRETS: {e}"))?)
            }
        };
        let max_body = number("EMBER_MAX_BODY_BYTES", 1024 * 1024)?;
        Ok(ApiConfig {
            api_keys: hashes("EMBER_API_KEY_HASHES")?,
            browser_keys: hashes("EMBER_BROWSER_KEY_HASHES")?,
            admin_keys: hashes("EMBER_ADMIN_KEY_HASHES")?,
            payments_secrets: Secrets::parse(
                &get("EMBER_PAYMENTS_WEBHOOK_SECRETS").unwrap_or_default(),
            ),
            polls_secrets: Secrets::parse(&get("EMBER_POLLS_WEBHOOK_SECRETS").unwrap_or_default()),
            unsubscribe_keys,
            max_body_bytes: usize::try_from(max_body).map_err(|e| e.to_string())?,
            webhook_tolerance: Duration::seconds(number("EMBER_WEBHOOK_TOLERANCE_SECS", 300)?),
            unsubscribe_token_ttl: Duration::days(number("EMBER_UNSUBSCRIBE_TOKEN_DAYS", 180)?),
        })
    }
}

/// Everything the `api` function reads from its environment: its resources and [`ApiConfig`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `STREAM_NAME`
    pub stream_name: String,
    /// `PROFILES_TABLE`
    pub profiles_table: String,
    /// `LEDGER_TABLE`
    pub ledger_table: String,
    /// `EVENT_BUS_NAME`: where configuration publishes are announced.
    pub event_bus_name: String,
    pub api: ApiConfig,
    /// `EMBER_STAGE` (optional, default `local`): the stage dimension of its metrics.
    pub stage: String,
}

impl Settings {
    /// Reads the settings through `lookup` (the environment in production, the template's
    /// resolved environment in the local runner).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let required = |name: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("environment variable {name} is not set"))
        };
        Ok(Settings {
            stream_name: required("STREAM_NAME")?,
            profiles_table: required("PROFILES_TABLE")?,
            ledger_table: required("LEDGER_TABLE")?,
            event_bus_name: required("EVENT_BUS_NAME")?,
            api: ApiConfig::from_lookup(&lookup)?,
            stage: ember_core::metrics::stage_from_lookup(&lookup),
        })
    }

    pub fn from_env() -> Result<Settings, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_defaults() {
        let hash = KeyHashes::hash_key("k");
        let cfg = ApiConfig::from_lookup(|name| match name {
            "EMBER_API_KEY_HASHES" => Some(hash.clone()),
            "EMBER_PAYMENTS_WEBHOOK_SECRETS" => Some("whsec_new, whsec_old".into()),
            "EMBER_WEBHOOK_TOLERANCE_SECS" => Some("60".into()),
            _ => None,
        })
        .unwrap();
        assert!(cfg.api_keys.accepts("k"));
        assert!(cfg.admin_keys.is_empty());
        assert_eq!(cfg.payments_secrets.iter().count(), 2);
        assert_eq!(cfg.webhook_tolerance, Duration::seconds(60));
        assert_eq!(cfg.max_body_bytes, 1024 * 1024);
        assert!(cfg.unsubscribe_keys.is_none());
        assert!(!format!("{cfg:?}").contains("whsec"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = ApiConfig::from_lookup(|n| (n == "EMBER_MAX_BODY_BYTES").then(|| "-1".into()))
            .unwrap_err();
        assert!(err.contains("EMBER_MAX_BODY_BYTES"), "{err}");
        let err = ApiConfig::from_lookup(|n| (n == "EMBER_ADMIN_KEY_HASHES").then(|| "xyz".into()))
            .unwrap_err();
        assert!(err.contains("EMBER_ADMIN_KEY_HASHES"), "{err}");
    }
}
