//! The JSON Schema (draft 2020-12) subset Ember's schema files are written in, compiled once
//! into a tree of [`Node`]s and checked against decoded events.
//!
//! Supported keywords: `type`, `enum`, `minLength`, `maxLength`, `pattern`, `minimum`,
//! `maximum`, `properties`, `required`, `additionalProperties` (a boolean),
//! `dependentRequired`, `minProperties`, `items` (one schema) and `maxItems`, plus the
//! annotations `$schema`, `$id`, `title` and `description`. [`Node::compile`] refuses every
//! other keyword, so a schema file can never carry a rule that is silently not enforced.
//!
//! Why not a general validator: `jsonschema` links two regex engines, big-number arithmetic
//! and format validators into every bootstrap that decodes events, about 3 MB of each arm64
//! bootstrap for fourteen keywords (BENCHMARKS.md,
//! section 4). Checking valid input allocates nothing: paths are only rendered when a problem
//! is reported. `against_jsonschema.rs` property-tests its verdicts against `jsonschema` on
//! every shipped schema.

use std::fmt::{self, Write as _};

use regex_lite::Regex;
use serde_json::{Map, Number, Value};

use crate::error::Problem;

/// The one dialect the schema files may declare in `$schema`.
const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// JSON types, in the (alphabetical) order messages list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Array,
    Boolean,
    Integer,
    Null,
    Number,
    Object,
    String,
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "array" => Kind::Array,
            "boolean" => Kind::Boolean,
            "integer" => Kind::Integer,
            "null" => Kind::Null,
            "number" => Kind::Number,
            "object" => Kind::Object,
            "string" => Kind::String,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Array => "array",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Null => "null",
            Kind::Number => "number",
            Kind::Object => "object",
            Kind::String => "string",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (Kind::Array, Value::Array(_))
            | (Kind::Boolean, Value::Bool(_))
            | (Kind::Null, Value::Null)
            | (Kind::Number, Value::Number(_))
            | (Kind::Object, Value::Object(_))
            | (Kind::String, Value::String(_)) => true,
            // 2020-12: an integer is any number without a fractional part, `1.0` included.
            (Kind::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }
}

/// One compiled (sub)schema.
#[derive(Debug, Default)]
pub struct Node {
    /// Allowed types, sorted; empty means any.
    types: Vec<Kind>,
    /// `enum`: the instance must equal one of these.
    options: Option<Vec<Value>>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    minimum: Option<Number>,
    maximum: Option<Number>,
    /// `properties`.
    properties: Vec<Property>,
    /// `required`, in the schema's order (the order missing fields are reported in).
    required: Vec<String>,
    /// `additionalProperties`; `true` unless the schema says `false`.
    additional: bool,
    dependent_required: Vec<(String, Vec<String>)>,
    min_properties: Option<usize>,
    items: Option<Box<Node>>,
    max_items: Option<usize>,
}

/// One entry of `properties`.
#[derive(Debug)]
struct Property {
    name: String,
    node: Node,
}

/// Where a value sits in the instance: rendered to a JSON pointer only when a problem is found.
#[derive(Clone, Copy)]
pub enum Path<'a> {
    /// A prefix that is already a pointer, e.g. `""` or `"/payload"`.
    Root(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(prefix) => f.write_str(prefix),
            Path::Key(parent, key) => {
                write!(f, "{parent}/")?;
                // RFC 6901 escaping of one segment.
                for c in key.chars() {
                    match c {
                        '~' => f.write_str("~0")?,
                        '/' => f.write_str("~1")?,
                        c => f.write_char(c)?,
                    }
                }
                Ok(())
            }
            Path::Index(parent, i) => write!(f, "{parent}/{i}"),
        }
    }
}

