//! Keeps `openapi.yaml` true: every route the router serves is documented with exactly its
//! methods (and nothing else is), the documented error codes are exactly the ones the API
//! answers with, and every `$ref` resolves.

use std::collections::BTreeSet;

use ember_api::error::ERROR_CODES;
use ember_api::router::ROUTES;
use serde_yaml::Value;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("openapi.yaml is readable");
    serde_yaml::from_str(&text).expect("openapi.yaml is valid YAML")
}

#[test]
fn routes_and_methods_match_the_router() {
    let doc = document();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "OpenAPI 3 document"
    );
    let paths = doc["paths"].as_mapping().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let path = path.as_str().expect("path").to_owned();
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (path.clone(), m.to_uppercase()))
                .collect::<Vec<_>>()
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(|m| (r.path.to_owned(), (*m).to_owned()))
        })
        .collect();
    assert_eq!(
        documented, served,
        "openapi.yaml and router::ROUTES disagree"
    );
}

#[test]
fn error_codes_match_the_api() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["enum"]
        .as_sequence()
        .expect("Error.error enum")
        .iter()
        .map(|v| v.as_str().expect("code"))
        .collect();
    let known: BTreeSet<&str> = ERROR_CODES.iter().copied().collect();
    assert_eq!(
        documented, known,
        "documented error codes vs error::ERROR_CODES"
    );
}

#[test]
fn every_operation_documents_its_failures_and_refs_resolve() {
    let doc = document();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        for m in METHODS {
            let Some(op) = item.get(*m) else { continue };
            let responses = op["responses"].as_mapping().expect("responses");
            let codes: BTreeSet<&str> = responses.keys().filter_map(Value::as_str).collect();
            assert!(
                codes.iter().any(|c| c.starts_with('2')),
                "{path:?} {m}: no success response"
            );
            assert!(codes.contains("500"), "{path:?} {m}: 500 not documented");
            let is_public = op
                .get("security")
                .and_then(Value::as_sequence)
                .is_some_and(|s| s.is_empty());
            if !is_public {
                assert!(
                    codes.contains("401") && codes.contains("403"),
                    "{path:?} {m}: auth errors not documented"
                );
            }
        }
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix("#/").expect("local ref");
        let mut node = &doc;
        for part in pointer.split('/') {
            node = node
                .get(part)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("$ref") {
                    out.extend(v.as_str().map(str::to_owned));
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
