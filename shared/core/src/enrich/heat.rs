//! Heat preference → Scoville heat units (SHU).
//!
//! `heat_preference.value` may be a number, a numeric string, a level or free text:
//!
//! | input                                                         | SHU        |
//! |---------------------------------------------------------------|-----------:|
//! | a number / numeric string (`"50000"`, `"50,000 SHU"`)          | as given, 0 ..= 16 000 000 |
//! | a text saying no heat                                           | 0          |
//! | a text saying a little heat (`mild`)                            | 1 000      |
//! | a text saying medium heat                                       | 10 000     |
//! | a text saying hot                                               | 50 000     |
//! | a text saying extremely hot (`extra-hot`)                       | 300 000    |
//!
//! Free text is lower-cased and split into words (letters, digits, apostrophes); the first
//! rule with a phrase that occurs as consecutive whole words wins, so "not too hot" is mild
//! although it says "hot":
//! 1. no heat: `none`, `no heat`, `not spicy`, `no spice`, `nothing spicy`, `hate spicy`,
//!    `zero`, `not at all spicy` → 0;
//! 2. a little: `not too hot`, `not very hot`, `not that hot`, `not too spicy`, `a little`,
//!    `a bit`, `gentle`, `mild`, `little heat` → 1 000;
//! 3. extreme: `extra hot`, `very hot`, `really hot`, `super hot`, `hottest`, `extreme`,
//!    `extremely hot`, `insane`, `reaper`, `ghost`, `scorpion`, `nuclear`, `melt`,
//!    `as hot as possible`, `very spicy`, `really spicy`, `super spicy` → 300 000;
//! 4. medium: `medium`, `moderate`, `some heat`, `in between`, `middle` → 10 000;
//! 5. hot: `hot`, `spicy`, `heat`, `fire`, `fiery` → 50 000.
//!
//! Text matching none of them is rejected. Numbers outside 0 ..= 16 000 000 (pure capsaicin)
//! are rejected as implausible. A test keeps these lists equal to the code's.

use serde_json::Value;

/// Highest accepted heat preference: pure capsaicin.
pub const MAX_SHU: u32 = 16_000_000;

/// Scoville values of the heat levels (see the module docs).
pub const SHU_NONE: u32 = 0;
pub const SHU_MILD: u32 = 1_000;
pub const SHU_MEDIUM: u32 = 10_000;
pub const SHU_HOT: u32 = 50_000;
pub const SHU_EXTRA_HOT: u32 = 300_000;

/// Maps a stated heat preference to Scoville heat units (table in the module docs).
pub fn heat_to_shu(value: &Value) -> Result<u32, String> {
    match value {
        Value::Number(n) => {
            let shu = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or("is not a finite number")?;
            shu_in_range(shu)
        }
        Value::String(s) => {
            let text = s.trim().to_lowercase();
            if text.is_empty() {
                return Err("must not be empty".to_owned());
            }
            if let Some(shu) = numeric_shu(&text) {
                return shu_in_range(shu);
            }
            text_to_shu(&text)
                .ok_or_else(|| format!("could not understand heat preference '{}'", s.trim()))
        }
        _ => Err("must be a number of Scoville units or a text".to_owned()),
    }
}

fn shu_in_range(shu: f64) -> Result<u32, String> {
    if shu < 0.0 {
        Err(format!("{shu} SHU is negative"))
    } else if shu > f64::from(MAX_SHU) {
        Err(format!(
            "{shu} SHU is implausible (max {MAX_SHU}, pure capsaicin)"
        ))
    } else {
        // In range 0..=16e6 by the checks above, so the cast cannot truncate.
        Ok(shu.round() as u32)
    }
}

/// `"50000"`, `"50,000"`, `"50_000 shu"`, `"-5"` → number; anything with letters besides a
/// trailing `shu`/`scoville` → `None` (treated as text).
fn numeric_shu(text: &str) -> Option<f64> {
    let t = text
        .trim_end_matches("scoville")
        .trim_end_matches("shu")
        .trim();
    let t: String = t
        .chars()
        .filter(|c| !matches!(c, ',' | '_' | ' '))
        .collect();
    if t.is_empty() || !t.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Heat phrases and what they mean, strongest claim first: the first list with a phrase in the
/// text decides ("not too hot" is mild although it says "hot"). Every phrase is words of
/// letters, digits or apostrophes joined by single spaces (tested).
const HEAT_PHRASES: [(&[&str], u32); 5] = [
    (HEAT_NONE, SHU_NONE),
    (HEAT_SOFT, SHU_MILD),
    (HEAT_EXTREME, SHU_EXTRA_HOT),
    (HEAT_MEDIUM, SHU_MEDIUM),
    (HEAT_HOT, SHU_HOT),
];
const HEAT_NONE: &[&str] = &[
    "none",
    "no heat",
    "not spicy",
    "no spice",
    "nothing spicy",
    "hate spicy",
    "zero",
    "not at all spicy",
];
const HEAT_SOFT: &[&str] = &[
    "not too hot",
    "not very hot",
    "not that hot",
    "not too spicy",
    "a little",
    "a bit",
    "gentle",
    "mild",
    "little heat",
];
const HEAT_EXTREME: &[&str] = &[
    "extra hot",
    "very hot",
    "really hot",
    "super hot",
    "hottest",
    "extreme",
    "extremely hot",
    "insane",
    "reaper",
    "ghost",
    "scorpion",
    "nuclear",
    "melt",
    "as hot as possible",
    "very spicy",
    "really spicy",
    "super spicy",
];
const HEAT_MEDIUM: &[&str] = &["medium", "moderate", "some heat", "in between", "middle"];
const HEAT_HOT: &[&str] = &["hot", "spicy", "heat", "fire", "fiery"];

/// The words of a heat text: runs of letters, digits and apostrophes (so `-`, `_`, spaces and
/// punctuation all separate words).
fn heat_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
}

