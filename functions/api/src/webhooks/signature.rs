//! Webhook signature schemes. Both use HMAC-SHA256 with every configured secret (rotation),
//! compared in constant time (`Mac::verify_slice`).

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secrets;
use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// Hex HMAC-SHA256 of `parts` under `secret` (what a provider would send).
pub fn sign_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut m = mac(secret);
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

fn matches_any(secrets: &Secrets, parts: &[&[u8]], signature: &[u8]) -> bool {
    secrets.iter().any(|secret| {
        let mut m = mac(secret);
        for p in parts {
            m.update(p);
        }
        m.verify_slice(signature).is_ok()
    })
}

/// Stripe-style `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]` over
/// `"<t>.<raw body>"`. The signature is checked first, then the timestamp must be within
/// `tolerance` of `now` (replay protection).
pub fn verify_timestamped(
    header: Option<&str>,
    body: &[u8],
    secrets: &Secrets,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>, ApiError> {
    let bad = |m: &str| ApiError::InvalidSignature(m.to_owned());
    let header = header.ok_or_else(|| bad("missing Stripe-Signature header"))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| bad("Stripe-Signature has no valid timestamp (t=)"))?;
    if signatures.is_empty() {
        return Err(bad("Stripe-Signature has no v1 signature"));
    }
    let t_text = t.to_string();
    let parts: [&[u8]; 3] = [t_text.as_bytes(), b".", body];
    if !signatures
        .iter()
        .any(|sig| matches_any(secrets, &parts, sig))
    {
        return Err(bad(
            "signature does not match the payload with any configured secret",
        ));
    }
    let at = DateTime::from_timestamp(t, 0).ok_or_else(|| bad("timestamp out of range"))?;
    let distance = (now - at).num_seconds().abs();
    if distance > tolerance.num_seconds() {
        return Err(ApiError::StaleTimestamp(format!(
            "signature timestamp {t} is {distance} s away from the server time; the tolerance is {} s (replayed or delayed delivery)",
            tolerance.num_seconds()
        )));
    }
    Ok(at)
}

/// GitHub-style `X-Poll-Signature: sha256=<hex>` over the raw body.
pub fn verify_body(header: Option<&str>, body: &[u8], secrets: &Secrets) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::InvalidSignature(m.to_owned());
    let header = header.ok_or_else(|| bad("missing X-Poll-Signature header"))?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or_else(|| bad("X-Poll-Signature must look like sha256=<hex>"))?;
    let sig = hex::decode(hex_sig).map_err(|_| bad("X-Poll-Signature is not hex"))?;
    if matches_any(secrets, &[body], &sig) {
        Ok(())
    } else {
        Err(bad(
            "signature does not match the payload with any configured secret",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::parse("whsec_new,whsec_old")
    }

    #[test]
    fn timestamped_accepts_rotated_secrets_and_rejects_tampering() {
        let now = DateTime::from_timestamp(1_763_634_000, 0).unwrap();
        let body = br#"{"id":"evt_1"}"#;
        let tol = Duration::seconds(300);
        let sig = sign_hex(b"whsec_old", &[b"1763634000", b".", body]);
        let header = format!("t=1763634000,v1=deadbeef,v1={sig}");
        assert_eq!(
            verify_timestamped(Some(&header), body, &secrets(), now, tol).unwrap(),
            now
        );
        let tampered = br#"{"id":"evt_2"}"#;
        assert!(matches!(
            verify_timestamped(Some(&header), tampered, &secrets(), now, tol),
            Err(ApiError::InvalidSignature(_))
        ));
        // Moving the timestamp invalidates the signature.
        let moved = format!("t=1763634001,v1={sig}");
        assert!(matches!(
            verify_timestamped(Some(&moved), body, &secrets(), now, tol),
            Err(ApiError::InvalidSignature(_))
        ));
        let later = now + Duration::seconds(301);
        assert!(matches!(
            verify_timestamped(Some(&header), body, &secrets(), later, tol),
            Err(ApiError::StaleTimestamp(_))
        ));
        assert!(matches!(
            verify_timestamped(None, body, &secrets(), now, tol),
            Err(ApiError::InvalidSignature(m)) if m.contains("missing")
        ));
        assert!(verify_timestamped(Some("v1=00"), body, &secrets(), now, tol).is_err());
        assert!(verify_timestamped(Some("t=1763634000"), body, &secrets(), now, tol).is_err());
        assert!(verify_timestamped(Some(&header), body, &Secrets::default(), now, tol).is_err());
    }

    #[test]
    fn body_signature() {
        let body = b"{}";
        let header = format!("sha256={}", sign_hex(b"whsec_new", &[body]));
        assert!(verify_body(Some(&header), body, &secrets()).is_ok());
        assert!(verify_body(Some(&header), b"{ }", &secrets()).is_err());
        assert!(verify_body(Some("sha1=00"), body, &secrets()).is_err());
        assert!(verify_body(None, body, &secrets()).is_err());
    }
}
