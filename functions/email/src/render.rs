//! Rendering: the product catalog (`catalog.json`), heat-matched recommendations, money
//! formatting, and the minijinja templates (`templates/`, embedded) with strict undefined
//! behaviour, so a template referring to anything the context lacks fails loudly in tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ember_core::error::{describe, Problem};
use ember_core::profile::Profile;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::campaign::Campaign;
use crate::error::EmailError;

/// The product catalog shipped with Ember.
pub const CATALOG: &str = include_str!("../catalog.json");

/// Every template file, by name. Each campaign template needs `<name>.subject.txt`,
/// `<name>.html` and `<name>.txt`.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    (
        "recommendations.html",
        include_str!("../templates/recommendations.html"),
    ),
    (
        "recommendations.txt",
        include_str!("../templates/recommendations.txt"),
    ),
    (
        "cart_abandonment.subject.txt",
        include_str!("../templates/cart_abandonment.subject.txt"),
    ),
    (
        "cart_abandonment.html",
        include_str!("../templates/cart_abandonment.html"),
    ),
    (
        "cart_abandonment.txt",
        include_str!("../templates/cart_abandonment.txt"),
    ),
    (
        "churn_winback.subject.txt",
        include_str!("../templates/churn_winback.subject.txt"),
    ),
    (
        "churn_winback.html",
        include_str!("../templates/churn_winback.html"),
    ),
    (
        "churn_winback.txt",
        include_str!("../templates/churn_winback.txt"),
    ),
    (
        "heat_match.subject.txt",
        include_str!("../templates/heat_match.subject.txt"),
    ),
    (
        "heat_match.html",
        include_str!("../templates/heat_match.html"),
    ),
    (
        "heat_match.txt",
        include_str!("../templates/heat_match.txt"),
    ),
];

/// The templates shipped in the binary, by file name.
pub fn embedded_templates() -> BTreeMap<String, String> {
    TEMPLATES
        .iter()
        .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
        .collect()
}

/// How many products an email recommends.
pub const RECOMMENDATIONS: usize = 3;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// Scoville heat units.
    pub shu: u64,
    pub price_minor: i64,
    pub url: String,
    /// 1 = best seller.
    pub best_seller_rank: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Catalog {
    pub currency: String,
    pub products: Vec<Product>,
}