/// The Scoville value of a free heat text: the first list of [`HEAT_PHRASES`] one of whose
/// phrases occurs in it as consecutive whole words.
fn text_to_shu(text: &str) -> Option<u32> {
    let words: Vec<&str> = heat_words(text).collect();
    let said = |phrase: &str| {
        let length = phrase.split(' ').count();
        words
            .windows(length)
            .any(|run| run.iter().copied().eq(phrase.split(' ')))
    };
    HEAT_PHRASES
        .iter()
        .find(|(phrases, _)| phrases.iter().any(|p| said(p)))
        .map(|&(_, shu)| shu)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn heat_levels_map_to_documented_shu() {
        for (input, shu) in [
            (json!("mild"), SHU_MILD),
            (json!("Medium"), SHU_MEDIUM),
            (json!("hot"), SHU_HOT),
            (json!("extra-hot"), SHU_EXTRA_HOT),
            (json!("EXTRA HOT"), SHU_EXTRA_HOT),
            (json!("I like it really hot"), SHU_EXTRA_HOT),
            (json!("not too hot please"), SHU_MILD),
            (json!("I don't like it, nothing spicy"), SHU_NONE),
            (json!("somewhere in between, medium-ish"), SHU_MEDIUM),
            (json!("Give me the Carolina Reaper"), SHU_EXTRA_HOT),
            (json!("spicy!"), SHU_HOT),
            (json!(2500), 2_500),
            (json!(2500.4), 2_500),
            (json!("50,000 SHU"), 50_000),
            (json!("16000000"), MAX_SHU),
            (json!(0), 0),
        ] {
            assert_eq!(heat_to_shu(&input), Ok(shu), "{input}");
        }
    }

    #[test]
    fn implausible_heat_is_rejected() {
        for (input, needle) in [
            (json!(-5), "negative"),
            (json!("-5"), "negative"),
            (json!(16_000_001), "implausible"),
            (json!(1e12), "implausible"),
            (json!("banana"), "could not understand"),
            (json!("   "), "empty"),
            (json!(true), "number of Scoville"),
        ] {
            let err = heat_to_shu(&input).unwrap_err();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    /// What [`text_to_shu`] did before it compared words: a search for each phrase, padded
    /// with spaces, in the words joined by single spaces.
    fn text_to_shu_by_padded_search(text: &str) -> Option<u32> {
        let normalised = text.replace(['-', '_'], " ");
        let words: Vec<&str> = normalised
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .collect();
        let joined = format!(" {} ", words.join(" "));
        HEAT_PHRASES
            .iter()
            .find(|(phrases, _)| phrases.iter().any(|p| joined.contains(&format!(" {p} "))))
            .map(|&(_, shu)| shu)
    }

    #[test]
    fn heat_phrases_are_single_spaced_words() {
        for (phrases, _) in HEAT_PHRASES {
            for p in phrases {
                assert!(!p.is_empty(), "empty phrase");
                assert_eq!(heat_words(p).collect::<Vec<_>>().join(" "), *p);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Phrases, parts of phrases and other words, with any separators between them.
        #[test]
        fn heat_texts_read_like_a_padded_phrase_search(
            parts in proptest::collection::vec(
                (
                    "not|too|hot|a|bit|little|no|heat|very|spicy|extra|at|all|some|mild|hothot|shot|in|between|x'y|é",
                    "[ _,.!'-]{1,2}",
                ),
                0..7,
            ),
        ) {
            let text: String = parts.iter().map(|(w, sep)| format!("{w}{sep}")).collect();
            proptest::prop_assert_eq!(text_to_shu(&text), text_to_shu_by_padded_search(&text), "{:?}", text);
        }
    }

    #[test]
    fn heat_phrases_match_whole_words_only() {
        assert_eq!(text_to_shu("not too hot"), Some(SHU_MILD));
        assert_eq!(text_to_shu("not-too_hot!"), Some(SHU_MILD));
        assert_eq!(text_to_shu("hothot"), None);
        assert_eq!(text_to_shu("shot hot"), Some(SHU_HOT));
        assert_eq!(text_to_shu("a bitter"), None);
        assert_eq!(text_to_shu("no no heat"), Some(SHU_NONE));
        assert_eq!(text_to_shu(""), None);
    }

    /// The module docs list exactly the code's phrases, rule by rule.
    #[test]
    fn the_docs_list_the_phrases_of_each_rule() {
        let doc: String = include_str!("heat.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").trim())
            .collect::<Vec<_>>()
            .join(" ");
        for (rule, (phrases, _)) in HEAT_PHRASES.iter().enumerate() {
            let start = doc
                .find(&format!("{}. ", rule + 1))
                .expect("rule in the docs");
            let end = doc[start..].find(" → ").map_or(doc.len(), |e| start + e);
            let listed: Vec<&str> = doc[start..end].split('`').skip(1).step_by(2).collect();
            assert_eq!(listed, phrases.to_vec(), "rule {}", rule + 1);
        }
    }
}
