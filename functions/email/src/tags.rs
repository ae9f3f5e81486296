//! Message tags that come back in SES feedback: `campaign` and `profile_id`.
//!
//! SES allows only ASCII letters, digits, `_` and `-` in tag values, at most 256 of them, but
//! profile ids may hold anything (`anon:…`, e-mail-like ids). Ids that fit are sent as they
//! are; others as `b64_<base64url>`, which uses only allowed characters and decodes back
//! exactly. An id whose encoding would be longer than SES keeps (a long non-ASCII id) gets no
//! tag at all: a cut tag would decode to another profile. Its feedback still suppresses by
//! the (hashed) address, but opens and clicks are not attributed.

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

/// Longest tag value SES keeps.
pub const MAX_TAG_VALUE: usize = 256;

/// The tag value for a profile id (reversible, see the module docs); `None` when it would not
/// fit in a tag.
pub fn encode_profile_id(id: &str) -> Option<String> {
    let tag = if plain(id) && !id.starts_with(ENCODED) {
        id.to_owned()
    } else {
        format!("{ENCODED}{}", URL_SAFE_NO_PAD.encode(id))
    };
    (tag.len() <= MAX_TAG_VALUE).then_some(tag)
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
            let tag = encode_profile_id(id).unwrap();
            assert!(
                tag.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{tag}"
            );
            assert_eq!(decode_profile_id(&tag).as_deref(), Some(id));
        }
        assert_eq!(encode_profile_id("u-1").as_deref(), Some("u-1"));
        assert_eq!(decode_profile_id(""), None);
    }

    #[test]
    fn an_id_that_would_not_fit_gets_no_tag_rather_than_a_cut_one() {
        // 128 characters (the schema's limit) of three-byte UTF-8: 384 bytes, 512 in base64.
        let long = "€".repeat(128);
        assert_eq!(encode_profile_id(&long), None);
        for n in 0..200 {
            let id = "é".repeat(n);
            if let Some(tag) = encode_profile_id(&id) {
                assert!(tag.len() <= MAX_TAG_VALUE);
                assert_eq!(decode_profile_id(&tag).as_deref(), Some(id.as_str()));
            }
        }
    }
}