impl Catalog {
    pub fn from_json(json: &str) -> Result<Catalog, EmailError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| EmailError::Config(format!("catalog: {e}")))?;
        Catalog::from_value(&value)
    }

    /// The catalog of a configuration document, checked.
    pub fn from_value(value: &serde_json::Value) -> Result<Catalog, EmailError> {
        let catalog =
            Catalog::deserialize(value).map_err(|e| EmailError::Config(format!("catalog: {e}")))?;
        if catalog.products.len() < RECOMMENDATIONS {
            return Err(EmailError::Config(format!(
                "catalog: fewer than {RECOMMENDATIONS} products"
            )));
        }
        if let Some(p) = catalog
            .products
            .iter()
            .find(|p| p.shu == 0 || p.price_minor <= 0)
        {
            return Err(EmailError::Config(format!(
                "catalog: product {} needs shu > 0 and a price",
                p.sku
            )));
        }
        Ok(catalog)
    }

    /// The products closest to `heat` on a log scale (a 2 000 SHU fan is far from 200 000),
    /// skipping SKUs already in the cart; best sellers when no preference is known.
    pub fn recommend(&self, heat: Option<f64>, exclude: &[&str]) -> (Vec<&Product>, Basis) {
        let mut candidates: Vec<&Product> = self
            .products
            .iter()
            .filter(|p| !exclude.contains(&p.sku.as_str()))
            .collect();
        if candidates.len() < RECOMMENDATIONS {
            candidates = self.products.iter().collect();
        }
        match heat.filter(|h| h.is_finite() && *h > 0.0) {
            Some(h) => {
                let target = h.ln();
                candidates.sort_by(|a, b| {
                    let da = ((a.shu as f64).ln() - target).abs();
                    let db = ((b.shu as f64).ln() - target).abs();
                    da.total_cmp(&db)
                        .then(a.best_seller_rank.cmp(&b.best_seller_rank))
                });
                candidates.truncate(RECOMMENDATIONS);
                (candidates, Basis::Heat)
            }
            None => {
                candidates.sort_by_key(|p| p.best_seller_rank);
                candidates.truncate(RECOMMENDATIONS);
                (candidates, Basis::BestSellers)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Heat,
    BestSellers,
}

/// Formats minor units of an ISO 4217 currency: `$12.50`, `€7.00`, `¥1200`, `12.50 CHF`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let code = currency.trim().to_ascii_uppercase();
    let exponent = match code.as_str() {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "HUF" | "TWD" | "UGX" | "XAF" | "XOF" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => 3,
        _ => 2,
    };
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let amount = if exponent == 0 {
        abs.to_string()
    } else {
        let div = 10u64.pow(exponent);
        format!(
            "{}.{:0width$}",
            abs / div,
            abs % div,
            width = exponent as usize
        )
    };
    match code.as_str() {
        "USD" => format!("{sign}${amount}"),
        "EUR" => format!("{sign}€{amount}"),
        "GBP" => format!("{sign}£{amount}"),
        "JPY" => format!("{sign}¥{amount}"),
        "" => format!("{sign}{amount}"),
        _ => format!("{sign}{amount} {code}"),
    }
}

/// Human-readable Scoville units: `2,200`, `1,000,000`.
pub fn format_shu(shu: u64) -> String {
    let digits = shu.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.join(",")
}

/// The first name to greet with: the first word of the profile name, if it looks like one.
pub fn first_name(profile: &Profile) -> Option<String> {
    let name = profile.name()?.split_whitespace().next()?;
    let name: String = name.chars().filter(|c| !c.is_control()).take(40).collect();
    (name.chars().any(char::is_alphabetic)).then_some(name)
}

#[derive(Debug, Serialize)]
struct ItemView {
    name: String,
    quantity: u32,
    unit_price: String,
    line_total: String,
    url: Option<String>,
}

#[derive(Debug, Serialize)]
struct CartView {
    items: Vec<ItemView>,
    item_count: u32,
    total: String,
}

#[derive(Debug, Serialize)]
struct ProductView {
    name: String,
    shu: u64,
    shu_label: String,
    price: String,
    url: String,
}

#[derive(Debug, Serialize)]
struct OfferView {
    code: String,
    percent: u8,
    valid_until: String,
}

/// Everything a template may use. Optional parts are present as `none`, never undefined.
#[derive(Debug, Serialize)]
struct EmailContext {
    campaign: String,
    shop_name: String,
    shop_url: String,
    cart_url: String,
    unsubscribe_url: String,
    first_name: Option<String>,
    greeting: String,
    cart: Option<CartView>,
    offer: Option<OfferView>,
    heat_shu: Option<u64>,
    /// `heat_shu` formatted for people, e.g. `50,000`.
    heat_label: Option<String>,
    recommendations: Vec<ProductView>,
    recommendation_basis: Basis,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// What rendering needs besides the profile and campaign.
pub struct Links<'a> {
    pub shop_name: &'a str,
    pub base_url: &'a str,
    pub unsubscribe_url: &'a str,
}

pub struct Renderer {
    env: Environment<'static>,
    catalog: Catalog,
}

impl Renderer {
    /// A renderer of the templates `sources` (file name → source), every syntax error
    /// reported with its template's path (`templates/<name>`).
    pub fn new(
        catalog: Catalog,
        sources: &BTreeMap<String, String>,
    ) -> Result<Renderer, Vec<Problem>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        crate::filters::register(&mut env);
        let mut problems = Vec::new();
        for (name, source) in sources {
            if let Err(e) = env.add_template_owned(name.clone(), source.clone()) {
                problems.push(Problem::new(format!("templates/{name}"), format!("{e:#}")));
            }
        }
        if problems.is_empty() {
            Ok(Renderer { env, catalog })
        } else {
            Err(problems)
        }
    }

    /// The templates and catalog shipped in the binary.
    pub fn embedded() -> Result<Renderer, EmailError> {
        Renderer::new(Catalog::from_json(CATALOG)?, &embedded_templates())
            .map_err(|problems| EmailError::Config(describe(&problems)))
    }

    /// Whether all three parts of campaign template `name` exist.
    pub fn has_template(&self, name: &str) -> bool {
        ["subject.txt", "html", "txt"]
            .iter()
            .all(|ext| self.env.get_template(&format!("{name}.{ext}")).is_ok())
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn render(
        &self,
        campaign: &Campaign,
        profile: &Profile,
        links: &Links<'_>,
        now: DateTime<Utc>,
    ) -> Result<Rendered, EmailError> {
        let base = links.base_url.trim_end_matches('/');
        let currency = profile
            .cart
            .currency
            .as_deref()
            .or(profile.currency.as_deref())
            .unwrap_or(&self.catalog.currency)
            .to_owned();
        let cart = (!profile.cart.items.is_empty()).then(|| CartView {
            // Most valuable line first: it names the email's subject.
            items: {
                let mut lines: Vec<_> = profile.cart.items.values().collect();
                lines
                    .sort_by_key(|i| std::cmp::Reverse(i.unit_price_minor * i64::from(i.quantity)));
                lines
                    .into_iter()
                    .map(|i| ItemView {
                        name: if i.name.trim().is_empty() {
                            "Your item".into()
                        } else {
                            i.name.clone()
                        },
                        quantity: i.quantity,
                        unit_price: format_money(i.unit_price_minor, &currency),
                        line_total: format_money(
                            i.unit_price_minor * i64::from(i.quantity),
                            &currency,
                        ),
                        url: i.url.clone(),
                    })
                    .collect()
            },
            item_count: profile.cart.items.values().map(|i| i.quantity).sum(),
            total: format_money(profile.cart_value_minor(), &currency),
        });
        let in_cart: Vec<&str> = profile.cart.items.keys().map(String::as_str).collect();
        let heat = profile.heat_shu();
        let (products, basis) = self.catalog.recommend(heat, &in_cart);
        let first_name = first_name(profile);
        let ctx = EmailContext {
            campaign: campaign.name.clone(),
            shop_name: links.shop_name.to_owned(),
            shop_url: base.to_owned(),
            cart_url: format!("{base}/cart"),
            unsubscribe_url: links.unsubscribe_url.to_owned(),
            greeting: match &first_name {
                Some(n) => format!("Hi {n},"),
                None => "Hi there,".to_owned(),
            },
            first_name,
            cart,
            offer: campaign.offer.as_ref().map(|o| OfferView {
                code: o.code.clone(),
                percent: o.percent,
                valid_until: (now + Duration::days(i64::from(o.valid_days)))
                    .format("%B %-d, %Y")
                    .to_string(),
            }),
            heat_shu: heat.map(|h| h.round().max(0.0) as u64),
            heat_label: heat.map(|h| format_shu(h.round().max(0.0) as u64)),
            recommendations: products
                .into_iter()
                .map(|p| ProductView {
                    name: p.name.clone(),
                    shu: p.shu,
                    shu_label: format_shu(p.shu),
                    price: format_money(p.price_minor, &self.catalog.currency),
                    url: p.url.clone(),
                })
                .collect(),
            recommendation_basis: basis,
        };
        let part = |ext: &str| -> Result<String, EmailError> {
            let name = format!("{}.{ext}", campaign.template);
            let render_err = |e: minijinja::Error| EmailError::Render {
                template: name.clone(),
                reason: format!("{e:#}"),
            };
            self.env
                .get_template(&name)
                .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
                .map_err(render_err)
        };
        let subject = part("subject.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Rendered {
            subject,
            html: part("html")?,
            text: part("txt")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{Campaigns, Known};
    use crate::filters::length;
    use ember_core::profile::{CartItem, DecayedValue, Stamped};

    #[test]
    fn length_filter_counts_sequences_maps_and_strings_and_rejects_the_rest() {
        use minijinja::Value;
        assert_eq!(length(Value::from(vec![1, 2, 3])).unwrap(), 3);
        assert_eq!(length(Value::from("héé")).unwrap(), 3);
        let map: std::collections::BTreeMap<&str, i32> = [("a", 1)].into();
        assert_eq!(length(Value::from(map)).unwrap(), 1);
        let err = length(Value::from(42)).unwrap_err();
        assert!(
            err.to_string().contains("cannot take the length of number"),
            "{err}"
        );
    }

    fn campaigns(r: &Renderer) -> Campaigns {
        let known = Known {
            segment: &|_| Some(None),
            template: &|t| r.has_template(t),
        };
        Campaigns::from_json(crate::campaign::EMBEDDED, &known).unwrap()
    }

    /// `campaign` rendered for `p` by the embedded templates.
    fn render(campaign: &str, p: &Profile) -> Result<Rendered, EmailError> {
        let r = Renderer::embedded().unwrap();
        let c = campaigns(&r);
        r.render(c.get(campaign).unwrap(), p, &links(), now())
    }

    /// A decayed heat preference of `shu` Scoville units.
    fn heat(shu: f64) -> Option<DecayedValue> {
        Some(DecayedValue {
            weighted_sum: shu,
            weight: 1.0,
            as_of: None,
        })
    }

    fn links() -> Links<'static> {
        Links {
            shop_name: "Ember Hot Sauce Co.",
            base_url: "https://shop.example/",
            unsubscribe_url: "https://shop.example/v1/unsubscribe?token=t",
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn money_is_formatted_per_currency() {
        assert_eq!(format_money(1250, "USD"), "$12.50");
        assert_eq!(format_money(700, "eur"), "€7.00");
        assert_eq!(format_money(1200, "JPY"), "¥1200");
        assert_eq!(format_money(5, "CHF"), "0.05 CHF");
        assert_eq!(format_money(-1999, "GBP"), "-£19.99");
        assert_eq!(format_shu(1_000_000), "1,000,000");
        assert_eq!(format_shu(450), "450");
    }

    #[test]
    fn recommendations_follow_the_heat_preference() {
        let catalog = Catalog::from_json(CATALOG).unwrap();
        assert_eq!(catalog.products.len(), 15);
        let (mild, basis) = catalog.recommend(Some(2000.0), &[]);
        assert_eq!(basis, Basis::Heat);
        assert!(mild.iter().all(|p| p.shu < 5000), "{mild:?}");
        let (hot, _) = catalog.recommend(Some(200_000.0), &[]);
        assert!(hot.iter().all(|p| p.shu >= 100_000), "{hot:?}");
        let (best, basis) = catalog.recommend(None, &[]);
        assert_eq!(basis, Basis::BestSellers);
        assert_eq!(best[0].best_seller_rank, 1);
        let (excl, _) = catalog.recommend(None, &["sauce-sriracha"]);
        assert!(excl.iter().all(|p| p.sku != "sauce-sriracha"));
    }

    #[test]
    fn cart_email_is_personalised() {
        let mut p = Profile::new("u-1");
        p.name = Some(Stamped::undated("Ana María López"));
        p.cart.currency = Some("EUR".into());
        p.cart.items.insert(
            "sauce-dave-insanity".into(),
            CartItem {
                name: "Dave's Insanity <Sauce>".into(),
                quantity: 2,
                unit_price_minor: 1199,
                url: None,
            },
        );
        p.cart.items.insert(
            "evil".into(),
            CartItem {
                name: "Evil".into(),
                quantity: 1,
                unit_price_minor: 100,
                url: Some("javascript:alert(1)".into()),
            },
        );
        p.heat = heat(150_000.0);
        let out = render("cart_abandonment", &p).unwrap();
        assert_eq!(
            out.subject,
            "Ana, your Dave's Insanity <Sauce> and more are still waiting"
        );
        assert!(out.html.contains(r##"<a href="#""##) && !out.html.contains("javascript:"));
        assert!(out.html.contains("Hi Ana,"));
        assert!(
            out.html.contains("Dave&#x27;s Insanity &lt;Sauce&gt;"),
            "html escaped"
        );
        assert!(out.html.contains("€23.98") && out.html.contains("€24.98"));
        assert!(out.text.contains("Dave's Insanity <Sauce> x 2: €23.98"));
        assert!(out.text.contains("Matched to your heat level"));
        assert!(
            out.text.contains("Da' Bomb Beyond Insanity"),
            "{}",
            out.text
        );
        assert!(out
            .html
            .contains(r#"href="https://shop.example/v1/unsubscribe?token=t""#));
        assert!(!out.html.contains("{{") && !out.text.contains("{{"));
    }

    #[test]
    fn missing_data_falls_back_gracefully() {
        let mut p = Profile::new("u-2");
        p.name = Some(Stamped::undated("   "));
        let out = render("churn_winback", &p).unwrap();
        assert_eq!(out.subject, "We miss you: 15% off your next bottle");
        assert!(out.text.starts_with("Hi there,"));
        assert!(!out.html.contains("Hi ,"));
        assert!(out.text.contains("COMEBACK15"));
        assert!(out.text.contains("December 7, 2026"));
        assert!(out.text.contains("Our best sellers"));
        assert!(out.text.contains("Huy Fong Sriracha"));
    }

    #[test]
    fn heat_match_recommends_bottles_at_the_customers_heat_level() {
        let mut p = Profile::new("u-3");
        p.name = Some(Stamped::undated("Bo"));
        p.heat = heat(1_833_386.0);
        let out = render("heat_match", &p).unwrap();
        assert_eq!(
            out.subject,
            "Bo, sauces matched to your heat level (extra-hot, about 1.8 million SHU)"
        );
        assert!(out
            .text
            .contains("You like it extra-hot: about 1.8 million Scoville heat units"));
        // The shop's name ends with a period: the footer's sentence has just that one.
        assert!(
            out.text.contains("to hear from Ember Hot Sauce Co.\n"),
            "{}",
            out.text
        );
        assert!(!out.html.contains("Co.."));
        assert!(out.text.contains("Matched to your heat level:"));
        assert!(!out.text.contains("Our best sellers"));
        assert!(!out.html.contains("{{") && !out.text.contains("{{"));

        // No stated heat: no number in the subject, best sellers instead.
        let out = render("mild_discovery", &Profile::new("u-4")).unwrap();
        assert_eq!(out.subject, "Sauces matched to your heat level");
        assert!(out.text.starts_with("Hi there,"));
        assert!(out.text.contains("Our best sellers"));
    }

    #[test]
    fn strict_undefined_fails_template_bugs() {
        // The cart template needs a cart: rendering it for an empty cart is a bug, not a blank.
        let err = render("cart_abandonment", &Profile::new("u-3"));
        assert!(matches!(err, Err(EmailError::Render { .. })), "{err:?}");
    }
}
