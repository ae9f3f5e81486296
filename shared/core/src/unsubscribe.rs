//! Signed one-click unsubscribe tokens and the hashed suppression key.
//!
//! A token names a profile, the campaign whose email carried it and when it was issued. It is
//! `v1.<payload>.<signature>`: `payload` is the base64url (no padding) JSON
//! `{"p":"<profile id>","c":"<campaign>","t":<issued at, epoch seconds>}` and `signature` the
//! base64url HMAC-SHA256 of `v1.<payload>` under the current secret.
//!
//! Secrets rotate: [`Keys`] holds the current secret first and older ones after it. Tokens are
//! always signed with the first and verified against all, so emails already sent keep working
//! while a new secret is rolled out. A token carries its issue time; the API refuses it after
//! `EMBER_UNSUBSCRIBE_TOKEN_DAYS` (180 by default: CAN-SPAM demands at least 30), and a token
//! can do nothing but unsubscribe the profile it names (never an erased one).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use ember_core::unsubscribe::{sign, verify, Keys, Unsubscribe};
//!
//! let keys = Keys::parse("a-current-secret-of-32-bytes-000,an-older-secret-still-accepted").unwrap();
//! let claims = Unsubscribe::new("u-1", "cart_abandonment", Utc.timestamp_opt(1_700_000_000, 0).unwrap());
//! let token = sign(&keys, &claims);
//! assert_eq!(verify(&keys, &token).unwrap(), claims);
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CoreError;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of the token format.
const VERSION: &str = "v1";
/// Secrets shorter than this are refused: HMAC keys should carry at least 128 bits.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest token [`verify`] will look at (long enough for 256-byte ids and campaign names).
pub const MAX_TOKEN_LEN: usize = 1024;

/// Ledger partition of hashed suppressed addresses; the sort key is [`suppression_key`].
pub const SUPPRESSION_PK: &str = "suppression";

/// The hashed form of an email address used wherever Ember must remember an address without
/// storing it: lowercase hex SHA-256 of the trimmed, lowercased address. The email function,
/// SES feedback and the API's erasure endpoint all use this one function.
pub fn suppression_key(email: &str) -> String {
    let normalised = email.trim().to_lowercase();
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

/// What an unsubscribe token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub profile_id: String,
    pub campaign: String,
    /// Second precision (sub-second parts are dropped when signing).
    pub issued_at: DateTime<Utc>,
}

impl Unsubscribe {
    pub fn new(
        profile_id: impl Into<String>,
        campaign: impl Into<String>,
        issued_at: DateTime<Utc>,
    ) -> Self {
        Unsubscribe {
            profile_id: profile_id.into(),
            campaign: campaign.into(),
            issued_at,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    p: String,
    c: String,
    t: i64,
}

/// Why a token was refused. None of these is retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token version is not supported")]
    UnsupportedVersion,
    #[error("token signature does not match any current secret")]
    BadSignature,
}

/// The signing secrets, current first.
#[derive(Clone)]
pub struct Keys {
    secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Keys")
            .field("count", &self.secrets.len())
            .finish()
    }
}

impl Keys {
    /// Secrets, current first. At least one, each at least [`MIN_SECRET_LEN`] bytes.
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Result<Keys, CoreError> {
        let secrets: Vec<Vec<u8>> = secrets.into_iter().map(|s| s.as_ref().to_vec()).collect();
        let config = |reason: String| CoreError::Config {
            what: "unsubscribe secrets".into(),
            reason,
        };
        if secrets.is_empty() {
            return Err(config("at least one secret is required".into()));
        }
        if let Some(i) = secrets.iter().position(|s| s.len() < MIN_SECRET_LEN) {
            return Err(config(format!(
                "secret #{} is shorter than {MIN_SECRET_LEN} bytes",
                i + 1
            )));
        }
        Ok(Keys { secrets })
    }

