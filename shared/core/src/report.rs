//! A campaign's report from its counters (one ledger record per group, see
//! [`crate::attribution`]): recipients, conversions, conversion rate and revenue per recipient
//! of every group, and each sent group's uplift over the holdout with a 95 % confidence
//! interval.
//!
//! Intervals:
//! - absolute uplift (difference of conversion rates): Newcombe's hybrid score interval from
//!   the two Wilson intervals, which keeps its coverage with few conversions where the plain
//!   normal (Wald) interval does not;
//! - relative uplift (rate ratio − 1): the log method (Katz), given a conversion in both
//!   groups.
//!
//! An uplift is significant when its interval excludes zero.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::attribution::HOLDOUT;

/// The normal quantile of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub recipients: u64,
    pub conversions: u64,
    pub conversion_rate: f64,
    /// Net of refunds, in minor units, per currency.
    pub revenue_minor: BTreeMap<String, i64>,
    pub revenue_per_recipient_minor: BTreeMap<String, f64>,
    /// Against the holdout (sent groups of a campaign with a holdout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplift: Option<Uplift>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uplift {
    /// Conversion rate minus the holdout's (0.02 = two percentage points).
    pub absolute: f64,
    pub absolute_ci95: [f64; 2],
    /// Conversion rate over the holdout's, minus one (`None` while the holdout has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_ci95: Option<[f64; 2]>,
    pub significant: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignReport {
    pub campaign: String,
    /// Sent groups first (in the order given), the holdout last.
    pub groups: Vec<GroupReport>,
}

