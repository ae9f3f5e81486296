//! The filters templates may use. minijinja is built without its builtins (binary size), so
//! these are all there are:
//!
//! | filter | example | result |
//! | --- | --- | --- |
//! | `length` | `{{ cart.items\|length }}` | items of a list, characters of a text |
//! | `href` | `{{ url\|href }}` | an `http(s)` URL escaped for an attribute, else `#` |
//! | `human` | `{{ heat_shu\|human }}` | `1.8 million`, `52,000`, `850`: two significant digits |
//! | `heat_band` | `{{ heat_shu\|heat_band }}` | `no heat`, `mild`, `medium`, `hot`, `extra-hot` |
//! | `period` | `{{ shop_name\|period }}` | the text ending in one full stop (`Co.` stays `Co.`) |
//!
//! The heat bands are centred on the levels a heat preference maps to
//! (`ember_core::enrich::heat`: mild 1 000, medium 10 000, hot 50 000, extra-hot 300 000 SHU),
//! with the boundaries halfway between them on a log scale.

use minijinja::Environment;

/// Adds every filter to `env`.
pub fn register(env: &mut Environment<'_>) {
    env.add_filter("length", length);
    env.add_filter("href", href);
    env.add_filter("human", human);
    env.add_filter("heat_band", heat_band);
    env.add_filter("period", period);
}

/// `{{ list|length }}`: items of a sequence or map, characters of a string.
pub(crate) fn length(value: minijinja::Value) -> Result<usize, minijinja::Error> {
    value.len().ok_or_else(|| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("cannot take the length of {}", value.kind()),
        )
    })
}

/// The `href` filter: an `http(s)` URL escaped for an HTML attribute (`&`, `<`, `>`, quotes)
/// but with its slashes intact, so SES click tracking can rewrite it. Anything else (e.g.
/// `javascript:` in a cart item's URL sent by a client) becomes `#`.
pub(crate) fn href(url: String) -> minijinja::Value {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return minijinja::Value::from_safe_string("#".into());
    }
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    minijinja::Value::from_safe_string(out)
}

/// `{{ n|human }}`: a count rounded to two significant digits, in words past a million.
pub fn human(n: f64) -> String {
    if !n.is_finite() || n < 0.0 {
        return n.to_string();
    }
    let rounded = round_significant(n, 2);
    if rounded >= 1e9 {
        format!("{} billion", trim(rounded / 1e9))
    } else if rounded >= 1e6 {
        format!("{} million", trim(rounded / 1e6))
    } else {
        crate::render::format_shu(rounded as u64)
    }
}

fn round_significant(n: f64, digits: i32) -> f64 {
    if n < 1.0 {
        return n.round();
    }
    let scale = 10f64.powi(digits - 1 - n.log10().floor() as i32);
    let r = (n * scale).round() / scale;
    if r >= 100.0 {
        r.round()
    } else {
        r
    }
}

/// `1.8` stays, `2.0` becomes `2`.
fn trim(x: f64) -> String {
    let text = format!("{x:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

/// `{{ shu|heat_band }}`: the heat level a Scoville figure is nearest to.
pub fn heat_band(shu: f64) -> &'static str {
    match shu {
        s if s < 100.0 => "no heat",
        s if s < 3_000.0 => "mild",
        s if s < 25_000.0 => "medium",
        s if s < 150_000.0 => "hot",
        _ => "extra-hot",
    }
}

/// `{{ text|period }}`: the text as the end of a sentence, with one full stop.
pub fn period(text: String) -> String {
    let trimmed = text.trim_end();
    if trimmed.ends_with(['.', '!', '?']) {
        trimmed.to_owned()
    } else {
        format!("{trimmed}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_people_say_them() {
        for (n, text) in [
            (0.0, "0"),
            (850.0, "850"),
            (1_833.0, "1,800"),
            (52_300.0, "52,000"),
            (99_600.0, "100,000"),
            (1_833_386.0, "1.8 million"),
            (2_000_000.0, "2 million"),
            (16_000_000.0, "16 million"),
        ] {
            assert_eq!(human(n), text, "{n}");
        }
    }

    #[test]
    fn bands_match_the_levels_preferences_map_to() {
        use ember_core::enrich::heat::{SHU_EXTRA_HOT, SHU_HOT, SHU_MEDIUM, SHU_MILD, SHU_NONE};
        let levels = [SHU_NONE, SHU_MILD, SHU_MEDIUM, SHU_HOT, SHU_EXTRA_HOT];
        let bands: Vec<&str> = levels.iter().map(|s| heat_band(f64::from(*s))).collect();
        assert_eq!(bands, ["no heat", "mild", "medium", "hot", "extra-hot"]);
        assert_eq!(heat_band(1_833_386.0), "extra-hot");
    }

    #[test]
    fn a_sentence_ends_with_one_full_stop() {
        assert_eq!(period("Ember Hot Sauce Co.".into()), "Ember Hot Sauce Co.");
        assert_eq!(period("Ember Hot Sauce".into()), "Ember Hot Sauce.");
        assert_eq!(period("Yes! ".into()), "Yes!");
    }
}