    /// Parses a comma-separated list (the `EMBER_UNSUBSCRIBE_SECRETS` variable), current first.
    /// Whitespace around entries is ignored; empty entries are skipped.
    pub fn parse(list: &str) -> Result<Keys, CoreError> {
        Keys::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    fn mac(secret: &[u8], signed: &str) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(signed.as_bytes());
        mac
    }
}

/// Signs `claims` with the current secret.
pub fn sign(keys: &Keys, claims: &Unsubscribe) -> String {
    let payload = Payload {
        p: claims.profile_id.clone(),
        c: claims.campaign.clone(),
        t: claims.issued_at.timestamp(),
    };
    // Serialising three plain fields cannot fail.
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
    let tag = Keys::mac(&keys.secrets[0], &signed).finalize().into_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks the signature against every secret (constant-time) and returns the claims.
pub fn verify(keys: &Keys, token: &str) -> Result<Unsubscribe, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let (signed, sig) = token
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("missing signature"))?;
    let (version, payload) = signed
        .split_once('.')
        .ok_or(TokenError::Malformed("missing version"))?;
    if version != VERSION {
        return Err(TokenError::UnsupportedVersion);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    if !keys
        .secrets
        .iter()
        .any(|s| Keys::mac(s, signed).verify_slice(&sig).is_ok())
    {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    let payload: Payload =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed("payload is not valid"))?;
    if payload.p.is_empty() {
        return Err(TokenError::Malformed("empty profile id"));
    }
    let issued_at = DateTime::from_timestamp(payload.t, 0)
        .ok_or(TokenError::Malformed("issued-at out of range"))?;
    Ok(Unsubscribe {
        profile_id: payload.p,
        campaign: payload.c,
        issued_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn claims() -> Unsubscribe {
        Unsubscribe::new(
            "u-42",
            "churn_risk",
            Utc.timestamp_opt(1_790_000_000, 0).unwrap(),
        )
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let keys = Keys::parse("0123456789abcdef-current").unwrap();
        let token = sign(&keys, &claims());
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{token}"
        );
        assert_eq!(verify(&keys, &token).unwrap(), claims());
    }

    #[test]
    fn rotation_accepts_old_secret_and_signs_with_new() {
        let old = Keys::parse("0123456789abcdef-old").unwrap();
        let rotated = Keys::parse("0123456789abcdef-new, 0123456789abcdef-old").unwrap();
        let token = sign(&old, &claims());
        assert_eq!(verify(&rotated, &token).unwrap(), claims());
        let fresh = sign(&rotated, &claims());
        assert_eq!(verify(&old, &fresh), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampering_is_detected() {
        let keys = Keys::parse("0123456789abcdef-current").unwrap();
        let token = sign(&keys, &claims());
        let other = sign(
            &keys,
            &Unsubscribe::new("u-43", "churn_risk", claims().issued_at),
        );
        // Payload of one token with the signature of another.
        let (_, sig) = token.rsplit_once('.').unwrap();
        let (signed, _) = other.rsplit_once('.').unwrap();
        assert_eq!(
            verify(&keys, &format!("{signed}.{sig}")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&keys, "garbage"),
            Err(TokenError::Malformed("missing signature"))
        );
        assert_eq!(
            verify(&keys, "v2.abc.def"),
            Err(TokenError::UnsupportedVersion)
        );
        assert!(verify(&keys, &"a".repeat(2000)).is_err());
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(Keys::parse("").is_err());
        assert!(Keys::parse("short").is_err());
        assert!(
            !format!("{:?}", Keys::parse("0123456789abcdef-secret").unwrap()).contains("secret")
        );
    }

    #[test]
    fn suppression_key_normalises() {
        assert_eq!(
            suppression_key(" Ana@Example.COM \n"),
            suppression_key("ana@example.com")
        );
        assert_eq!(suppression_key("ana@example.com").len(), 64);
        assert_ne!(
            suppression_key("ana@example.com"),
            suppression_key("bob@example.com")
        );
    }
}
