//! The template's alarms and dashboard watch only metrics Ember writes: every metric they
//! name in the `Ember` namespace is in `ember_core::metrics::CATALOG`, with dimensions the
//! functions write, and the dashboard opens with them. (The EMF lines themselves are checked
//! by each function's tests.)

use ember_core::metrics::{Metric, CATALOG, NAMESPACE, STAGE};
use serde_yaml::Value;

fn template() -> Value {
    let path = ember_tests::emulator::workspace_root().join("template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("YAML")
}

fn untagged(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn metric(name: &str) -> &'static Metric {
    CATALOG
        .iter()
        .copied()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} is not a metric Ember writes"))
}

/// `(metric name, dimension names)` of every Ember metric an alarm reads.
fn alarm_metrics(template: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        let alarm = name.as_str().unwrap().to_owned();
        let props = &resource["Properties"];
        let mut specs: Vec<&Value> = vec![props];
        for query in props["Metrics"].as_sequence().into_iter().flatten() {
            specs.push(&query["MetricStat"]["Metric"]);
        }
        for spec in specs {
            if spec["Namespace"].as_str() != Some(NAMESPACE) {
                continue;
            }
            let dims = spec["Dimensions"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|d| d["Name"].as_str().unwrap().to_owned())
                .collect();
            let metric = spec["MetricName"].as_str().unwrap().to_owned();
            out.push((alarm.clone(), metric, dims));
        }
    }
    out
}

#[test]
fn alarms_read_only_metrics_ember_writes() {
    let alarms = alarm_metrics(&template());
    for (alarm, name, dims) in &alarms {
        metric(name);
        // Alarms watch the stage totals (every point is also written with `Stage` alone).
        assert_eq!(dims, &[STAGE], "{alarm}: {name} read with {dims:?}");
    }
    for expected in [
        "IngestToEmailLatency",
        "EmailsSkipped",
        "DeadLetters",
        "EventsRefused",
        "InvalidValues",
        "EmailOutcomeUnknown",
    ] {
        assert!(
            alarms.iter().any(|(_, n, _)| n == expected),
            "no alarm on {expected}"
        );
    }
}

/// Every Ember metric the dashboard shows: `(name, dimension names, y of its widget)`.
fn dashboard_metrics(template: &Value) -> Vec<(String, Vec<String>, i64)> {
    let body = untagged(&template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]);
    // `${…}` substitutions stand in for numbers or names: any value parses.
    let text = regex_lite::Regex::new(r"\$\{[^}]+\}")
        .unwrap()
        .replace_all(body.as_str().unwrap(), "1");
    let body: serde_json::Value = serde_json::from_str(&text).expect("dashboard body is JSON");
    let search = regex_lite::Regex::new(r#"SEARCH\('\{([^}]*)\} MetricName="([^"]+)""#).unwrap();
    let mut out = Vec::new();
    for widget in body["widgets"].as_array().unwrap() {
        let y = widget["y"].as_i64().unwrap();
        // A "." repeats the cell above it; a row starting "..." repeats the whole row.
        let mut above: Vec<String> = Vec::new();
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let row = row.as_array().unwrap();
            if let Some(expr) = row[0]["expression"].as_str() {
                for c in search.captures_iter(expr) {
                    let mut schema = c[1].split(',').map(str::to_owned);
                    if schema.next().as_deref() == Some(NAMESPACE) {
                        out.push((c[2].to_owned(), schema.collect(), y));
                    }
                }
                continue;
            }
            let cells: Vec<&str> = row.iter().filter_map(|v| v.as_str()).collect();
            if cells.first() == Some(&"...") {
                continue;
            }
            let cells: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| match *c {
                    "." => above.get(i).cloned().unwrap_or_default(),
                    c => c.to_owned(),
                })
                .collect();
            if cells[0] == NAMESPACE {
                let dims = cells[2..].iter().step_by(2).cloned().collect();
                out.push((cells[1].clone(), dims, y));
            }
            above = cells;
        }
    }
    out
}

#[test]
fn the_dashboard_opens_with_every_business_metric_and_names_only_written_ones() {
    let shown = dashboard_metrics(&template());
    for (name, dims, _) in &shown {
        let m = metric(name);
        let mut written: Vec<&str> = vec![STAGE];
        written.extend(m.dimensions);
        let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
        assert!(
            dims == [STAGE] || dims == written,
            "{name} shown with dimensions {dims:?}; written with {written:?} and [{STAGE}]"
        );
    }
    for m in CATALOG {
        assert!(
            shown.iter().any(|(n, _, _)| n == m.name),
            "{} is written but not on the dashboard",
            m.name
        );
    }
    let first_rows = shown.iter().filter(|(_, _, y)| *y < 18).count();
    assert_eq!(
        first_rows,
        shown.len(),
        "Ember's own metrics come before AWS's"
    );
}
