//! Build-time helpers for Ember's crates (used from `build.rs` and from tests, never linked
//! into a bootstrap).
//!
//! The declarative configuration (`shared/core/rules/segments.yaml`,
//! `functions/email/campaigns.yaml`) is written in YAML for people. [`embed_yaml_as_json`]
//! converts it to JSON in `OUT_DIR` when the crate is built, so the functions parse it with
//! `serde_json`, which they link anyway, instead of carrying a YAML parser (BENCHMARKS.md,
//! section 4). A YAML syntax error fails the build, naming the file and the line.

use std::path::Path;

/// YAML text → compact JSON text with the same data.
///
/// Fails on what JSON cannot hold (mappings or sequences as keys, tags) and on YAML syntax
/// errors; scalar keys become their text.
pub fn json_of_yaml(yaml: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

/// For `build.rs`: converts `source` (relative to the crate) to `$OUT_DIR/<target>` and tells
/// cargo to rebuild when it changes. Panics with the file and the reason on bad YAML, which
/// is how a build script reports an error.
pub fn embed_yaml_as_json(source: &str, target: &str) {
    println!("cargo:rerun-if-changed={source}");
    let yaml =
        std::fs::read_to_string(source).unwrap_or_else(|e| panic!("cannot read {source}: {e}"));
    let json = json_of_yaml(&yaml).unwrap_or_else(|e| panic!("{source}: {e}"));
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let out = Path::new(&out_dir).join(target);
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_data_and_the_order_of_lists() {
        let yaml = "segments:\n  - name: a\n    delay: 30m\n    when: {trait: heat_shu, gte: 50_000}\n  - name: b\n    flag: true\n    n: 1.5\n    none: ~\n";
        assert_eq!(
            json_of_yaml(yaml).unwrap(),
            r#"{"segments":[{"delay":"30m","name":"a","when":{"gte":"50_000","trait":"heat_shu"}},{"flag":true,"n":1.5,"name":"b","none":null}]}"#
        );
    }

    #[test]
    fn refuses_what_json_cannot_hold() {
        assert!(json_of_yaml("a: [1, 2").is_err(), "syntax error");
        // Scalar keys are read as their text, which is what the rule and campaign files mean.
        assert_eq!(json_of_yaml("{1: a}").unwrap(), r#"{"1":"a"}"#);
        assert!(json_of_yaml("{[1]: a}").is_err(), "sequence key");
        assert!(json_of_yaml("a: !tag x").is_err(), "tag");
    }
}
