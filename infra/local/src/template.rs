//! Reads `template.yaml` (SAM) into plain JSON, with CloudFormation short tags (`!Ref`,
//! `!GetAtt`, `!Sub`, …) rewritten to their long forms, and resolves intrinsic functions
//! against parameter values and the physical names/ARNs of what was provisioned.
//!
//! Only what the local pipeline needs is modelled: tables, streams, buses, queues, SES
//! configuration sets and the functions with their environment and event sources.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::LocalError;

/// A parsed template: parameters, conditions and resources, as JSON in long intrinsic form.
#[derive(Debug, Clone)]
pub struct Template {
    pub parameters: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, Value>,
    pub resources: BTreeMap<String, Resource>,
    /// `Globals.Function.Environment.Variables` but `RUST_LOG` (the local run sets its own).
    pub global_environment: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub logical_id: String,
    /// `AWS::DynamoDB::Table`, `AWS::Serverless::Function`, …
    pub kind: String,
    pub properties: Value,
    pub metadata: Value,
}

/// What an intrinsic function resolves against.
pub trait Names {
    /// `!Ref` of a resource (its physical name/id), if known.
    fn reference(&self, logical_id: &str) -> Option<String>;
    /// `!GetAtt Resource.Attribute`, if known.
    fn attribute(&self, logical_id: &str, attribute: &str) -> Option<String>;
}

/// Pseudo parameters, parameter values and the template's conditions used while resolving.
#[derive(Debug, Clone)]
pub struct Context {
    pub parameters: BTreeMap<String, String>,
    /// The template's `Conditions`, evaluated on demand by `Fn::If`.
    pub conditions: BTreeMap<String, Value>,
    pub region: String,
    pub account_id: String,
    pub stack_name: String,
}

