//! Ember's checker ([`super::checker`]) against the `jsonschema` crate it replaces: for every
//! shipped schema and documents generated from that schema (mostly near-valid: known fields,
//! values at and around each bound, wrong types, missing and unknown fields), both must give
//! the same verdict. The checker stays hand-written for the bootstraps' size (BENCHMARKS.md,
//! section 4); this test is what keeps it honest.

use serde_json::{json, Map, Value};

use super::checker::{Node, Path};
use super::{ENVELOPE_SCHEMA, PAYLOAD_SCHEMAS};

/// A small deterministic generator (xorshift), so a failing seed reproduces.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % sides as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.roll(100) < percent
    }
}

/// Strings around every length bound the schemas use, in one- and two-byte characters
/// (`minLength`/`maxLength` count characters), and values that match or miss patterns.
fn a_string(dice: &mut Dice, schema: &Value) -> Value {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if dice.chance(70) {
            return options[dice.roll(options.len())].clone();
        }
    }
    let mut lengths = vec![0, 1, 2, 3, 4];
    for bound in ["minLength", "maxLength"] {
        if let Some(n) = schema.get(bound).and_then(Value::as_u64) {
            let n = n as usize;
            lengths.extend([n.saturating_sub(1), n, n + 1]);
        }
    }
    let length = lengths[dice.roll(lengths.len())];
    let text = match dice.roll(8) {
        0 => "é".repeat(length),
        1 => "A".repeat(length),
        2 => "a b".chars().cycle().take(length).collect(),
        3 => "EUR".into(),
        4 => "2026-11-20T10:00:00Z".into(),
        5 => "12.50".into(),
        6 => "evt-1:a_b.c".into(),
        _ => "x".repeat(length),
    };
    Value::String(text)
}

fn a_number(dice: &mut Dice, schema: &Value) -> Value {
    let mut numbers = vec![json!(0), json!(1), json!(-1), json!(1.5), json!(1e12)];
    for bound in ["minimum", "maximum"] {
        if let Some(n) = schema.get(bound).and_then(Value::as_i64) {
            numbers.extend([json!(n - 1), json!(n), json!(n + 1), json!(n as f64 + 0.5)]);
        }
    }
    numbers[dice.roll(numbers.len())].clone()
}

/// Any JSON value, not shaped by a schema.
fn anything(dice: &mut Dice) -> Value {
    match dice.roll(7) {
        0 => Value::Null,
        1 => json!(dice.chance(50)),
        2 => json!(dice.roll(5) as i64 - 2),
        3 => json!("text"),
        4 => json!([]),
        5 => json!({"k": 1}),
        _ => json!(0.25),
    }
}

/// A document shaped by `schema` most of the time, anything else sometimes.
fn generate(dice: &mut Dice, schema: &Value, depth: usize) -> Value {
    if depth > 4 || dice.chance(8) {
        return anything(dice);
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        // An `enum` without a type: one of its values, or a string that is not.
        None if schema.get("enum").is_some() => vec!["string"],
        _ => vec!["object"],
    };
    match types[dice.roll(types.len())] {
        "object" => {
            let mut out = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for (name, property) in properties {
                    let keep = if required.contains(&name.as_str()) {
                        92
                    } else {
                        50
                    };
                    if dice.chance(keep) {
                        out.insert(name.clone(), generate(dice, property, depth + 1));
                    }
                }
            }
            if dice.chance(5) {
                out.insert("unknown_field".into(), json!(1));
            }
            Value::Object(out)
        }
        "array" => {
            let items = schema.get("items").cloned().unwrap_or(json!({}));
            let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(3) as usize;
            let length = [0, 1, 2, max, max + 1][dice.roll(5)].min(60);
            Value::Array(
                (0..length)
                    .map(|_| generate(dice, &items, depth + 1))
                    .collect(),
            )
        }
        "string" => a_string(dice, schema),
        "integer" | "number" => a_number(dice, schema),
        "boolean" => json!(dice.chance(50)),
        _ => Value::Null,
    }
}

fn schemas() -> Vec<(String, Value)> {
    let mut out = vec![(
        "envelope".to_owned(),
        serde_json::from_str(ENVELOPE_SCHEMA).expect("envelope schema"),
    )];
    for (event_type, version, text) in PAYLOAD_SCHEMAS {
        out.push((
            format!("{event_type} v{version}"),
            serde_json::from_str(text).expect("payload schema"),
        ));
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn the_checker_agrees_with_jsonschema_on_every_shipped_schema(seed in 1u64..) {
        for (name, schema) in schemas() {
            let ours = Node::compile(&schema, "#").expect("the checker compiles it");
            let theirs = jsonschema::draft202012::new(&schema).expect("jsonschema compiles it");
            let mut dice = Dice(seed);
            for _ in 0..64 {
                let document = generate(&mut dice, &schema, 0);
                let mut problems = Vec::new();
                ours.check(&document, Path::Root(""), &mut problems);
                let expected = theirs.is_valid(&document);
                proptest::prop_assert_eq!(
                    problems.is_empty(),
                    expected,
                    "{}: {} (ours: {:?})",
                    name,
                    document,
                    problems
                );
            }
        }
    }
}

#[test]
fn the_generator_makes_valid_and_invalid_documents_for_every_schema() {
    for (name, schema) in schemas() {
        let theirs = jsonschema::draft202012::new(&schema).expect("jsonschema compiles it");
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        let verdicts: Vec<bool> = (0..400)
            .map(|_| theirs.is_valid(&generate(&mut dice, &schema, 0)))
            .collect();
        assert!(verdicts.contains(&true), "{name}: never valid");
        assert!(verdicts.contains(&false), "{name}: never invalid");
    }
}
