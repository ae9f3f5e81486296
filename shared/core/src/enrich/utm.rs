//! UTM parameters of the page URL.
//!
//! `utm_*` query parameters of `context.page_url` become [`super::EnrichedEvent::utm`] (keys
//! matched case-insensitively and kept lower-case, values trimmed and at most 200
//! characters). The URL is parsed by the `url` crate (WHATWG); a relative or malformed URL is
//! a problem.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::Problem;

/// UTM parameters: `utm_source`, `utm_campaign`, … → value.
pub type Utm<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// The UTM parameters Ember keeps; query keys match them case-insensitively.
const UTM_KEYS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];

/// Longest UTM value kept, in characters (longer ones are cut).
const UTM_VALUE_CHARS: usize = 200;

/// The `utm_*` query parameters of a page URL. Relative or malformed URLs are a problem.
pub fn utm_of(page_url: &str) -> Result<Utm<'static>, Problem> {
    let url = url::Url::parse(page_url)
        .map_err(|e| Problem::new("/context/page_url", format!("is not an absolute URL: {e}")))?;
    let mut utm = Utm::new();
    for (k, v) in url.query_pairs() {
        let Some(key) = UTM_KEYS.iter().find(|u| u.eq_ignore_ascii_case(&k)) else {
            continue;
        };
        let v = v.trim();
        if !v.is_empty() {
            let kept: String = v.chars().take(UTM_VALUE_CHARS).collect();
            utm.insert(Cow::Borrowed(*key), Cow::Owned(kept));
        }
    }
    Ok(utm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utm_values_are_cut_at_200_characters_not_bytes() {
        let kept = |value: &str| {
            let url = format!("https://shop.example/?utm_term={value}");
            utm_of(&url)
                .unwrap()
                .remove("utm_term")
                .unwrap()
                .into_owned()
        };
        for n in [199, 200] {
            assert_eq!(kept(&"a".repeat(n)), "a".repeat(n));
        }
        assert_eq!(kept(&"a".repeat(201)), "a".repeat(200));
        // Two bytes per character: 150 characters (300 bytes) stay whole, 250 are cut to 200.
        assert_eq!(kept(&"é".repeat(150)), "é".repeat(150));
        assert_eq!(kept(&"é".repeat(250)), "é".repeat(200));
        assert_eq!(kept(&"%C3%A9".repeat(201)), "é".repeat(200));
    }

    #[test]
    fn utm_parameters_are_extracted() {
        let utm = utm_of("https://shop.example/p?utm_source=news&UTM_Medium=email&utm_campaign=Ghost%20Week&x=1&utm_term=").unwrap();
        assert_eq!(utm.len(), 3);
        assert_eq!(utm["utm_source"], "news");
        assert_eq!(utm["utm_medium"], "email");
        assert_eq!(utm["utm_campaign"], "Ghost Week");
        assert!(utm_of("/relative/path").is_err());
    }

    proptest::proptest! {
        /// Any text at all gets an answer (parameters or a problem), never a panic.
        #[test]
        fn utm_of_takes_any_text(url in "(https?://)?\\PC{0,40}") {
            let _ = utm_of(&url);
        }
    }
}