impl Template {
    pub fn load(path: &Path) -> Result<Template, LocalError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LocalError::Template(format!("reading {}: {e}", path.display())))?;
        Template::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Template, LocalError> {
        let yaml: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| LocalError::Template(format!("template is not valid YAML: {e}")))?;
        let json = to_json(&yaml)?;
        let section = |name: &str| -> BTreeMap<String, Value> {
            json.get(name)
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let parameters = section("Parameters");
        let conditions = section("Conditions");
        let mut resources = BTreeMap::new();
        let res = json
            .get("Resources")
            .and_then(Value::as_object)
            .ok_or_else(|| LocalError::Template("template has no Resources".into()))?;
        for (id, r) in res {
            let kind = r
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| LocalError::Template(format!("resource {id} has no Type")))?;
            resources.insert(
                id.clone(),
                Resource {
                    logical_id: id.clone(),
                    kind: kind.to_owned(),
                    properties: r
                        .get("Properties")
                        .cloned()
                        .unwrap_or(Value::Object(Map::new())),
                    metadata: r.get("Metadata").cloned().unwrap_or(Value::Null),
                },
            );
        }
        let global_environment = json
            .pointer("/Globals/Function/Environment/Variables")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "RUST_LOG")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Template {
            parameters,
            conditions,
            global_environment,
            resources,
        })
    }

    /// Resources of one type, in logical-id order.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.values().filter(move |r| r.kind == kind)
    }

    /// Parameter values: `overrides` first, then each parameter's `Default`.
    pub fn parameter_values(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, LocalError> {
        let mut out = BTreeMap::new();
        for (name, spec) in &self.parameters {
            let value = match overrides.get(name) {
                Some(v) => v.clone(),
                None => match spec.get("Default") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(other) => other.to_string(),
                    None => {
                        return Err(LocalError::Template(format!(
                            "parameter {name} has no Default and no local value"
                        )))
                    }
                },
            };
            if let Some(pattern) = spec.get("AllowedPattern").and_then(Value::as_str) {
                // Only the anchored character-class patterns the template uses are checked
                // loosely here; the real check is CloudFormation's.
                if value.is_empty() && pattern.contains('+') {
                    return Err(LocalError::Template(format!("parameter {name} is empty")));
                }
            }
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// The functions with their binary, environment and event sources.
    pub fn functions(&self) -> Result<Vec<FunctionSpec>, LocalError> {
        let mut out = Vec::new();
        for r in self.of_kind("AWS::Serverless::Function") {
            let mut f = FunctionSpec::from_resource(r)?;
            // As SAM does: the globals, unless the function sets the variable itself.
            for (name, value) in &self.global_environment {
                f.environment
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
            out.push(f);
        }
        Ok(out)
    }

    pub fn resource(&self, logical_id: &str) -> Result<&Resource, LocalError> {
        self.resources
            .get(logical_id)
            .ok_or_else(|| LocalError::Template(format!("no resource {logical_id}")))
    }
}

/// One `AWS::Serverless::Function`.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: which in-process handler runs it.
    pub binary: String,
    /// Unresolved `Environment.Variables`.
    pub environment: BTreeMap<String, Value>,
    pub events: Vec<EventSource>,
    /// `EventInvokeConfig` (async invocations): retries and on-failure destination.
    pub async_max_retries: u32,
    pub async_on_failure: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum EventSource {
    HttpApi {
        name: String,
        method: String,
        path: String,
    },
    Kinesis(KinesisSource),
    EventBridgeRule {
        name: String,
        bus: Option<Value>,
        pattern: Value,
    },
    Schedule {
        name: String,
        expression: String,
    },
}

#[derive(Debug, Clone)]
pub struct KinesisSource {
    pub name: String,
    pub stream: Value,
    pub batch_size: usize,
    pub bisect_on_error: bool,
    /// `-1` in CloudFormation means "until the record expires"; kept as `None`.
    pub max_retries: Option<u32>,
    pub max_record_age_secs: Option<u64>,
    /// `MaximumRetryAttempts` and `MaximumRecordAgeInSeconds` as written (parameters allowed):
    /// [`KinesisSource::resolve_limits`] reads them into the two fields above.
    pub limits: Value,
    pub report_batch_item_failures: bool,
    pub on_failure: Option<Value>,
    pub starting_position: String,
}

impl KinesisSource {
    /// How Firehose reads a stream: from the oldest record, in large batches, retrying a
    /// failed delivery until it succeeds.
    pub fn firehose(name: &str) -> KinesisSource {
        KinesisSource {
            name: name.to_owned(),
            stream: Value::Null,
            batch_size: 500,
            bisect_on_error: false,
            max_retries: None,
            max_record_age_secs: None,
            limits: Value::Null,
            report_batch_item_failures: false,
            on_failure: None,
            starting_position: "TRIM_HORIZON".into(),
        }
    }

    /// Resolves the retry limits against the stack's parameters (`-1` or absent: none).
    pub fn resolve_limits(&mut self, ctx: &Context, names: &dyn Names) -> Result<(), LocalError> {
        let number = |key: &str| -> Result<Option<i64>, LocalError> {
            match &self.limits[key] {
                Value::Null => Ok(None),
                v => {
                    let text = resolve_string(v, ctx, names)?;
                    text.parse::<i64>().map(Some).map_err(|_| {
                        LocalError::Template(format!(
                            "{}: {key} limit {text} is not a number",
                            self.name
                        ))
                    })
                }
            }
        };
        self.max_retries = number("retries")?.and_then(|n| u32::try_from(n).ok());
        self.max_record_age_secs = number("age")?.and_then(|n| u64::try_from(n).ok());
        Ok(())
    }
}

impl FunctionSpec {
    fn from_resource(r: &Resource) -> Result<FunctionSpec, LocalError> {
        let id = &r.logical_id;
        let binary = r
            .metadata
            .pointer("/BuildProperties/Binary")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                LocalError::Template(format!(
                    "function {id} has no Metadata.BuildProperties.Binary"
                ))
            })?
            .to_owned();
        let environment = r
            .properties
            .pointer("/Environment/Variables")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut events = Vec::new();
        if let Some(evs) = r.properties.get("Events").and_then(Value::as_object) {
            for (name, ev) in evs {
                let kind = ev.get("Type").and_then(Value::as_str).unwrap_or_default();
                let p = ev.get("Properties").cloned().unwrap_or(Value::Null);
                let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
                let source = match kind {
                    "HttpApi" => EventSource::HttpApi {
                        name: name.clone(),
                        method: s("Method").unwrap_or_else(|| "ANY".into()).to_uppercase(),
                        path: s("Path").unwrap_or_else(|| "$default".into()),
                    },
                    "Kinesis" => EventSource::Kinesis(KinesisSource {
                        name: name.clone(),
                        stream: p.get("Stream").cloned().ok_or_else(|| {
                            LocalError::Template(format!(
                                "{id}.{name}: Kinesis event has no Stream"
                            ))
                        })?,
                        batch_size: p.get("BatchSize").and_then(Value::as_u64).unwrap_or(100)
                            as usize,
                        bisect_on_error: p
                            .get("BisectBatchOnFunctionError")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        max_retries: None,
                        max_record_age_secs: None,
                        limits: serde_json::json!({
                            "retries": p.get("MaximumRetryAttempts"),
                            "age": p.get("MaximumRecordAgeInSeconds"),
                        }),
                        report_batch_item_failures: p
                            .get("FunctionResponseTypes")
                            .and_then(Value::as_array)
                            .is_some_and(|a| {
                                a.iter()
                                    .any(|v| v.as_str() == Some("ReportBatchItemFailures"))
                            }),
                        on_failure: p
                            .pointer("/DestinationConfig/OnFailure/Destination")
                            .cloned(),
                        starting_position: s("StartingPosition")
                            .unwrap_or_else(|| "TRIM_HORIZON".into()),
                    }),
                    "EventBridgeRule" => EventSource::EventBridgeRule {
                        name: name.clone(),
                        bus: p.get("EventBusName").cloned(),
                        pattern: p.get("Pattern").cloned().ok_or_else(|| {
                            LocalError::Template(format!("{id}.{name}: rule has no Pattern"))
                        })?,
                    },
                    "Schedule" | "ScheduleV2" => EventSource::Schedule {
                        name: name.clone(),
                        expression: s("Schedule")
                            .or_else(|| s("ScheduleExpression"))
                            .unwrap_or_default(),
                    },
                    other => {
                        return Err(LocalError::Template(format!(
                            "{id}.{name}: event type {other} is not supported by the local runner"
                        )))
                    }
                };
                events.push(source);
            }
        }
        let async_max_retries = r
            .properties
            .pointer("/EventInvokeConfig/MaximumRetryAttempts")
            .and_then(Value::as_u64)
            .map_or(2, |n| n as u32);
        let async_on_failure = r
            .properties
            .pointer("/EventInvokeConfig/DestinationConfig/OnFailure/Destination")
            .cloned();
        Ok(FunctionSpec {
            logical_id: id.clone(),
            binary,
            environment,
            events,
            async_max_retries,
            async_on_failure,
        })
    }
}

