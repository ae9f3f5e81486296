//! What may appear in a log line about a person: nothing that names them. Profile ids can be
//! email addresses, so logs carry [`masked`] ids (a short digest: the same id gives the same
//! mask, so one customer's lines can still be followed), and provider texts that may quote an
//! address go through [`redact_addresses`].

use sha2::{Digest, Sha256};

/// A profile id as it may be logged: `id:` and the first 12 hex digits of its SHA-256.
pub fn masked(profile_id: &str) -> String {
    let digest = hex::encode(Sha256::digest(profile_id.as_bytes()));
    format!("id:{}", &digest[..12])
}

/// `text` with every word that contains an `@` (an address, quoted or bracketed or not)
/// replaced by `<address>`.
pub fn redact_addresses(text: &str) -> String {
    let is_boundary =
        |c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | ',' | ';' | '(' | ')');
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            let kept = word.trim_end_matches(|c: char| !c.is_alphanumeric());
            let trail = &word[kept.len()..];
            out.push_str("<address>");
            out.push_str(trail);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_boundary(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A request path with the profile id of `/v1/profiles/{id}` masked.
pub fn redact_path(path: &str) -> String {
    match path.strip_prefix("/v1/profiles/") {
        Some(id) if !id.is_empty() => {
            let id = percent_decoded(id);
            format!("/v1/profiles/{}", masked(&id))
        }
        _ => redact_addresses(path),
    }
}

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_addresses_and_paths_are_masked() {
        assert_eq!(masked("ana@example.com"), masked("ana@example.com"));
        assert_ne!(masked("ana@example.com"), masked("bob@example.com"));
        assert!(!masked("ana@example.com").contains('@'));
        assert_eq!(
            redact_addresses("Email address is not verified: <ana@example.com>, bob@x.y."),
            "Email address is not verified: <<address>>, <address>."
        );
        assert_eq!(redact_addresses("no address here"), "no address here");
        let p = redact_path("/v1/profiles/ana%40example.com");
        assert_eq!(p, format!("/v1/profiles/{}", masked("ana@example.com")));
        assert_eq!(redact_path("/v1/events"), "/v1/events");
    }
}
