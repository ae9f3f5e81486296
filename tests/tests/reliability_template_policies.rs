//! Least privilege in `template.yaml`: no IAM statement grants a wildcard action, no statement
//! uses `Resource: "*"` unless every action in it has no resource-level permissions in IAM,
//! and no broad AWS managed policy (`*FullAccess`, `AdministratorAccess`) is attached. The
//! template is parsed as YAML (CloudFormation tags such as `!GetAtt` come through as tagged
//! values, which count as specific resources).

use serde_yaml::Value;

/// Actions that IAM only accepts with `Resource: "*"` (no resource-level permissions).
const STAR_ONLY_ACTIONS: &[&str] = &[
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "cloudwatch:PutMetricData",
    "ses:GetSendQuota",
    "kinesis:ListStreams",
];

fn template() -> Value {
    let path = ember_tests::emulator::workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path).expect("template.yaml at the repository root");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// Every IAM statement in the template, with where it was found.
fn statements(template: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let Some(resources) = template.get("Resources").and_then(Value::as_mapping) else {
        return out;
    };
    for (name, resource) in resources {
        let name = name.as_str().unwrap_or("?").to_owned();
        let Some(props) = resource.get("Properties") else {
            continue;
        };
        let mut documents: Vec<&Value> = Vec::new();
        if let Some(doc) = props.get("PolicyDocument") {
            documents.push(doc); // AWS::IAM::Policy / ManagedPolicy / queue and bus policies
        }
        for policy in props
            .get("Policies")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if policy.get("Statement").is_some() {
                documents.push(policy); // SAM inline policy document
            }
            if let Some(doc) = policy.get("PolicyDocument") {
                documents.push(doc); // AWS::IAM::Role inline policy
            }
        }
        for doc in documents {
            for statement in doc
                .get("Statement")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                out.push((name.clone(), statement.clone()));
            }
        }
    }
    out
}

#[test]
fn no_policy_grants_wildcards_where_a_specific_action_or_resource_exists() {
    let template = template();
    let statements = statements(&template);
    assert!(
        statements.len() >= 10,
        "found only {} IAM statements",
        statements.len()
    );
    let mut problems = Vec::new();
    for (resource, s) in &statements {
        if s.get("Effect").and_then(Value::as_str) != Some("Allow") {
            continue;
        }
        let sid = s.get("Sid").and_then(Value::as_str).unwrap_or("(no Sid)");
        let actions = strings(s.get("Action").unwrap_or(&Value::Null));
        if s.get("NotAction").is_some() || s.get("NotResource").is_some() {
            problems.push(format!(
                "{resource}/{sid}: NotAction/NotResource grants too much"
            ));
        }
        for a in &actions {
            if a == "*" || a.ends_with(":*") || a.contains('*') {
                problems.push(format!("{resource}/{sid}: wildcard action {a}"));
            }
        }
        let resources = s.get("Resource").map(strings).unwrap_or_default();
        if resources.iter().any(|r| r == "*") {
            let needless: Vec<&String> = actions
                .iter()
                .filter(|a| !STAR_ONLY_ACTIONS.contains(&a.as_str()))
                .collect();
            if !needless.is_empty() {
                problems.push(format!(
                    "{resource}/{sid}: Resource \"*\" for {needless:?}, which accept specific ARNs"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "over-broad IAM statements:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_broad_managed_policies_are_attached() {
    let template = template();
    let mut problems = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().into_iter().flatten() {
        let props = &resource["Properties"];
        let mut attached: Vec<String> = props
            .get("Policies")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        attached.extend(strings(
            props.get("ManagedPolicyArns").unwrap_or(&Value::Null),
        ));
        for p in attached {
            if p.ends_with("FullAccess")
                || p.contains("AdministratorAccess")
                || p.contains("PowerUser")
            {
                problems.push(format!("{}: {p}", name.as_str().unwrap_or("?")));
            }
        }
    }
    assert!(problems.is_empty(), "broad managed policies: {problems:?}");
}

/// Whether a statement's resource names the table (`!GetAtt <table>.Arn`).
fn on_table(statement: &Value, table: &str) -> bool {
    format!("{:?}", statement["Resource"]).contains(table)
}

#[test]
fn no_permission_no_code_uses_and_ledger_access_is_scoped_by_key() {
    let template = template();
    let mut problems = Vec::new();
    for (resource, statement) in statements(&template) {
        let actions = strings(&statement["Action"]);
        let sid = statement["Sid"].as_str().unwrap_or("?").to_owned();
        // SESv2 SendEmail with Simple content needs ses:SendEmail only.
        if actions.iter().any(|a| a == "ses:SendRawEmail") {
            problems.push(format!(
                "{resource}/{sid}: ses:SendRawEmail is never called"
            ));
        }
        // Enrich reads and writes whole profiles; it never deletes or batch-reads them.
        if resource == "EnrichRole" && on_table(&statement, "ProfilesTable") {
            for unused in [
                "dynamodb:DeleteItem",
                "dynamodb:BatchGetItem",
                "dynamodb:UpdateItem",
            ] {
                if actions.iter().any(|a| a == unused) {
                    problems.push(format!("{resource}/{sid}: {unused} is never called"));
                }
            }
        }
        // The ledger holds every function's records: each function reaches only its own
        // partitions.
        if on_table(&statement, "LedgerTable") {
            let keys = &statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            if strings(keys).is_empty() {
                problems.push(format!(
                    "{resource}/{sid}: ledger access without LeadingKeys"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
