//! One configuration version as the email function runs it: the segment rules (campaigns
//! re-check them at send time), the campaigns and the templates with their catalog, compiled
//! and cross-checked together. The admin API validates a version with the same [`compile`]
//! before publishing it, so what is published always compiles here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ember_core::config::ConfigDoc;
use ember_core::error::{describe, Problem};
use ember_core::profile::{CartItem, Consent, Profile, Stamped};
use ember_core::segment::{RuleSet, EMBEDDED_RULES};
use serde_json::Value;

use crate::campaign::{self, Campaigns, Known, Trigger};
use crate::error::EmailError;
use crate::render::{self, Catalog, Links, Renderer};

/// What one version compiles to.
pub struct Compiled {
    pub rules: RuleSet,
    pub campaigns: Campaigns,
    pub renderer: Renderer,
}

/// The configuration built into the binaries (the repository's files): version 0, in force
/// until something is published, and what a first publish starts from.
pub fn embedded_doc() -> ConfigDoc {
    let json = |text: &str| serde_json::from_str(text).unwrap_or(Value::Null);
    ConfigDoc {
        segments: json(EMBEDDED_RULES),
        campaigns: json(campaign::EMBEDDED),
        templates: render::embedded_templates(),
        catalog: json(render::CATALOG),
    }
}

/// The built-in version, compiled (it is checked by a test, so this fails only on a broken
/// build).
pub fn builtin() -> Result<Compiled, EmailError> {
    compile(&embedded_doc()).map_err(|problems| {
        EmailError::Config(format!("built-in configuration: {}", describe(&problems)))
    })
}

/// Compiles and cross-checks a document: rules, catalog, template syntax, campaigns against
/// the segments and templates that exist, and every campaign rendered for a sample customer
/// with everything and one with nothing but an address. Every problem, with its path.
pub fn compile(doc: &ConfigDoc) -> Result<Compiled, Vec<Problem>> {
    let mut problems = Vec::new();
    let rules = RuleSet::from_doc(&doc.segments)
        .map_err(|p| problems.extend(p))
        .ok();
    let catalog = Catalog::from_value(&doc.catalog)
        .map_err(|e| problems.push(Problem::new("catalog", e.to_string())))
        .ok();
    let renderer = catalog.and_then(|catalog| {
        Renderer::new(catalog, &doc.templates)
            .map_err(|p| problems.extend(p))
            .ok()
    });
    let campaigns = match (&rules, &renderer) {
        (Some(rules), Some(renderer)) => {
            let segment = |name: &str| rules.get(name).map(|r| r.delay);
            let template = |name: &str| renderer.has_template(name);
            let known = Known {
                segment: &segment,
                template: &template,
            };
            Campaigns::from_doc(&doc.campaigns, &known)
                .map_err(|p| problems.extend(p))
                .ok()
        }
        _ => None,
    };
    let (Some(rules), Some(renderer), Some(campaigns)) = (rules, renderer, campaigns) else {
        return Err(problems);
    };
    let now = sample_time();
    let links = Links {
        shop_name: &campaigns.shop_name,
        base_url: "https://shop.example",
        unsubscribe_url: "https://shop.example/v1/unsubscribe?token=sample",
    };
    for c in &campaigns.campaigns {
        let mut samples = vec![("a customer with a cart", full_sample(now))];
        if c.trigger != Trigger::CartUpdated {
            samples.push(("a customer with only an address", bare_sample()));
        }
        let mut versions = vec![c.as_variant(None)];
        versions.extend(c.experiment.variants.iter().map(|v| c.as_variant(Some(v))));
        for version in versions {
            for (who, profile) in &samples {
                if let Err(e) = renderer.render(&version, profile, &links, now) {
                    problems.push(Problem::new(
                        format!("templates/{}", version.template),
                        format!("does not render for {who} (campaign {}): {e}", c.name),
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(Compiled {
            rules,
            campaigns,
            renderer,
        })
    } else {
        Err(problems)
    }
}

fn sample_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_168_800, 0).unwrap_or_default()
}

fn bare_sample() -> Profile {
    let mut p = Profile::new("u-sample");
    p.email = Some(Stamped::undated("sample@example.com"));
    p
}

fn full_sample(now: DateTime<Utc>) -> Profile {
    let mut p = bare_sample();
    p.name = Some(Stamped::undated("Ana Sample"));
    p.consent.insert(
        "email".into(),
        Consent {
            granted: true,
            at: Some(now),
        },
    );
    p.cart.items = BTreeMap::from([(
        "SAU-001".into(),
        CartItem {
            name: "Smoked Chipotle".into(),
            quantity: 2,
            unit_price_minor: 890,
            url: Some("https://shop.example/p/sau-001".into()),
        },
    )]);
    p.cart.updated_at = Some(now);
    p.cart.currency = Some("EUR".into());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_configuration_compiles() {
        let compiled = compile(&embedded_doc()).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(compiled.campaigns.get("heat_match").is_some());
        assert!(compiled.rules.get("churn_risk").is_some());
    }

    #[test]
    fn every_problem_of_a_document_is_reported_with_its_path() {
        let mut doc = embedded_doc();
        doc.segments["segments"][1]["when"] = serde_json::json!({"trait": "nope", "gt": 1});
        doc.campaigns["campaigns"][0]["delay"] = "soon".into();
        doc.campaigns["campaigns"][1]["segment"] = "nobody".into();
        doc.templates.insert(
            "churn_winback.subject.txt".into(),
            "{{ first_name.nope }}".into(),
        );
        doc.templates
            .insert("heat_match.html".into(), "{% if %}".into());
        let problems = compile(&doc).map(|_| ()).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["segments/high_heat_lover", "templates/heat_match.html",],
            "{problems:#?}"
        );
        // With the syntax and rules fixed, the campaign and render problems show.
        let mut doc2 = doc.clone();
        doc2.segments = embedded_doc().segments;
        doc2.templates = embedded_doc().templates;
        doc2.templates.insert(
            "churn_winback.subject.txt".into(),
            "{{ first_name.nope }}".into(),
        );
        let problems = compile(&doc2).map(|_| ()).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["campaigns/cart_abandonment", "campaigns/churn_winback"],
            "{problems:#?}"
        );
        doc2.campaigns = embedded_doc().campaigns;
        let problems = compile(&doc2).map(|_| ()).unwrap_err();
        assert_eq!(problems[0].path, "templates/churn_winback", "{problems:#?}");
        assert!(
            problems[0].message.contains("churn_winback"),
            "{problems:#?}"
        );
    }
}
