//! A deterministic generator of realistic traffic for a hot-sauce shop: `users` shoppers over
//! `days` days of event time, each with a persona — cart abandoners, buyers, heat lovers,
//! churners (busy at first, then silent), browsers (some anonymous first, identified later) —
//! plus lapsed customers (backfilled history: two purchases and their last visit 35–60 days
//! before `start`, so the scheduled segment re-evaluation flags them `churn_risk` and the
//! `churn_winback` email goes out during the replay) and a few malformed events the API must
//! refuse. Lapsed customers use their own random stream, so adding them leaves every other
//! shopper's events unchanged. Same seed, same file, byte for byte
//! (ChaCha8 is portable; no wall clock, no hash-map order).

use chrono::{DateTime, Duration, Utc};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub users: usize,
    pub seed: u64,
    pub start: DateTime<Utc>,
    pub days: i64,
    /// Malformed events mixed in (the API refuses them with a 4xx).
    pub invalid: usize,
    /// Lapsed repeat customers with backfilled history before `start` (ids after the
    /// `users` shoppers), each with an email address and email consent.
    pub lapsed: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            users: 300,
            seed: 7,
            start: DateTime::parse_from_rfc3339("2026-11-02T00:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            days: 7,
            invalid: 3,
            lapsed: 12,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persona {
    CartAbandoner,
    Buyer,
    HeatLover,
    Churner,
    Browser,
    /// Backfilled history: two purchases, last seen 35+ days before the sample starts.
    Lapsed,
}

impl Persona {
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::CartAbandoner => "cart_abandoner",
            Persona::Buyer => "buyer",
            Persona::HeatLover => "heat_lover",
            Persona::Churner => "churner",
            Persona::Browser => "browser",
            Persona::Lapsed => "lapsed",
        }
    }
}

struct Product {
    sku: &'static str,
    name: &'static str,
    price: &'static str,
    shu: u32,
}

const CATALOG: &[Product] = &[
    Product {
        sku: "SAU-001",
        name: "Smoked Chipotle",
        price: "8.90",
        shu: 5_000,
    },
    Product {
        sku: "SAU-002",
        name: "Garlic Jalapeño",
        price: "7.50",
        shu: 8_000,
    },
    Product {
        sku: "SAU-003",
        name: "Mango Habanero",
        price: "9.90",
        shu: 150_000,
    },
    Product {
        sku: "SAU-004",
        name: "Scotch Bonnet Sunrise",
        price: "10.50",
        shu: 250_000,
    },
    Product {
        sku: "SAU-005",
        name: "Ghost Pepper Reserve",
        price: "13.90",
        shu: 900_000,
    },
    Product {
        sku: "SAU-006",
        name: "Carolina Reaper Inferno",
        price: "15.90",
        shu: 1_600_000,
    },
    Product {
        sku: "SAU-007",
        name: "Sweet Paprika Mild",
        price: "6.90",
        shu: 500,
    },
    Product {
        sku: "SAU-008",
        name: "Green Sriracha",
        price: "7.90",
        shu: 2_500,
    },
];

const NAMES: &[&str] = &[
    "Ada", "Bruno", "Chiara", "Dmitri", "Emma", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemi",
    "Lea", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor",
    "Wen", "Ximena", "Yusuf", "Zoe",
];

const ZONES: &[(&str, i64, &str)] = &[
    ("Europe/Berlin", 1, "de-DE"),
    ("Europe/London", 0, "en-GB"),
    ("Europe/Madrid", 1, "es-ES"),
    ("America/New_York", -5, "en-US"),
    ("America/Los_Angeles", -8, "en-US"),
    ("Asia/Tokyo", 9, "ja-JP"),
];

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
];

const SHOP: &str = "https://shop.example";

/// Seed offset of the lapsed customers' random stream.
const LAPSED_STREAM: u64 = 0x4C41_5053_4544;

struct Gen {
    rng: ChaCha8Rng,
    seed: u64,
    counter: u64,
    out: Vec<(DateTime<Utc>, u64, Value)>,
}

struct Shopper {
    user_id: String,
    anonymous_id: Option<String>,
    identified: bool,
    zone: &'static str,
    locale: &'static str,
    offset_hours: i64,
    agent: &'static str,
}

