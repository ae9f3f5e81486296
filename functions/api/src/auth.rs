//! API keys: clients send `x-api-key: <key>` or `Authorization: Bearer <key>`; Ember stores
//! only the SHA-256 of each key (hex, comma-separated in `EMBER_API_KEY_HASHES` and
//! `EMBER_ADMIN_KEY_HASHES`). Comparison is constant-time over the digests, and every
//! configured hash is compared so timing does not reveal which one matched.

use lambda_http::http::header;
use lambda_http::Request;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::http;

/// SHA-256 digests of the accepted keys.
#[derive(Clone, Default)]
pub struct KeyHashes(Vec<[u8; 32]>);

impl std::fmt::Debug for KeyHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHashes")
            .field("count", &self.0.len())
            .finish()
    }
}

impl KeyHashes {
    /// Parses a comma-separated list of 64-digit hex SHA-256 hashes. Empty entries are skipped.
    pub fn parse(list: &str) -> Result<KeyHashes, String> {
        let mut hashes = Vec::new();
        for (i, entry) in list.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(entry, &mut digest)
                .map_err(|e| format!("entry #{} is not a 64-digit hex SHA-256 hash: {e}", i + 1))?;
            hashes.push(digest);
        }
        Ok(KeyHashes(hashes))
    }

    /// The hash of a key, as it is configured (handy for operators and tests).
    pub fn hash_key(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time membership test of the key's digest.
    pub fn accepts(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = subtle::Choice::from(0u8);
        for hash in &self.0 {
            found |= hash.ct_eq(&digest);
        }
        bool::from(found)
    }
}

/// The key the client presented, if any.
pub fn presented_key(req: &Request) -> Option<&str> {
    if let Some(key) = http::header(req, "x-api-key").filter(|k| !k.is_empty()) {
        return Some(key);
    }
    let auth = http::header(req, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a key may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A key kept on the shop's servers: every event type.
    Server,
    /// A key shipped to browsers and apps, so readable by anyone: behavioural events only.
    Browser,
}

/// Event types a browser key may send: what a visitor does on the site. Profile updates,
/// consent, purchases (from the payments provider) and email feedback need a server key, so a
/// key lifted from a page cannot change someone's address, consent or revenue.
pub const BROWSER_EVENT_TYPES: &[&str] = &[
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "heat_preference",
    "poll_answer",
    "identify",
];

/// Event types no key may send: Ember writes them itself (the email function's campaign
/// assignments), and a forged one would change what a campaign report says.
pub const INTERNAL_EVENT_TYPES: &[&str] = &["campaign_assigned"];

/// The scope of the presented key: missing key -> 401, unknown key -> 403.
pub fn scope(req: &Request, server: &KeyHashes, browser: &KeyHashes) -> Result<Scope, ApiError> {
    let key = presented_key(req).ok_or(ApiError::MissingCredentials)?;
    // Both lists are always compared, so timing does not tell which kind a key is.
    let (is_server, is_browser) = (server.accepts(key), browser.accepts(key));
    if is_server {
        Ok(Scope::Server)
    } else if is_browser {
        Ok(Scope::Browser)
    } else {
        Err(ApiError::InvalidCredentials)
    }
}

/// Missing key -> 401, key not in `accepted` -> 403.
pub fn require(req: &Request, accepted: &KeyHashes) -> Result<(), ApiError> {
    let key = presented_key(req).ok_or(ApiError::MissingCredentials)?;
    if accepted.accepts(key) {
        Ok(())
    } else {
        Err(ApiError::InvalidCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;
    use lambda_http::Body;

    fn hashes() -> KeyHashes {
        KeyHashes::parse(&format!(
            " {} ,,{}",
            KeyHashes::hash_key("k1"),
            KeyHashes::hash_key("k2")
        ))
        .unwrap()
    }

    #[test]
    fn accepts_configured_keys_only() {
        let h = hashes();
        assert!(h.accepts("k1") && h.accepts("k2"));
        assert!(!h.accepts("k3") && !h.accepts(""));
        assert!(KeyHashes::parse("zz").is_err());
        assert!(!format!("{h:?}").contains(&KeyHashes::hash_key("k1")));
    }

    #[test]
    fn missing_is_401_and_wrong_is_403() {
        let h = hashes();
        let mut req = Request::new(Body::Empty);
        assert!(matches!(
            require(&req, &h),
            Err(ApiError::MissingCredentials)
        ));
        req.headers_mut()
            .insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert!(matches!(
            require(&req, &h),
            Err(ApiError::InvalidCredentials)
        ));
        req.headers_mut()
            .insert("authorization", HeaderValue::from_static("bearer k2"));
        assert!(require(&req, &h).is_ok());
        req.headers_mut()
            .insert("x-api-key", HeaderValue::from_static("k1"));
        assert!(require(&req, &h).is_ok());
    }
}
