//! Webhook signature headers and unsubscribe tokens from arbitrary bytes. Must never panic
//! and never accept a forgery.
#![no_main]

use chrono::{DateTime, Duration};
use ember_api::config::Secrets;
use ember_api::webhooks::signature::{verify_body, verify_timestamped};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &[u8])| {
    let (header, body) = input;
    let secrets = Secrets::parse("whsec_fuzz_current,whsec_fuzz_previous");
    let now = DateTime::from_timestamp(1_763_634_000, 0).unwrap_or_default();
    assert!(verify_timestamped(Some(header), body, &secrets, now, Duration::seconds(300)).is_err());
    assert!(verify_body(Some(header), body, &secrets).is_err());
    if let Ok(keys) = ember_core::unsubscribe::Keys::parse("fuzz-secret-0123456789abcdef") {
        assert!(ember_core::unsubscribe::verify(&keys, header).is_err());
    }
});
