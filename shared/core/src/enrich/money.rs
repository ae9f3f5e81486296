//! Money → minor units.
//!
//! Amounts arrive in major units as decimal strings (`"12.50"`) or JSON numbers and are
//! converted exactly (no floating point) to integer minor units using the ISO 4217 exponent:
//! 0 for e.g. JPY, KRW, VND, ISK, CLP; 3 for BHD, IQD, JOD, KWD, LYD, OMR, TND; 2 otherwise.
//! Negative amounts, exponents (`1e3`), more decimals than the currency has, unknown currency
//! codes and amounts above [`MAX_AMOUNT_MAJOR`] are rejected.

use std::borrow::Cow;

use serde_json::Value;

/// Highest accepted amount in major units (one billion of any currency).
pub const MAX_AMOUNT_MAJOR: i64 = 1_000_000_000;

const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const THREE_DECIMAL: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const TWO_DECIMAL: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR",
    "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF",
    "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VES", "WST", "XCD", "YER", "ZAR",
    "ZMW", "ZWL",
];

/// Number of minor-unit digits of an ISO 4217 currency, `None` if the code is unknown.
pub fn currency_exponent(code: &str) -> Option<u32> {
    // The lists are sorted (tested).
    let listed = |list: &[&str]| list.binary_search(&code).is_ok();
    if listed(ZERO_DECIMAL) {
        Some(0)
    } else if listed(THREE_DECIMAL) {
        Some(3)
    } else if listed(TWO_DECIMAL) {
        Some(2)
    } else {
        None
    }
}

/// Converts a major-unit amount (decimal string or JSON number) to minor units, exactly.
pub fn to_minor(amount: &Value, currency: &str) -> Result<i64, String> {
    let exponent = currency_exponent(currency)
        .ok_or_else(|| format!("unknown ISO 4217 currency '{currency}'"))?;
    let text: Cow<'_, str> = match amount {
        Value::String(s) => s.trim().into(),
        // serde_json prints the shortest representation that round-trips, so 12.5 -> "12.5".
        Value::Number(n) => n.to_string().into(),
        _ => return Err("must be a decimal string or a number".to_owned()),
    };
    if text.starts_with('-') {
        return Err(format!("'{text}' is negative"));
    }
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
        return Err(format!("'{text}' is not a plain decimal amount like 12.50"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > exponent as usize {
        return Err(format!(
            "'{text}' has more decimals than {currency} allows ({exponent})"
        ));
    }
    let int = int.trim_start_matches('0');
    if int.len() > 10 {
        return Err(format!("'{text}' is implausibly large"));
    }
    let major: i64 = if int.is_empty() {
        0
    } else {
        int.parse()
            .map_err(|_| format!("'{text}' is not a number"))?
    };
    if major > MAX_AMOUNT_MAJOR {
        return Err(format!(
            "'{text}' is implausibly large (max {MAX_AMOUNT_MAJOR} {currency})"
        ));
    }
    // `frac` is at most `exponent` (≤ 3) ASCII digits, checked above: pad it to `exponent`.
    let minor_frac: i64 = match frac {
        "" => 0,
        digits => format!("{digits:0<width$}", width = exponent as usize)
            .parse()
            .map_err(|_| format!("'{text}' is not a number"))?,
    };
    Ok(major * 10_i64.pow(exponent) + minor_frac)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn money_is_converted_exactly_with_the_currency_exponent() {
        assert_eq!(to_minor(&json!("12.50"), "EUR"), Ok(1250));
        assert_eq!(to_minor(&json!(12.5), "EUR"), Ok(1250));
        assert_eq!(to_minor(&json!(0.1), "USD"), Ok(10));
        assert_eq!(to_minor(&json!("19.99"), "USD"), Ok(1999));
        assert_eq!(to_minor(&json!(1500), "JPY"), Ok(1500));
        assert_eq!(to_minor(&json!("1.234"), "KWD"), Ok(1234));
        assert_eq!(to_minor(&json!("1.5"), "BHD"), Ok(1500));
        assert_eq!(
            to_minor(&json!("12.500"), "EUR"),
            Ok(1250),
            "trailing zeros are fine"
        );
        assert_eq!(to_minor(&json!("0"), "EUR"), Ok(0));
    }

    #[test]
    fn implausible_money_is_rejected() {
        for (amount, currency, needle) in [
            (json!("-1.00"), "EUR", "negative"),
            (json!(-3), "EUR", "negative"),
            (json!("1.005"), "EUR", "more decimals"),
            (json!("1.5"), "JPY", "more decimals"),
            (json!("1e3"), "EUR", "plain decimal"),
            (json!(1e15), "EUR", "implausibly large"),
            (json!("NaN"), "EUR", "plain decimal"),
            (json!("12."), "EUR", "plain decimal"),
            (json!(""), "EUR", "plain decimal"),
            (json!("5000000000"), "EUR", "implausibly large"),
            (json!("99999999999999999999"), "EUR", "implausibly large"),
            (json!("1.00"), "XYZ", "unknown ISO 4217"),
            (json!(true), "EUR", "decimal string or a number"),
        ] {
            let err = to_minor(&amount, currency).unwrap_err();
            assert!(err.contains(needle), "{amount} {currency}: {err}");
        }
    }

    #[test]
    fn currency_lists_are_sorted_and_disjoint() {
        for list in [ZERO_DECIMAL, THREE_DECIMAL, TWO_DECIMAL] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        let all = [ZERO_DECIMAL, THREE_DECIMAL, TWO_DECIMAL].concat();
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        for code in &all {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "{code}"
            );
        }
        // Every three-letter code: listed ones get their list's exponent, the rest none.
        let letters = b'A'..=b'Z';
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = String::from_utf8(vec![a, b, c]).unwrap_or_default();
                    let expected = [(ZERO_DECIMAL, 0), (THREE_DECIMAL, 3), (TWO_DECIMAL, 2)]
                        .iter()
                        .find(|(list, _)| list.contains(&code.as_str()))
                        .map(|&(_, exponent)| exponent);
                    assert_eq!(currency_exponent(&code), expected, "{code}");
                }
            }
        }
        assert_eq!(currency_exponent("EURO"), None);
        assert_eq!(currency_exponent("EU"), None);
        assert_eq!(currency_exponent(""), None);
        assert_eq!(currency_exponent("eur"), None);
    }
}
