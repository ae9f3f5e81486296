//! Message tags that come back in SES feedback: `campaign` and `profile_id`.
//!
//! SES allows only ASCII letters, digits, `_` and `-` in tag values, but profile ids may hold
//! anything (`anon:…`, e-mail-like ids). Ids that fit are sent as they are; others as
//! `b64_<base64url>`, which uses only allowed characters and decodes back exactly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

pub const CAMPAIGN: &str = "campaign";
pub const PROFILE_ID: &str = "profile_id";
const ENCODED: &str = "b64_";

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The tag value for a profile id (reversible, see the module docs).
pub fn encode_profile_id(id: &str) -> String {
    if plain(id) && !id.starts_with(ENCODED) {
        id.to_owned()
    } else {
        format!("{ENCODED}{}", URL_SAFE_NO_PAD.encode(id))
    }
}

/// The profile id a tag value stands for; `None` if it cannot be decoded.
pub fn decode_profile_id(tag: &str) -> Option<String> {
    match tag.strip_prefix(ENCODED) {
        Some(b64) => URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None if !tag.is_empty() => Some(tag.to_owned()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_round_trip_through_allowed_characters() {
        for id in [
            "u-1",
            "anon:9f1c",
            "ana@example.com",
            "b64_tricky",
            "Ünïcödé id",
        ] {
            let tag = encode_profile_id(id);
            assert!(
                tag.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{tag}"
            );
            assert_eq!(decode_profile_id(&tag).as_deref(), Some(id));
        }
        assert_eq!(encode_profile_id("u-1"), "u-1");
        assert_eq!(decode_profile_id(""), None);
    }
}
