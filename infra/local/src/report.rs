//! The campaign reports of a run, as the API serves them (`ember_api::report`, one ledger
//! query per campaign): a table for the summary and `report/index.html` beside the emails,
//! one section per campaign with an inline SVG chart of conversion rate by group (with the
//! 95 % interval of each sent group's uplift) and the numbers in a table. No external assets:
//! the page opens from the file system.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_aws::ledger::DynamoLedger;
use ember_core::config::ConfigStore;
use ember_core::report::{CampaignReport, GroupReport};

use crate::error::LocalError;
use crate::pipeline::Pipeline;

/// Every configured campaign's report, in priority order.
pub async fn collect(p: &Pipeline) -> Result<Vec<CampaignReport>, LocalError> {
    let Some(table) = p.name_of("LedgerTable") else {
        return Ok(Vec::new());
    };
    let ledger = Arc::new(DynamoLedger::new(p.stack.clients.dynamodb.clone(), &table));
    let current = ember_api::admin::current(&ConfigStore::new(ledger.clone()))
        .await
        .map_err(|e| LocalError::pipeline("report config", e.to_string()))?;
    let compiled = ember_email::compiled::compile(&current.doc)
        .map_err(|e| LocalError::pipeline("report config", format!("{e:?}")))?;
    let mut out = Vec::new();
    for c in &compiled.campaigns.campaigns {
        let report =
            ember_api::report::campaign_report(ledger.as_ref(), &c.name, &c.experiment.groups())
                .await
                .map_err(|e| LocalError::pipeline("report", e.to_string()))?;
        out.push(report);
    }
    Ok(out)
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn euros(minor: f64) -> String {
    format!("€{:.2}", minor / 100.0)
}

fn uplift_text(g: &GroupReport) -> String {
    match &g.uplift {
        None => "-".to_owned(),
        Some(u) => format!(
            "{:+.1} pp [{:+.1}, {:+.1}]{}",
            u.absolute * 100.0,
            u.absolute_ci95[0] * 100.0,
            u.absolute_ci95[1] * 100.0,
            if u.significant { " *" } else { "" }
        ),
    }
}

fn revenue_per_recipient(g: &GroupReport) -> f64 {
    g.revenue_per_recipient_minor
        .get("EUR")
        .copied()
        .unwrap_or_default()
}

/// The summary's table: one row per campaign and group, its name columns as wide as the
/// longest name.
pub fn table(reports: &[CampaignReport]) -> String {
    let cw = reports
        .iter()
        .map(|r| r.campaign.len())
        .fold("campaign".len(), usize::max);
    let gw = reports
        .iter()
        .flat_map(|r| r.groups.iter().map(|g| g.group.len()))
        .fold("holdout".len(), usize::max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<cw$} {:<gw$} {:>10} {:>11} {:>7} {:>10}  uplift vs holdout (95% CI)",
        "campaign", "group", "recipients", "conversions", "rate", "rev/recip"
    );
    for r in reports {
        for g in &r.groups {
            let _ = writeln!(
                s,
                "{:<cw$} {:<gw$} {:>10} {:>11} {:>7} {:>10}  {}",
                r.campaign,
                g.group,
                g.recipients,
                g.conversions,
                percent(g.conversion_rate),
                euros(revenue_per_recipient(g)),
                uplift_text(g)
            );
        }
    }
    s.push_str("(* significant: the interval excludes zero; revenue net of refunds)\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar per group (conversion rate), the holdout's rate as a dashed line.
fn chart(r: &CampaignReport) -> String {
    let (width, label, row) = (560.0, 110.0, 34.0);
    let height = row * r.groups.len() as f64 + 30.0;
    let max = r
        .groups
        .iter()
        .map(|g| {
            let hi = g.uplift.as_ref().map_or(0.0, |u| u.absolute_ci95[1]);
            g.conversion_rate.max(hi)
        })
        .fold(0.01, f64::max);
    let scale = |x: f64| label + (width - label - 60.0) * (x / max).clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"conversion rate by group for {c}\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">",
        c = escape(&r.campaign)
    );
    let holdout = r.groups.iter().find(|g| g.group == "holdout");
    for (i, g) in r.groups.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let colour = if g.group == "holdout" {
            "#9a9a9a"
        } else {
            "#d9480f"
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" font-size=\"13\">{name}</text>\
             <rect x=\"{label}\" y=\"{y}\" width=\"{w:.1}\" height=\"20\" fill=\"{colour}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"12\">{rate}</text>",
            ty = y + 15.0,
            name = escape(&g.group),
            w = scale(g.conversion_rate) - label,
            tx = scale(g.conversion_rate) + 6.0,
            rate = percent(g.conversion_rate),
        );
        // The uplift's interval, drawn around the holdout's rate plus the uplift.
        if let (Some(u), Some(h)) = (&g.uplift, holdout) {
            let (lo, hi) = (
                h.conversion_rate + u.absolute_ci95[0],
                h.conversion_rate + u.absolute_ci95[1],
            );
            let _ = write!(
                svg,
                "<line x1=\"{x1:.1}\" x2=\"{x2:.1}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#222\" stroke-width=\"2\"/>",
                x1 = scale(lo.max(0.0)),
                x2 = scale(hi),
                yy = y + 10.0,
            );
        }
    }
    if let Some(h) = holdout {
        let x = scale(h.conversion_rate);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"4\" y2=\"{y2}\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>",
            y2 = height - 20.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Writes `dir/index.html` and returns its path.
pub fn write_html(dir: &Path, reports: &[CampaignReport]) -> Result<PathBuf, LocalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LocalError::io(format!("creating {}", dir.display()), e))?;
    let mut body = String::new();
    for r in reports {
        let _ = write!(
            body,
            "<section id=\"{id}\"><h2>{id}</h2>{chart}<table><thead><tr><th>group</th>\
             <th>recipients</th><th>conversions</th><th>conversion rate</th>\
             <th>revenue / recipient</th><th>uplift vs holdout (95% CI)</th></tr></thead><tbody>",
            id = escape(&r.campaign),
            chart = chart(r)
        );
        for g in &r.groups {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&g.group),
                g.recipients,
                g.conversions,
                percent(g.conversion_rate),
                euros(revenue_per_recipient(g)),
                uplift_text(g)
            );
        }
        body.push_str("</tbody></table></section>\n");
    }
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Ember: campaign reports</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:4px 10px;\
         text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         tr:nth-child(even){{background:#f4f4f4}}section{{margin-bottom:2.5em}}</style></head>\n\
         <body><h1>Campaign reports</h1><p>Recipients are customers placed in a group: sent the \
         email, or held out when it would have gone. A conversion is a purchase within the \
         attribution window, not refunded in full; revenue is net of refunds. Bars: conversion \
         rate; dashed line: the holdout's rate; black line: the 95% interval of the group's rate \
         implied by its uplift over the holdout; * significant.</p>\n{body}\
         <p><a href=\"../emails/index.html\">the emails sent</a></p></body></html>\n"
    );
    let path = dir.join("index.html");
    std::fs::write(&path, page).map_err(|e| LocalError::io("writing report/index.html", e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_page_has_a_chart_and_a_table_per_campaign() {
        let records = vec![
            (
                "email".to_owned(),
                json!({"recipients": 80, "conversions": 24, "revenue_EUR": 48_000}),
            ),
            (
                "holdout".to_owned(),
                json!({"recipients": 20, "conversions": 2, "revenue_EUR": 3_000}),
            ),
        ];
        let expected = vec!["email".to_owned(), "holdout".to_owned()];
        let r = CampaignReport::from_records("heat_match", &expected, &records);
        let dir = std::env::temp_dir().join(format!("ember-report-{}", uuid::Uuid::new_v4()));
        let page =
            std::fs::read_to_string(write_html(&dir, std::slice::from_ref(&r)).unwrap()).unwrap();
        assert_eq!(page.matches("<svg").count(), 1);
        assert!(page.contains("<h2>heat_match</h2>"));
        assert!(page.contains("30.0%") && page.contains("10.0%"));
        // No external assets: the page opens from the file system.
        assert!(!page.contains("src=") && !page.contains("href=\"http"));
        let text = table(&[r]);
        assert!(text.contains("heat_match email"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_table_columns_line_up_whatever_the_names() {
        let records = vec![
            (
                "picks".to_owned(),
                json!({"recipients": 14, "conversions": 12}),
            ),
            (
                "flavour_subject".to_owned(),
                json!({"recipients": 11, "conversions": 8}),
            ),
            (
                "holdout".to_owned(),
                json!({"recipients": 11, "conversions": 9}),
            ),
        ];
        let expected: Vec<String> = records.iter().map(|(g, _)| g.clone()).collect();
        let r = CampaignReport::from_records("mild_discovery", &expected, &records);
        let text = table(&[r]);
        let lines: Vec<&str> = text.lines().take(4).collect();
        // The rate column ends at the same place on the header and every row.
        let header_end = lines[0].find("rate").map(|i| i + "rate".len());
        for row in &lines[1..] {
            assert_eq!(row.find('%').map(|i| i + 1), header_end, "{text}");
        }
    }
}