impl Gen {
    fn event(&mut self, s: &Shopper, at: DateTime<Utc>, kind: &str, page: &str, payload: Value) {
        self.counter += 1;
        let mut e = json!({
            "event_id": format!("evt-{}-{:06}", self.seed, self.counter),
            "type": kind,
            "version": 1,
            "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "source": "web",
            "context": {
                "user_agent": s.agent,
                "page_url": format!("{SHOP}{page}"),
                "locale": s.locale,
                "timezone": s.zone,
            },
            "payload": payload,
        });
        if s.identified {
            e["user_id"] = json!(s.user_id);
        } else if let Some(a) = &s.anonymous_id {
            e["anonymous_id"] = json!(a);
        }
        self.out.push((at, self.counter, e));
    }

    fn product(&mut self, hot: bool) -> &'static Product {
        let pool: Vec<&'static Product> = CATALOG
            .iter()
            .filter(|p| {
                if hot {
                    p.shu >= 150_000
                } else {
                    p.shu < 150_000
                }
            })
            .collect();
        pool[self.rng.random_range(0..pool.len())]
    }

    /// A session start in the shopper's local waking hours on `day`.
    fn session_start(&mut self, start: DateTime<Utc>, day: i64, s: &Shopper) -> DateTime<Utc> {
        let local_hour = self.rng.random_range(8..22);
        let minute = self.rng.random_range(0..60);
        start
            + Duration::days(day)
            + Duration::hours(local_hour - s.offset_hours)
            + Duration::minutes(minute)
    }

    fn browse(
        &mut self,
        s: &Shopper,
        t: &mut DateTime<Utc>,
        views: usize,
        hot: bool,
    ) -> Vec<&'static Product> {
        self.event(
            s,
            *t,
            "page_view",
            "/",
            json!({ "url": format!("{SHOP}/") }),
        );
        let mut seen = Vec::new();
        for _ in 0..views {
            *t += Duration::seconds(self.rng.random_range(20..240));
            let p = self.product(hot);
            let url = format!("/products/{}", p.sku.to_ascii_lowercase());
            self.event(
                s,
                *t,
                "product_view",
                &url,
                json!({ "sku": p.sku, "name": p.name, "price": p.price, "currency": "EUR", "url": format!("{SHOP}{url}") }),
            );
            seen.push(p);
        }
        seen
    }

    fn add_to_cart(&mut self, s: &Shopper, t: &mut DateTime<Utc>, p: &Product, qty: u32) {
        *t += Duration::seconds(self.rng.random_range(15..120));
        let url = format!("/products/{}", p.sku.to_ascii_lowercase());
        self.event(
            s,
            *t,
            "add_to_cart",
            &url,
            json!({ "sku": p.sku, "name": p.name, "price": p.price, "currency": "EUR", "quantity": qty, "url": format!("{SHOP}{url}") }),
        );
    }

    fn purchase(&mut self, s: &Shopper, t: &mut DateTime<Utc>, cart: &[(&Product, u32)]) {
        let total_cents: i64 = cart
            .iter()
            .map(|(p, q)| cents(p.price) * i64::from(*q))
            .sum();
        let total = format!("{}.{:02}", total_cents / 100, total_cents % 100);
        self.counter += 0;
        let order = format!("ord-{}-{}", self.seed, self.counter + 1);
        *t += Duration::seconds(self.rng.random_range(30..300));
        self.event(
            s,
            *t,
            "checkout_started",
            "/checkout",
            json!({ "checkout_id": format!("chk-{order}"), "total": total, "currency": "EUR" }),
        );
        *t += Duration::seconds(self.rng.random_range(60..600));
        let items: Vec<Value> = cart
            .iter()
            .map(|(p, q)| json!({ "sku": p.sku, "name": p.name, "price": p.price, "quantity": q }))
            .collect();
        self.event(
            s,
            *t,
            "purchase",
            "/checkout/thanks",
            json!({ "order_id": order, "total": total, "currency": "EUR", "items": items }),
        );
    }
}

fn cents(price: &str) -> i64 {
    let (a, b) = price.split_once('.').unwrap_or((price, "0"));
    a.parse::<i64>().unwrap_or(0) * 100 + b.parse::<i64>().unwrap_or(0)
}