/// The Wilson score interval of `k` successes in `n`.
fn wilson(k: f64, n: f64) -> (f64, f64) {
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Uplift of `k1`/`n1` over `k0`/`n0` (both `n` > 0).
pub fn uplift(k1: u64, n1: u64, k0: u64, n0: u64) -> Uplift {
    let (k1, n1, k0, n0) = (k1 as f64, n1 as f64, k0 as f64, n0 as f64);
    let (p1, p0) = (k1 / n1, k0 / n0);
    let (l1, u1) = wilson(k1, n1);
    let (l0, u0) = wilson(k0, n0);
    let d = p1 - p0;
    let lo = d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt();
    let hi = d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt();
    let (relative, relative_ci95) = if k1 > 0.0 && k0 > 0.0 {
        let ln_rr = (p1 / p0).ln();
        let se = (1.0 / k1 - 1.0 / n1 + 1.0 / k0 - 1.0 / n0).max(0.0).sqrt();
        (
            Some(p1 / p0 - 1.0),
            Some([
                (ln_rr - Z95 * se).exp() - 1.0,
                (ln_rr + Z95 * se).exp() - 1.0,
            ]),
        )
    } else {
        (None, None)
    };
    Uplift {
        absolute: d,
        absolute_ci95: [lo, hi],
        relative,
        relative_ci95,
        significant: lo > 0.0 || hi < 0.0,
    }
}

fn count(record: &Value, name: &str) -> u64 {
    record
        .get(name)
        .and_then(Value::as_i64)
        .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

impl CampaignReport {
    /// The report of `campaign` from its counter records (`(group, attributes)`), listing
    /// every group of `expected` (a group nobody reached yet shows zeros) and any other group
    /// that has counters (a variant removed since).
    pub fn from_records(campaign: &str, expected: &[String], records: &[(String, Value)]) -> Self {
        let mut names: Vec<String> = expected.iter().filter(|g| *g != HOLDOUT).cloned().collect();
        for (group, _) in records {
            if group != HOLDOUT && !names.contains(group) {
                names.push(group.clone());
            }
        }
        let has_holdout =
            expected.iter().any(|g| g == HOLDOUT) || records.iter().any(|(g, _)| g == HOLDOUT);
        if has_holdout {
            names.push(HOLDOUT.to_owned());
        }
        let empty = Value::Null;
        let mut groups: Vec<GroupReport> = names
            .into_iter()
            .map(|group| {
                let record = records
                    .iter()
                    .find(|(g, _)| *g == group)
                    .map_or(&empty, |(_, r)| r);
                let recipients = count(record, "recipients");
                let conversions = count(record, "conversions").min(recipients);
                let revenue_minor: BTreeMap<String, i64> = record
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| {
                        Some((k.strip_prefix("revenue_")?.to_owned(), v.as_i64()?))
                    })
                    .collect();
                let per = |total: i64| match recipients {
                    0 => 0.0,
                    n => total as f64 / n as f64,
                };
                GroupReport {
                    conversion_rate: per(i64::try_from(conversions).unwrap_or(i64::MAX)),
                    revenue_per_recipient_minor: revenue_minor
                        .iter()
                        .map(|(c, v)| (c.clone(), per(*v)))
                        .collect(),
                    group,
                    recipients,
                    conversions,
                    revenue_minor,
                    uplift: None,
                }
            })
            .collect();
        let holdout = groups
            .iter()
            .find(|g| g.group == HOLDOUT)
            .map(|h| (h.conversions, h.recipients));
        if let Some((k0, n0)) = holdout.filter(|(_, n0)| *n0 > 0) {
            for g in groups
                .iter_mut()
                .filter(|g| g.group != HOLDOUT && g.recipients > 0)
            {
                g.uplift = Some(uplift(g.conversions, g.recipients, k0, n0));
            }
        }
        CampaignReport {
            campaign: campaign.to_owned(),
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newcombe_interval_matches_the_published_example() {
        // Newcombe (1998), table II, example (a): 56/70 vs 48/80 → 0.2000, CI 0.0524 to 0.3339.
        let u = uplift(56, 70, 48, 80);
        assert!((u.absolute - 0.2).abs() < 1e-9);
        assert!((u.absolute_ci95[0] - 0.0524).abs() < 5e-4, "{u:?}");
        assert!((u.absolute_ci95[1] - 0.3339).abs() < 5e-4, "{u:?}");
        assert!(u.significant);
        // Example (d): 0/10 vs 0/20 → 0, CI −0.1611 to 0.2775.
        let z = uplift(0, 10, 0, 20);
        assert!((z.absolute_ci95[0] + 0.1611).abs() < 5e-4, "{z:?}");
        assert!((z.absolute_ci95[1] - 0.2775).abs() < 5e-4, "{z:?}");
        assert!(!z.significant);
        assert_eq!(z.relative, None);
    }

    #[test]
    fn a_report_lists_every_group_with_rates_and_the_uplift_over_the_holdout() {
        let records = vec![
            (
                "email".to_owned(),
                json!({"recipients": 900, "conversions": 90, "revenue_EUR": 180_000}),
            ),
            (
                HOLDOUT.to_owned(),
                json!({"recipients": 100, "conversions": 5, "revenue_EUR": 10_000}),
            ),
        ];
        let expected = vec![
            "email".to_owned(),
            "subject_b".to_owned(),
            HOLDOUT.to_owned(),
        ];
        let r = CampaignReport::from_records("winback", &expected, &records);
        let names: Vec<&str> = r.groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["email", "subject_b", HOLDOUT]);
        let email = &r.groups[0];
        assert!((email.conversion_rate - 0.1).abs() < 1e-12);
        assert_eq!(email.revenue_per_recipient_minor["EUR"], 200.0);
        let u = email.uplift.as_ref().unwrap();
        assert!((u.absolute - 0.05).abs() < 1e-12);
        assert!((u.relative.unwrap() - 1.0).abs() < 1e-12);
        assert!(u.absolute_ci95[0] < 0.05 && u.absolute_ci95[1] > 0.05);
        assert_eq!(r.groups[1].recipients, 0);
        assert_eq!(r.groups[1].uplift, None);
        assert_eq!(r.groups[2].uplift, None);
    }
}