/// Parses `rate(1 minute)` / `rate(5 minutes)` / `rate(1 hour)` into seconds.
pub fn rate_seconds(expression: &str) -> Option<u64> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let mut parts = inner.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?;
    let secs = match unit.trim_end_matches('s') {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(n * secs)
}

// ---------------------------------------------------------------- YAML -> JSON

fn to_json(v: &serde_yaml::Value) -> Result<Value, LocalError> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64().map(Value::from).unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(LocalError::Template(format!(
                            "unsupported mapping key {other:?}"
                        )))
                    }
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(&t.value)?;
            let (key, value) = match name {
                "Ref" => ("Ref".to_owned(), inner),
                "Condition" => ("Condition".to_owned(), inner),
                "GetAtt" => {
                    let parts = match inner {
                        Value::String(s) => match s.split_once('.') {
                            Some((a, b)) => Value::Array(vec![a.into(), b.into()]),
                            None => return Err(LocalError::Template(format!("bad !GetAtt {s}"))),
                        },
                        other => other,
                    };
                    ("Fn::GetAtt".to_owned(), parts)
                }
                other => (format!("Fn::{other}"), inner),
            };
            let mut m = Map::new();
            m.insert(key, value);
            Value::Object(m)
        }
    })
}

// ---------------------------------------------------------------- intrinsics