/// Generates the events, sorted by `occurred_at` (ties in generation order), and the persona
/// of every user (for documentation and tests).
pub fn generate(opts: &GenerateOptions) -> (Vec<Value>, Vec<(String, Persona)>) {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(opts.seed),
        seed: opts.seed,
        counter: 0,
        out: Vec::new(),
    };
    let days = opts.days.max(2);
    let mut personas = Vec::new();
    for i in 0..opts.users {
        let roll = g.rng.random_range(0..100);
        let persona = match roll {
            0..=24 => Persona::CartAbandoner,
            25..=49 => Persona::Buyer,
            50..=64 => Persona::HeatLover,
            65..=79 => Persona::Churner,
            _ => Persona::Browser,
        };
        let (zone, offset, locale) = ZONES[g.rng.random_range(0..ZONES.len())];
        let anonymous_first = g.rng.random_bool(0.15);
        let mut s = Shopper {
            user_id: format!("u-{i:04}"),
            anonymous_id: anonymous_first.then(|| format!("anon-{}-{i:04}", opts.seed)),
            identified: !anonymous_first,
            zone,
            locale,
            offset_hours: offset,
            agent: AGENTS[g.rng.random_range(0..AGENTS.len())],
        };
        personas.push((s.user_id.clone(), persona));
        let first_day = match persona {
            Persona::Churner => 0,
            _ => g.rng.random_range(0..days - 1),
        };
        let mut t = g.session_start(opts.start, first_day, &s);
        // Anonymous visitors browse first, then sign up (identify merges the two profiles).
        if !s.identified {
            g.browse(&s, &mut t, 2, false);
            t += Duration::seconds(g.rng.random_range(30..300));
            s.identified = true;
            let anon = s.anonymous_id.clone().unwrap_or_default();
            g.event(
                &s,
                t,
                "identify",
                "/account/signup",
                json!({ "user_id": s.user_id, "anonymous_id": anon }),
            );
        }
        let name = NAMES[i % NAMES.len()];
        t += Duration::seconds(5);
        g.event(
            &s,
            t,
            "profile_updated",
            "/account",
            json!({ "email": format!("shopper{i:04}@example.com"), "name": name, "timezone": zone }),
        );
        t += Duration::seconds(2);
        let consent = g.rng.random_bool(0.9);
        g.event(
            &s,
            t,
            "consent_changed",
            "/account/preferences",
            json!({ "channel": "email", "granted": consent }),
        );

        match persona {
            Persona::CartAbandoner => {
                let views = g.rng.random_range(2..5);
                let seen = g.browse(&s, &mut t, views, false);
                let n = g.rng.random_range(1..=seen.len().min(3));
                for p in seen.into_iter().take(n) {
                    let q = g.rng.random_range(1..3);
                    g.add_to_cart(&s, &mut t, p, q);
                }
                if g.rng.random_bool(0.4) {
                    t += Duration::seconds(g.rng.random_range(30..200));
                    g.event(&s, t, "checkout_started", "/checkout", json!({}));
                }
                if g.rng.random_bool(0.3) {
                    // Comes back another day, looks, leaves again.
                    let day = (first_day + 1).min(days - 1);
                    let mut t2 = g
                        .session_start(opts.start, day, &s)
                        .max(t + Duration::hours(1));
                    g.browse(&s, &mut t2, 1, false);
                }
            }
            Persona::Buyer | Persona::HeatLover => {
                let hot = persona == Persona::HeatLover;
                // Some buyers say they like it mild (a level, free text or a number) and
                // browse more: the mild_explorer segment.
                let mild = !hot && g.rng.random_bool(0.4);
                let sessions = g.rng.random_range(1..4);
                let mut day = first_day;
                for session in 0..sessions {
                    let stated = if mild && session == 0 {
                        let said = ["mild", "not too spicy please", "2500"];
                        Some(json!(said[g.rng.random_range(0..said.len())]))
                    } else if hot {
                        Some(json!(g.rng.random_range(300_000..2_000_000)))
                    } else {
                        None
                    };
                    if let Some(value) = stated {
                        t += Duration::seconds(g.rng.random_range(10..60));
                        g.event(
                            &s,
                            t,
                            "heat_preference",
                            "/quiz",
                            json!({ "value": value, "source": "quiz" }),
                        );
                    }
                    if hot && g.rng.random_bool(0.5) {
                        t += Duration::seconds(20);
                        g.event(&s, t, "poll_answer", "/quiz", json!({ "poll_id": "heat-quiz", "question_id": "favourite_heat", "answer": "extra hot" }));
                    }
                    let views = g.rng.random_range(if mild { 3..5 } else { 1..4 });
                    let seen = g.browse(&s, &mut t, views, hot);
                    let mut cart = Vec::new();
                    for p in seen.into_iter().take(2) {
                        let q = g.rng.random_range(1..3);
                        g.add_to_cart(&s, &mut t, p, q);
                        cart.push((p, q));
                    }
                    if g.rng.random_bool(0.2) && cart.len() > 1 {
                        t += Duration::seconds(40);
                        let (p, q) = cart.remove(1);
                        g.event(
                            &s,
                            t,
                            "remove_from_cart",
                            "/cart",
                            json!({ "sku": p.sku, "quantity": q }),
                        );
                    }
                    g.purchase(&s, &mut t, &cart);
                    day += g.rng.random_range(1..3);
                    if day >= days {
                        break;
                    }
                    t = g
                        .session_start(opts.start, day, &s)
                        .max(t + Duration::hours(2));
                }
            }
            Persona::Churner => {
                // Two busy days, then nothing for the rest of the week.
                for day in 0..2 {
                    t = g
                        .session_start(opts.start, day, &s)
                        .max(t + Duration::minutes(30));
                    let views = g.rng.random_range(2..5);
                    let hot = g.rng.random_bool(0.3);
                    let seen = g.browse(&s, &mut t, views, hot);
                    if day == 0 {
                        if let Some(p) = seen.first().copied() {
                            g.add_to_cart(&s, &mut t, p, 1);
                            g.purchase(&s, &mut t, &[(p, 1)]);
                        }
                    }
                }
            }
            // Never rolled here: lapsed customers are generated after the shoppers.
            Persona::Lapsed => {}
            Persona::Browser => {
                let sessions = g.rng.random_range(1..4);
                for k in 0..sessions {
                    let day = (first_day + k).min(days - 1);
                    t = g
                        .session_start(opts.start, day, &s)
                        .max(t + Duration::minutes(30));
                    let views = g.rng.random_range(0..3);
                    g.browse(&s, &mut t, views, false);
                }
            }
        }
    }
    // A few malformed events, as real clients send them: the API must refuse each one.
    for k in 0..opts.invalid {
        let at = opts.start + Duration::hours(12 + 24 * (k as i64 % days));
        let s = Shopper {
            user_id: format!("u-{:04}", k),
            anonymous_id: None,
            identified: true,
            zone: "Europe/Berlin",
            locale: "de-DE",
            offset_hours: 1,
            agent: AGENTS[0],
        };
        let (kind, payload) = match k % 3 {
            0 => (
                "add_to_cart",
                json!({ "name": "No SKU", "price": "1.00", "currency": "EUR", "quantity": 1 }),
            ),
            1 => (
                "purchase",
                json!({ "order_id": "ord-bad", "total": "12.00", "currency": "euro", "items": [] }),
            ),
            _ => ("teleported", json!({})),
        };
        g.event(&s, at, kind, "/", payload);
    }
    // Lapsed repeat customers: history backfilled before `start`, from their own random
    // stream and generated last (every other event stays byte for byte the same).
    let main_rng = std::mem::replace(
        &mut g.rng,
        ChaCha8Rng::seed_from_u64(opts.seed ^ LAPSED_STREAM),
    );
    for k in 0..opts.lapsed {
        let i = opts.users + k;
        let (zone, offset, locale) = ZONES[g.rng.random_range(0..ZONES.len())];
        let s = Shopper {
            user_id: format!("u-{i:04}"),
            anonymous_id: None,
            identified: true,
            zone,
            locale,
            offset_hours: offset,
            agent: AGENTS[g.rng.random_range(0..AGENTS.len())],
        };
        personas.push((s.user_id.clone(), Persona::Lapsed));
        // First purchase 45–60 days before the sample, the second (their last visit) 35–40
        // (local waking hours: at least ~33.7 days before `start`).
        let first_day = -g.rng.random_range(45..=60);
        let mut t = g.session_start(opts.start, first_day, &s);
        g.event(
            &s,
            t,
            "profile_updated",
            "/account",
            json!({ "email": format!("shopper{i:04}@example.com"), "name": NAMES[i % NAMES.len()], "timezone": zone }),
        );
        t += Duration::seconds(2);
        g.event(
            &s,
            t,
            "consent_changed",
            "/account/preferences",
            json!({ "channel": "email", "granted": true }),
        );
        for day in [first_day, -g.rng.random_range(35..=40)] {
            t = g
                .session_start(opts.start, day, &s)
                .max(t + Duration::minutes(30));
            let hot = g.rng.random_bool(0.3);
            let seen = g.browse(&s, &mut t, 1, hot);
            if let Some(p) = seen.first().copied() {
                g.add_to_cart(&s, &mut t, p, 1);
                g.purchase(&s, &mut t, &[(p, 1)]);
            }
        }
    }
    g.rng = main_rng;
    g.out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    (g.out.into_iter().map(|(_, _, e)| e).collect(), personas)
}

