//! Simulated customers who answer campaigns, with a known true uplift: every customer placed
//! in a campaign group buys within the attribution window with probability `base_rate`, and
//! those sent the email with `base_rate + uplift`. The demo replays them so its campaign
//! report shows a real lift, and a test checks the report finds the uplift it was given.
//!
//! Deterministic: the draw for (seed, customer, campaign) comes from its own ChaCha stream,
//! so the same assignment gives the same answer in every run and on every re-delivery.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use ember_core::attribution::HOLDOUT;

/// One `campaign_assigned` event seen on the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub event_id: String,
    pub user_id: String,
    pub campaign: String,
    pub group: String,
    pub at: DateTime<Utc>,
    pub attribution_hours: u32,
}

impl Assignment {
    /// Reads a stream record's JSON (`None` for any other event).
    pub fn from_event(e: &Value) -> Option<Assignment> {
        if e.get("type")?.as_str()? != "campaign_assigned" {
            return None;
        }
        let payload = e.get("payload")?;
        Some(Assignment {
            event_id: e.get("event_id")?.as_str()?.to_owned(),
            user_id: e.get("user_id")?.as_str()?.to_owned(),
            campaign: payload.get("campaign")?.as_str()?.to_owned(),
            group: payload.get("group")?.as_str()?.to_owned(),
            at: e.get("occurred_at")?.as_str()?.parse().ok()?,
            attribution_hours: u32::try_from(payload.get("attribution_hours")?.as_u64()?).ok()?,
        })
    }
}

/// How simulated customers answer a campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Responder {
    pub seed: u64,
    /// Probability of a purchase in the window without the email (the holdout's rate).
    pub base_rate: f64,
    /// What receiving the email adds to it: the true absolute uplift.
    pub uplift: f64,
}

impl Default for Responder {
    fn default() -> Self {
        Responder {
            seed: 7,
            base_rate: 0.08,
            uplift: 0.22,
        }
    }
}

/// Prices of the orders answering a campaign, in euros (one to three bottles).
const ORDER_TOTALS: [&str; 4] = ["12.90", "18.50", "25.80", "34.40"];

impl Responder {
    /// The purchase `a`'s customer makes in answer, if any: some time inside the window.
    pub fn respond(&self, a: &Assignment) -> Option<Value> {
        let key = Sha256::digest(
            format!(
                "ember:respond\n{}\n{}\n{}",
                self.seed, a.user_id, a.campaign
            )
            .as_bytes(),
        );
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&key);
        let mut rng = ChaCha8Rng::from_seed(seed);
        let p = self.base_rate + if a.group == HOLDOUT { 0.0 } else { self.uplift };
        if rng.random::<f64>() >= p {
            return None;
        }
        let window_minutes = i64::from(a.attribution_hours.max(2)) * 60;
        let at = a.at + Duration::minutes(rng.random_range(30..window_minutes - 30));
        let total = ORDER_TOTALS[rng.random_range(0..ORDER_TOTALS.len())];
        let id = &hex::encode(key)[..16];
        Some(json!({
            "event_id": format!("respond-{id}"),
            "type": "purchase",
            "version": 1,
            "user_id": a.user_id,
            "occurred_at": at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "source": "web",
            "payload": {"order_id": format!("ord-respond-{id}"), "total": total,
                        "currency": "EUR", "items": []},
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::attribution::{add_to_record, report_pk, Attribution, Exposure, Tally};
    use ember_core::report::CampaignReport;
    use ember_email::experiment::{Experiment, Variant};
    use std::collections::BTreeMap;

    /// The report, computed by the same fold and counters as the pipeline, finds the true
    /// uplift the responder was given inside its 95 % interval, and calls it significant.
    #[test]
    fn the_report_recovers_the_true_uplift() {
        let responder = Responder::default();
        let experiment = Experiment {
            holdout_percent: 20,
            variants: vec![Variant {
                name: "email".into(),
                weight: 1,
                subject: Some("s".into()),
                template: None,
            }],
            attribution_hours: 72,
        };
        let at: DateTime<Utc> = "2026-11-03T10:00:00Z".parse().unwrap();
        let mut records: BTreeMap<String, Value> = BTreeMap::new();
        for i in 0..4_000 {
            let user = format!("u-{i}");
            let group = experiment.assign("heat_match", &user).name().to_owned();
            let a = Assignment {
                event_id: format!("a-{i}"),
                user_id: user,
                campaign: "heat_match".into(),
                group: group.clone(),
                at,
                attribution_hours: 72,
            };
            let mut exposures: BTreeMap<String, Exposure> = BTreeMap::new();
            let mut tallies: Vec<Tally> = Vec::new();
            let mut fold = Attribution {
                exposures: &mut exposures,
                tallies: &mut tallies,
            };
            fold.assign("heat_match", &group, Duration::hours(72), at);
            if let Some(purchase) = responder.respond(&a) {
                assert_eq!(
                    responder.respond(&a).as_ref(),
                    Some(&purchase),
                    "deterministic"
                );
                let when = purchase["occurred_at"].as_str().unwrap().parse().unwrap();
                fold.purchase("o", 1_290, "EUR", when);
            }
            for t in &tallies {
                assert_eq!(report_pk(&t.campaign), "report#heat_match");
                add_to_record(records.entry(t.group.clone()).or_insert(json!({})), t);
            }
        }
        let records: Vec<(String, Value)> = records.into_iter().collect();
        let report = CampaignReport::from_records("heat_match", &experiment.groups(), &records);
        let sent = &report.groups[0];
        let u = sent.uplift.as_ref().expect("an uplift over the holdout");
        assert!(
            u.absolute_ci95[0] <= responder.uplift && responder.uplift <= u.absolute_ci95[1],
            "{u:?}"
        );
        assert!(u.significant, "{u:?}");
        let holdout = &report.groups[1];
        assert!(
            (holdout.conversion_rate - responder.base_rate).abs() < 0.04,
            "{holdout:?}"
        );
    }
}