/// Resolves every intrinsic function in `v` to plain JSON.
pub fn resolve(v: &Value, ctx: &Context, names: &dyn Names) -> Result<Value, LocalError> {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, arg) = m
                .iter()
                .next()
                .map(|(k, a)| (k.as_str(), a))
                .unwrap_or(("", v));
            match k {
                "Ref" => {
                    let name = arg
                        .as_str()
                        .ok_or_else(|| LocalError::Template(format!("bad Ref {arg}")))?;
                    resolve_ref(name, ctx, names).map(Value::String)
                }
                "Fn::GetAtt" => {
                    let (a, b) = match arg {
                        Value::Array(p) if p.len() == 2 => (
                            p[0].as_str().unwrap_or_default(),
                            p[1].as_str().unwrap_or_default(),
                        ),
                        _ => return Err(LocalError::Template(format!("bad GetAtt {arg}"))),
                    };
                    names.attribute(a, b).map(Value::String).ok_or_else(|| {
                        LocalError::Template(format!("cannot resolve !GetAtt {a}.{b} locally"))
                    })
                }
                "Fn::Sub" => {
                    let (text, vars) = match arg {
                        Value::String(s) => (s.as_str(), Map::new()),
                        Value::Array(p) if p.len() == 2 => (
                            p[0].as_str().unwrap_or_default(),
                            p[1].as_object().cloned().unwrap_or_default(),
                        ),
                        _ => return Err(LocalError::Template(format!("bad Sub {arg}"))),
                    };
                    let mut local = BTreeMap::new();
                    for (k, v) in vars {
                        local.insert(k, scalar(&resolve(&v, ctx, names)?));
                    }
                    substitute(text, &local, ctx, names).map(Value::String)
                }
                "Fn::If" => match arg {
                    Value::Array(p) if p.len() == 3 => {
                        let name = p[0].as_str().unwrap_or_default();
                        let branch = if condition(name, ctx, names)? {
                            &p[1]
                        } else {
                            &p[2]
                        };
                        resolve(branch, ctx, names)
                    }
                    _ => Err(LocalError::Template(format!("bad If {arg}"))),
                },
                "Fn::Join" => match arg {
                    Value::Array(p) if p.len() == 2 => {
                        let sep = p[0].as_str().unwrap_or_default();
                        let items = resolve(&p[1], ctx, names)?;
                        let parts: Vec<String> = items
                            .as_array()
                            .map(|a| a.iter().map(scalar).collect())
                            .unwrap_or_default();
                        Ok(Value::String(parts.join(sep)))
                    }
                    _ => Err(LocalError::Template(format!("bad Join {arg}"))),
                },
                _ => {
                    let mut out = Map::new();
                    out.insert(k.to_owned(), resolve(arg, ctx, names)?);
                    Ok(Value::Object(out))
                }
            }
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k.clone(), resolve(v, ctx, names)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => Ok(Value::Array(
            a.iter()
                .map(|v| resolve(v, ctx, names))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}

/// Evaluates the template condition `name` (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`,
/// `Condition`).
fn condition(name: &str, ctx: &Context, names: &dyn Names) -> Result<bool, LocalError> {
    let body = ctx
        .conditions
        .get(name)
        .ok_or_else(|| LocalError::Template(format!("unknown condition {name}")))?;
    evaluate(body, ctx, names)
}

fn evaluate(v: &Value, ctx: &Context, names: &dyn Names) -> Result<bool, LocalError> {
    let bad = || LocalError::Template(format!("unsupported condition {v}"));
    let (k, arg) = v
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.iter().next())
        .ok_or_else(bad)?;
    let list = || arg.as_array().ok_or_else(bad);
    match k.as_str() {
        "Fn::Equals" => match list()?.as_slice() {
            [a, b] => Ok(scalar(&resolve(a, ctx, names)?) == scalar(&resolve(b, ctx, names)?)),
            _ => Err(bad()),
        },
        "Fn::Not" => match list()?.as_slice() {
            [c] => Ok(!evaluate(c, ctx, names)?),
            _ => Err(bad()),
        },
        "Fn::And" => list()?
            .iter()
            .try_fold(true, |acc, c| Ok(acc && evaluate(c, ctx, names)?)),
        "Fn::Or" => list()?
            .iter()
            .try_fold(false, |acc, c| Ok(acc || evaluate(c, ctx, names)?)),
        "Condition" => condition(arg.as_str().ok_or_else(bad)?, ctx, names),
        _ => Err(bad()),
    }
}