/// How an offending value is quoted in a message: its JSON text, cut after 64 characters so
/// that a long string or object is not echoed back in full.
fn shown(value: &Value) -> String {
    const LIMIT: usize = 64;
    let text = value.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

const CHARACTERS: (&str, &str) = ("character", "characters");
const ITEMS: (&str, &str) = ("item", "items");
const PROPERTIES: (&str, &str) = ("property", "properties");

/// Reports a count limit, e.g. `"abcd" is longer than 3 characters`.
fn over_limit(
    out: &mut Vec<Problem>,
    at: Path<'_>,
    value: &Value,
    relation: &str,
    limit: usize,
    (one, many): (&str, &str),
) {
    let unit = if limit == 1 { one } else { many };
    out.push(Problem::new(
        at.to_string(),
        format!("{} {relation} {limit} {unit}", shown(value)),
    ));
}

type Compiled<T> = Result<T, String>;

fn count(at: &str, keyword: &str, value: &Value) -> Compiled<usize> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{at}/{keyword}: must be a non-negative integer"))
}

fn number(at: &str, keyword: &str, value: &Value) -> Compiled<Number> {
    match value {
        Value::Number(n) => Ok(n.clone()),
        _ => Err(format!("{at}/{keyword}: must be a number")),
    }
}

fn names(at: &str, keyword: &str, value: &Value) -> Compiled<Vec<String>> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("{at}/{keyword}: must be an array of property names"))?;
    let mut out = Vec::with_capacity(list.len());
    for name in list {
        let name = name
            .as_str()
            .ok_or_else(|| format!("{at}/{keyword}: must be an array of property names"))?;
        if out.iter().any(|n| n == name) {
            return Err(format!("{at}/{keyword}: '{name}' is listed twice"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

fn object<'v>(at: &str, keyword: &str, value: &'v Value) -> Compiled<&'v Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| format!("{at}/{keyword}: must be an object"))
}

impl Node {
    /// Compiles one schema. `at` is the schema's own location, used in error messages.
    pub fn compile(schema: &Value, at: &str) -> Compiled<Node> {
        let Value::Object(keywords) = schema else {
            return Err(format!("{at}: a schema must be an object"));
        };
        let mut node = Node {
            additional: true,
            ..Node::default()
        };
        for (keyword, value) in keywords {
            match keyword.as_str() {
                "$schema" => {
                    if value.as_str() != Some(DIALECT) {
                        return Err(format!("{at}/$schema: only {DIALECT} is supported"));
                    }
                }
                "$id" | "title" | "description" => {}
                "type" => node.types = types(at, value)?,
                "enum" => match value {
                    Value::Array(options) if !options.is_empty() => {
                        node.options = Some(options.clone());
                    }
                    _ => return Err(format!("{at}/enum: must be a non-empty array")),
                },
                "minLength" => node.min_length = Some(count(at, keyword, value)?),
                "maxLength" => node.max_length = Some(count(at, keyword, value)?),
                "pattern" => {
                    let source = value
                        .as_str()
                        .ok_or_else(|| format!("{at}/pattern: must be a string"))?;
                    let regex = Regex::new(source).map_err(|e| format!("{at}/pattern: {e}"))?;
                    node.pattern = Some(regex);
                }
                "minimum" => node.minimum = Some(number(at, keyword, value)?),
                "maximum" => node.maximum = Some(number(at, keyword, value)?),
                "properties" => {
                    for (name, sub) in object(at, keyword, value)? {
                        node.properties.push(Property {
                            name: name.clone(),
                            node: Node::compile(sub, &format!("{at}/properties/{name}"))?,
                        });
                    }
                }
                "required" => node.required = names(at, keyword, value)?,
                "additionalProperties" => {
                    node.additional = value.as_bool().ok_or_else(|| {
                        format!("{at}/additionalProperties: only true or false is supported")
                    })?;
                }
                "dependentRequired" => {
                    for (name, list) in object(at, keyword, value)? {
                        let list = names(at, &format!("{keyword}/{name}"), list)?;
                        node.dependent_required.push((name.clone(), list));
                    }
                }
                "minProperties" => node.min_properties = Some(count(at, keyword, value)?),
                "items" => {
                    node.items = Some(Box::new(Node::compile(value, &format!("{at}/items"))?))
                }
                "maxItems" => node.max_items = Some(count(at, keyword, value)?),
                other => {
                    return Err(format!(
                        "{at}/{other}: keyword not supported by Ember's schema checker \
                         (supported: type, enum, minLength, maxLength, pattern, minimum, \
                         maximum, properties, required, additionalProperties, \
                         dependentRequired, minProperties, items, maxItems)"
                    ))
                }
            }
        }
        node.refuse_unsatisfiable(at)?;
        Ok(node)
    }

    /// A name that must be present but may not be: a schema no event could ever satisfy.
    fn refuse_unsatisfiable(&self, at: &str) -> Compiled<()> {
        if self.additional {
            return Ok(());
        }
        let dependents = self.dependent_required.iter().flat_map(|(_, l)| l);
        for name in self.required.iter().chain(dependents) {
            if self.property(name).is_none() {
                return Err(format!(
                    "{at}: '{name}' is required but not among the properties, and \
                     additionalProperties is false"
                ));
            }
        }
        Ok(())
    }

    fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Checks `value` (found at `at`) and appends one [`Problem`] per violation.
    pub fn check(&self, value: &Value, at: Path<'_>, out: &mut Vec<Problem>) {
        if !self.types.is_empty() && !self.types.iter().any(|k| k.matches(value)) {
            // The other keywords only apply to the declared types: nothing more to say.
            out.push(Problem::new(at.to_string(), self.type_message(value)));
            return;
        }
        if let Some(options) = &self.options {
            if !options.contains(value) {
                let listed = Value::Array(options.clone());
                out.push(Problem::new(
                    at.to_string(),
                    format!("{} is not one of {listed}", shown(value)),
                ));
            }
        }
        match value {
            Value::String(s) => self.check_string(s, value, at, out),
            Value::Number(n) => self.check_number(n, value, at, out),
            Value::Object(entries) => self.check_object(entries, value, at, out),
            Value::Array(items) => self.check_array(items, value, at, out),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn type_message(&self, value: &Value) -> String {
        let quoted = |k: &Kind| format!("\"{}\"", k.name());
        match self.types.as_slice() {
            [one] => format!("{} is not of type {}", shown(value), quoted(one)),
            many => {
                let list = many.iter().map(quoted).collect::<Vec<_>>().join(", ");
                format!("{} is not of types {list}", shown(value))
            }
        }
    }

    fn check_string(&self, s: &str, value: &Value, at: Path<'_>, out: &mut Vec<Problem>) {
        // Lengths count Unicode scalar values, not bytes.
        let length = s.chars().count();
        if let Some(min) = self.min_length {
            if length < min {
                over_limit(out, at, value, "is shorter than", min, CHARACTERS);
            }
        }
        if let Some(max) = self.max_length {
            if length > max {
                over_limit(out, at, value, "is longer than", max, CHARACTERS);
            }
        }
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(s) {
                out.push(Problem::new(
                    at.to_string(),
                    format!("{} does not match \"{}\"", shown(value), pattern.as_str()),
                ));
            }
        }
    }

    fn check_number(&self, n: &Number, value: &Value, at: Path<'_>, out: &mut Vec<Problem>) {
        let below = |limit: &Number| compare(n, limit) == std::cmp::Ordering::Less;
        let above = |limit: &Number| compare(n, limit) == std::cmp::Ordering::Greater;
        if let Some(min) = self.minimum.as_ref().filter(|m| below(m)) {
            out.push(Problem::new(
                at.to_string(),
                format!("{} is less than the minimum of {min}", shown(value)),
            ));
        }
        if let Some(max) = self.maximum.as_ref().filter(|m| above(m)) {
            out.push(Problem::new(
                at.to_string(),
                format!("{} is greater than the maximum of {max}", shown(value)),
            ));
        }
    }

    fn check_object(
        &self,
        entries: &Map<String, Value>,
        value: &Value,
        at: Path<'_>,
        out: &mut Vec<Problem>,
    ) {
        let has = |name: &str| entries.contains_key(name);
        let first = out.len();
        for (name, dependents) in &self.dependent_required {
            if !has(name) {
                continue;
            }
            for dependent in dependents.iter().filter(|d| !has(d)) {
                out.push(Problem::new(
                    Path::Key(&at, dependent).to_string(),
                    format!("is required when '{name}' is given"),
                ));
            }
        }
        if let Some(min) = self.min_properties.filter(|m| entries.len() < *m) {
            over_limit(out, at, value, "has fewer than", min, PROPERTIES);
        }
        for (key, item) in entries {
            match self.property(key) {
                Some(p) => p.node.check(item, Path::Key(&at, key), out),
                None if !self.additional => out.push(Problem::new(
                    Path::Key(&at, key).to_string(),
                    "is not an allowed field",
                )),
                None => {}
            }
        }
        // Missing fields are reported first, in the schema's order.
        let missing = self.required.iter().filter(|n| !has(n));
        let missing = missing.map(|n| Problem::new(Path::Key(&at, n).to_string(), "is required"));
        out.splice(first..first, missing.collect::<Vec<_>>());
    }

    fn check_array(&self, items: &[Value], value: &Value, at: Path<'_>, out: &mut Vec<Problem>) {
        if let Some(max) = self.max_items.filter(|m| items.len() > *m) {
            over_limit(out, at, value, "has more than", max, ITEMS);
        }
        if let Some(node) = &self.items {
            for (i, item) in items.iter().enumerate() {
                node.check(item, Path::Index(&at, i), out);
            }
        }
    }
}

fn types(at: &str, value: &Value) -> Compiled<Vec<Kind>> {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(Kind::parse)
            .ok_or_else(|| format!("{at}/type: {v} is not a JSON Schema type"))
    };
    let mut kinds = match value {
        Value::Array(list) if !list.is_empty() => {
            list.iter().map(parse).collect::<Compiled<Vec<_>>>()?
        }
        Value::Array(_) => return Err(format!("{at}/type: must not be empty")),
        single => vec![parse(single)?],
    };
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// Exact order of two JSON numbers: integers compare as integers, anything else as `f64`.
fn compare(a: &Number, b: &Number) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    let (x, y) = (
        a.as_f64().unwrap_or(f64::NAN),
        b.as_f64().unwrap_or(f64::NAN),
    );
    x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(schema: Value) -> Node {
        Node::compile(&schema, "#").unwrap()
    }

    /// The problems `node` finds in `value`.
    fn problems(node: &Node, value: Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        node.check(&value, Path::Root(""), &mut out);
        out.into_iter().map(|p| (p.path, p.message)).collect()
    }

    fn one(path: &str, message: &str) -> Vec<(String, String)> {
        vec![(path.to_owned(), message.to_owned())]
    }

    #[test]
    fn types_single_and_listed() {
        let n = node(json!({"type": "integer"}));
        assert!(problems(&n, json!(3)).is_empty());
        assert!(problems(&n, json!(-3)).is_empty());
        assert!(
            problems(&n, json!(3.0)).is_empty(),
            "3.0 is an integer in 2020-12"
        );
        assert_eq!(
            problems(&n, json!(3.5)),
            one("", "3.5 is not of type \"integer\"")
        );
        assert_eq!(
            problems(&n, json!("1")),
            one("", "\"1\" is not of type \"integer\"")
        );
        let n = node(json!({"type": ["string", "null"]}));
        assert!(problems(&n, json!(null)).is_empty());
        assert!(problems(&n, json!("x")).is_empty());
        assert_eq!(
            problems(&n, json!(42)),
            one("", "42 is not of types \"null\", \"string\"")
        );
        let n = node(json!({"type": ["number", "boolean", "array", "object"]}));
        for ok in [json!(1.5), json!(true), json!([]), json!({})] {
            assert!(problems(&n, ok).is_empty());
        }
        assert_eq!(problems(&n, json!(null)).len(), 1);
    }

    #[test]
    fn string_lengths_count_characters_not_bytes() {
        let n = node(json!({"type": "string", "minLength": 2, "maxLength": 3}));
        assert!(problems(&n, json!("ab")).is_empty());
        assert!(
            problems(&n, json!("🌶🌶🌶")).is_empty(),
            "3 characters, 12 bytes"
        );
        assert!(problems(&n, json!("éé")).is_empty());
        assert_eq!(
            problems(&n, json!("🌶")),
            one("", "\"🌶\" is shorter than 2 characters")
        );
        assert_eq!(
            problems(&n, json!("abcd")),
            one("", "\"abcd\" is longer than 3 characters")
        );
        assert_eq!(
            problems(&n, json!("🌶🌶🌶🌶")),
            one("", "\"🌶🌶🌶🌶\" is longer than 3 characters")
        );
        let n = node(json!({"minLength": 1}));
        assert_eq!(
            problems(&n, json!("")),
            one("", "\"\" is shorter than 1 character")
        );
        assert!(
            problems(&n, json!(5)).is_empty(),
            "lengths only apply to strings"
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let n = node(json!({"maxLength": 3}));
        let long = "x".repeat(500);
        assert_eq!(
            problems(&n, json!(long)),
            one(
                "",
                &format!("\"{}… is longer than 3 characters", "x".repeat(63))
            )
        );
    }

    #[test]
    fn patterns_search_like_json_schema() {
        let n = node(json!({"type": "string", "pattern": "^[A-Z]{3}$"}));
        assert!(problems(&n, json!("EUR")).is_empty());
        assert_eq!(
            problems(&n, json!("eur")),
            one("", "\"eur\" does not match \"^[A-Z]{3}$\"")
        );
        // Unanchored patterns match anywhere, as ECMA-262 `test` does.
        let n = node(json!({"pattern": "[0-9]"}));
        assert!(problems(&n, json!("abc1def")).is_empty());
        assert_eq!(problems(&n, json!("abc")).len(), 1);
    }

    #[test]
    fn numeric_bounds_are_exact() {
        let n = node(json!({"type": "integer", "minimum": 1, "maximum": 1000}));
        assert!(problems(&n, json!(1)).is_empty());
        assert!(problems(&n, json!(1000)).is_empty());
        assert_eq!(
            problems(&n, json!(0)),
            one("", "0 is less than the minimum of 1")
        );
        assert_eq!(
            problems(&n, json!(-1)),
            one("", "-1 is less than the minimum of 1")
        );
        assert_eq!(
            problems(&n, json!(1001)),
            one("", "1001 is greater than the maximum of 1000")
        );
        assert_eq!(problems(&n, json!(u64::MAX)).len(), 1);
        assert_eq!(problems(&n, json!(i64::MIN)).len(), 1);
        let n = node(json!({"minimum": 0.5}));
        assert!(problems(&n, json!(0.5)).is_empty());
        assert_eq!(problems(&n, json!(0.49)).len(), 1);
        assert!(problems(&n, json!(1)).is_empty());
    }

    #[test]
    fn enums_compare_whole_values() {
        let n = node(json!({"enum": ["email", "sms"]}));
        assert!(problems(&n, json!("sms")).is_empty());
        assert_eq!(
            problems(&n, json!("fax")),
            one("", "\"fax\" is not one of [\"email\",\"sms\"]")
        );
        assert_eq!(problems(&n, json!(["email"])).len(), 1);
    }

    #[test]
    fn objects_report_each_field_at_its_own_path() {
        let n = node(json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b/c": {"type": "integer"}, "d": {}},
            "required": ["a", "d"],
            "additionalProperties": false,
            "dependentRequired": {"b/c": ["d"]}
        }));
        assert!(problems(&n, json!({"a": "x", "d": null})).is_empty());
        assert_eq!(
            problems(&n, json!({"b/c": "7", "e~": 1})),
            vec![
                ("/a".to_owned(), "is required".to_owned()),
                ("/d".to_owned(), "is required".to_owned()),
                (
                    "/d".to_owned(),
                    "is required when 'b/c' is given".to_owned()
                ),
                (
                    "/b~1c".to_owned(),
                    "\"7\" is not of type \"integer\"".to_owned()
                ),
                ("/e~0".to_owned(), "is not an allowed field".to_owned()),
            ]
        );
        let open = node(json!({"properties": {"a": {"type": "string"}}}));
        assert!(
            problems(&open, json!({"zzz": 1})).is_empty(),
            "additional allowed by default"
        );
        let some = node(json!({"minProperties": 1}));
        assert_eq!(
            problems(&some, json!({})),
            one("", "{} has fewer than 1 property")
        );
    }

    #[test]
    fn arrays_check_every_item_with_its_index() {
        let n = node(json!({
            "type": "array", "maxItems": 2,
            "items": {"type": "object", "properties": {"q": {"type": "integer", "minimum": 1}}}
        }));
        assert!(problems(&n, json!([{"q": 1}, {}])).is_empty());
        assert_eq!(
            problems(&n, json!([{"q": 1}, {"q": 0}, {"q": "x"}])),
            vec![
                (
                    "".to_owned(),
                    "[{\"q\":1},{\"q\":0},{\"q\":\"x\"}] has more than 2 items".to_owned()
                ),
                (
                    "/1/q".to_owned(),
                    "0 is less than the minimum of 1".to_owned()
                ),
                (
                    "/2/q".to_owned(),
                    "\"x\" is not of type \"integer\"".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn root_prefix_is_kept() {
        let n = node(json!({"properties": {"q": {"type": "integer"}}}));
        let mut out = Vec::new();
        n.check(&json!({"q": true}), Path::Root("/payload"), &mut out);
        assert_eq!(out[0].path, "/payload/q");
    }

    #[test]
    fn refuses_what_it_cannot_enforce() {
        let refused = |schema: Value| Node::compile(&schema, "#").unwrap_err();
        assert!(refused(json!({"format": "email"})).contains("#/format: keyword not supported"));
        assert!(refused(json!({"properties": {"a": {"oneOf": []}}}))
            .starts_with("#/properties/a/oneOf"));
        assert!(refused(json!({"additionalProperties": {"type": "string"}}))
            .contains("only true or false"));
        assert!(
            refused(json!({"$schema": "http://json-schema.org/draft-07/schema#"}))
                .contains("2020-12")
        );
        assert!(refused(json!({"type": "text"})).contains("not a JSON Schema type"));
        assert!(refused(json!({"type": []})).contains("must not be empty"));
        assert!(refused(json!({"minLength": -1})).contains("non-negative integer"));
        assert!(refused(json!({"pattern": "("})).starts_with("#/pattern"));
        // No Unicode tables: a class the engine cannot match is refused, never ignored.
        assert!(refused(json!({"pattern": "^\\p{L}+$"})).starts_with("#/pattern"));
        assert!(refused(json!({"enum": []})).contains("non-empty"));
        assert!(refused(json!({"required": ["a", "a"]})).contains("listed twice"));
        assert!(refused(json!(true)).contains("must be an object"));
        assert!(refused(json!({
            "properties": {"a": {}}, "required": ["b"], "additionalProperties": false
        }))
        .contains("'b' is required but not among the properties"));
        assert!(refused(json!({
            "properties": {"a": {}}, "dependentRequired": {"a": ["c"]},
            "additionalProperties": false
        }))
        .contains("'c' is required"));
    }
}
