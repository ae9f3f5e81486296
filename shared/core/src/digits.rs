//! Decimal digits read with integer code: timestamps, day keys and money amounts are read once
//! per record, where `str::parse` and chrono's format parser cost more than the rest.

/// The value of `digits` when every byte is an ASCII digit (`None` otherwise). Callers pass
/// at most 9 digits, so the value fits.
pub(crate) fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// A fraction's digits as an integer of exactly `width` digits: right-padded with zeros
/// (`"5"`, width 3 → 500). `None` if a byte is not a digit or there are more than `width`.
pub(crate) fn fraction(digits: &[u8], width: usize) -> Option<u32> {
    if digits.len() > width {
        return None;
    }
    let value = number(digits)?;
    Some(value * 10u32.pow((width - digits.len()) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_fractions() {
        assert_eq!(number(b"2026"), Some(2026));
        assert_eq!(number(b"007"), Some(7));
        assert_eq!(number(b""), Some(0));
        assert_eq!(number(b"2x"), None);
        assert_eq!(fraction(b"5", 3), Some(500));
        assert_eq!(fraction(b"123456789", 9), Some(123_456_789));
        assert_eq!(fraction(b"", 2), Some(0));
        assert_eq!(fraction(b"1234", 3), None);
        assert_eq!(fraction(b"1-", 3), None);
    }
}