/// The events as JSONL text.
pub fn to_jsonl(events: &[Value]) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_output_and_sorted() {
        let o = GenerateOptions {
            users: 40,
            ..Default::default()
        };
        let (a, personas) = generate(&o);
        let (b, _) = generate(&o);
        assert_eq!(to_jsonl(&a), to_jsonl(&b));
        assert_eq!(personas.len(), 40 + o.lapsed);
        let times: Vec<&str> = a
            .iter()
            .map(|e| e["occurred_at"].as_str().unwrap())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted);
        let other = generate(&GenerateOptions { seed: 8, ..o }).0;
        assert_ne!(to_jsonl(&a), to_jsonl(&other));
    }

    #[test]
    fn events_stay_within_the_window_and_have_unique_ids() {
        let o = GenerateOptions {
            users: 60,
            ..Default::default()
        };
        let (events, personas) = generate(&o);
        let lapsed: std::collections::BTreeSet<&str> = personas
            .iter()
            .filter(|(_, p)| *p == Persona::Lapsed)
            .map(|(u, _)| u.as_str())
            .collect();
        assert_eq!(lapsed.len(), o.lapsed);
        let end = o.start + Duration::days(o.days + 1);
        let mut ids = std::collections::BTreeSet::new();
        for e in &events {
            let t: DateTime<Utc> = e["occurred_at"].as_str().unwrap().parse().unwrap();
            if lapsed.contains(e["user_id"].as_str().unwrap_or_default()) {
                // Backfilled history, all of it over 30 days before the sample starts.
                assert!(t >= o.start - Duration::days(61), "{t}");
                assert!(t < o.start - Duration::days(32), "{t}");
            } else {
                assert!(t >= o.start - Duration::hours(12) && t < end, "{t}");
            }
            assert!(ids.insert(e["event_id"].as_str().unwrap().to_owned()));
        }
        assert!(events.iter().any(|e| e["type"] == "purchase"));
        assert!(events.iter().any(|e| e["type"] == "identify"));
    }

    #[test]
    fn lapsed_customers_are_repeat_buyers_with_consent_and_leave_the_others_unchanged() {
        let o = GenerateOptions {
            users: 30,
            lapsed: 4,
            ..Default::default()
        };
        let (events, personas) = generate(&o);
        for (user, _) in personas.iter().filter(|(_, p)| *p == Persona::Lapsed) {
            let mine: Vec<&Value> = events.iter().filter(|e| e["user_id"] == *user).collect();
            let purchases = mine.iter().filter(|e| e["type"] == "purchase").count();
            assert_eq!(purchases, 2, "{user}");
            assert!(mine
                .iter()
                .any(|e| e["type"] == "consent_changed" && e["payload"]["granted"] == true));
            assert!(mine.iter().any(|e| e["type"] == "profile_updated"
                && e["payload"]["email"]
                    .as_str()
                    .is_some_and(|m| m.contains('@'))));
        }
        // Without lapsed customers, everyone else's events are exactly the same.
        let (plain, _) = generate(&GenerateOptions {
            lapsed: 0,
            ..o.clone()
        });
        let others: Vec<&Value> = events
            .iter()
            .filter(|e| {
                !personas
                    .iter()
                    .any(|(u, p)| *p == Persona::Lapsed && e["user_id"] == *u)
            })
            .collect();
        assert_eq!(others, plain.iter().collect::<Vec<_>>());
    }
}