/// Resolves and flattens to a string (numbers and booleans as their JSON text).
pub fn resolve_string(v: &Value, ctx: &Context, names: &dyn Names) -> Result<String, LocalError> {
    Ok(scalar(&resolve(v, ctx, names)?))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pseudo(name: &str, ctx: &Context) -> Option<String> {
    Some(match name {
        "AWS::Region" => ctx.region.clone(),
        "AWS::AccountId" => ctx.account_id.clone(),
        "AWS::Partition" => "aws".into(),
        "AWS::URLSuffix" => "amazonaws.com".into(),
        "AWS::StackName" => ctx.stack_name.clone(),
        "AWS::NoValue" => String::new(),
        _ => return None,
    })
}

fn resolve_ref(name: &str, ctx: &Context, names: &dyn Names) -> Result<String, LocalError> {
    if let Some(v) = pseudo(name, ctx) {
        return Ok(v);
    }
    if let Some(v) = ctx.parameters.get(name) {
        return Ok(v.clone());
    }
    names
        .reference(name)
        .ok_or_else(|| LocalError::Template(format!("cannot resolve !Ref {name} locally")))
}

fn substitute(
    text: &str,
    local: &BTreeMap<String, String>,
    ctx: &Context,
    names: &dyn Names,
) -> Result<String, LocalError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // `${!Literal}` is an escaped literal `${Literal}`.
        if let Some(lit) = after.strip_prefix('!') {
            let end = lit.find('}').unwrap_or(lit.len());
            out.push_str("${");
            out.push_str(&lit[..end]);
            out.push('}');
            rest = lit.get(end + 1..).unwrap_or("");
            continue;
        }
        let end = after
            .find('}')
            .ok_or_else(|| LocalError::Template(format!("unclosed ${{ in Sub {text}")))?;
        let var = &after[..end];
        let value = if let Some(v) = local.get(var) {
            v.clone()
        } else if var.contains("::") {
            pseudo(var, ctx)
                .ok_or_else(|| LocalError::Template(format!("unknown pseudo parameter {var}")))?
        } else if let Some((res, attr)) = var.split_once('.') {
            names.attribute(res, attr).ok_or_else(|| {
                LocalError::Template(format!("cannot resolve ${{{var}}} in Sub locally"))
            })?
        } else {
            resolve_ref(var, ctx, names)?
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Names for Fixed {
        fn reference(&self, id: &str) -> Option<String> {
            (id == "Table").then(|| "the-table".to_owned())
        }
        fn attribute(&self, id: &str, attr: &str) -> Option<String> {
            (id == "Bus" && attr == "Name").then(|| "the-bus".to_owned())
        }
    }

    fn ctx() -> Context {
        Context {
            parameters: [("Stage".to_owned(), "t1".to_owned())].into(),
            conditions: BTreeMap::new(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            stack_name: "s".into(),
        }
    }

    #[test]
    fn short_tags_become_long_form_and_resolve() {
        let t = Template::parse(
            "Resources:\n  X:\n    Type: T\n    Properties:\n      A: !Ref Table\n      B: !GetAtt Bus.Name\n      C: !Sub ember-${Stage}-${Bus.Name}-${AWS::Region}\n      D: !Sub '${!Literal}'\n      E: [!Ref Stage]\n",
        )
        .unwrap();
        let props = &t.resources["X"].properties;
        assert_eq!(props["A"], serde_json::json!({"Ref": "Table"}));
        let r = resolve(props, &ctx(), &Fixed).unwrap();
        assert_eq!(r["A"], "the-table");
        assert_eq!(r["B"], "the-bus");
        assert_eq!(r["C"], "ember-t1-the-bus-us-east-1");
        assert_eq!(r["D"], "${Literal}");
        assert_eq!(r["E"][0], "t1");
    }

    #[test]
    fn conditions_choose_the_branch_of_an_if() {
        let t = Template::parse(
            "Parameters:\n  Efo:\n    Type: String\n    Default: 'false'\nConditions:\n  UseEfo: !Equals [!Ref Efo, 'true']\n  NoEfo: !Not [!Condition UseEfo]\nResources:\n  X:\n    Type: T\n    Properties:\n      S: !If [UseEfo, !GetAtt C.ConsumerARN, !GetAtt Bus.Name]\n      N: !If [NoEfo, yes, no]\n",
        )
        .unwrap();
        let mut c = ctx();
        c.conditions = t.conditions.clone();
        c.parameters.insert("Efo".into(), "false".into());
        let r = resolve(&t.resources["X"].properties, &c, &Fixed).unwrap();
        assert_eq!(
            (r["S"].as_str(), r["N"].as_str()),
            (Some("the-bus"), Some("yes"))
        );
        c.parameters.insert("Efo".into(), "true".into());
        let err = resolve(&t.resources["X"].properties, &c, &Fixed).unwrap_err();
        assert!(err.to_string().contains("C.ConsumerARN"), "{err}");
    }

    #[test]
    fn unresolvable_reference_is_a_clear_error() {
        let t =
            Template::parse("Resources:\n  X:\n    Type: T\n    Properties:\n      A: !Ref Nope\n")
                .unwrap();
        let err = resolve(&t.resources["X"].properties, &ctx(), &Fixed).unwrap_err();
        assert!(err.to_string().contains("Nope"), "{err}");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(rate_seconds("rate(1 minute)"), Some(60));
        assert_eq!(rate_seconds("rate(5 minutes)"), Some(300));
        assert_eq!(rate_seconds("rate(2 hours)"), Some(7200));
        assert_eq!(rate_seconds("cron(0 * * * ? *)"), None);
    }

    #[test]
    fn the_repository_template_describes_the_pipeline() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&path).unwrap();
        let fns = t.functions().unwrap();
        let enrich = fns.iter().find(|f| f.binary == "enrich").unwrap();
        let k = enrich
            .events
            .iter()
            .find_map(|e| match e {
                EventSource::Kinesis(k) => Some(k),
                _ => None,
            })
            .unwrap();
        assert!(k.report_batch_item_failures && k.bisect_on_error);
        assert!(k.on_failure.is_some());
        let api = fns.iter().find(|f| f.binary == "api").unwrap();
        assert!(api
            .events
            .iter()
            .any(|e| matches!(e, EventSource::HttpApi { path, .. } if path == "/v1/events")));
        assert!(t.of_kind("AWS::DynamoDB::Table").count() >= 2);
    }
}
