//! Normalisation of validated envelopes into typed [`Fact`]s.
//!
//! Every value that later drives a decision is normalised and checked for plausibility here,
//! so the fold and the segment rules only ever see clean data. Implausible values are
//! rejected with a [`Problem`] naming the field.
//!
//! # Heat preference → Scoville heat units (SHU)
//!
//! `heat_preference.value` may be a number, a numeric string, a level or free text:
//!
//! | input                                                         | SHU        |
//! |---------------------------------------------------------------|-----------:|
//! | a number / numeric string (`"50000"`, `"50,000 SHU"`)          | as given, 0 ..= 16 000 000 |
//! | `none`, `no heat`, `not spicy`, `no spice`                      | 0          |
//! | `mild`                                                          | 1 000      |
//! | `medium`                                                        | 10 000     |
//! | `hot`                                                           | 50 000     |
//! | `extra-hot` (`extra hot`, `very hot`)                           | 300 000    |
//!
//! Free text is lower-cased and matched against keywords, first rule wins:
//! 1. negations (`not spicy`, `no heat`, `no spice`, `nothing spicy`, `hate spicy`) → 0;
//! 2. softened heat (`not too hot`, `not very hot`, `not that hot`, `a little`, `a bit`,
//!    `gentle`, `mild`) → 1 000;
//! 3. extremes (`extra hot`, `extra-hot`, `very hot`, `really hot`, `super hot`, `hottest`,
//!    `extreme`, `insane`, `reaper`, `ghost`, `scorpion`, `nuclear`, `melt`) → 300 000;
//! 4. `medium`, `moderate`, `some heat` → 10 000;
//! 5. `hot`, `spicy`, `heat`, `fire` → 50 000.
//!
//! Text matching none of them is rejected. Numbers outside 0 ..= 16 000 000 (pure capsaicin)
//! are rejected as implausible.
//!
//! # Money → minor units
//!
//! Amounts arrive in major units as decimal strings (`"12.50"`) or JSON numbers and are
//! converted exactly (no floating point) to integer minor units using the ISO 4217 exponent:
//! 0 for e.g. JPY, KRW, VND, ISK, CLP; 3 for BHD, IQD, JOD, KWD, LYD, OMR, TND; 2 otherwise.
//! Negative amounts, exponents (`1e3`), more decimals than the currency has, unknown currency
//! codes and amounts above [`MAX_AMOUNT_MAJOR`] are rejected.
//!
//! # UTM and device
//!
//! `utm_*` query parameters of `context.page_url` become [`EnrichedEvent::utm`] (keys kept
//! with their `utm_` prefix, values at most 200 characters). `context.user_agent` is classified
//! by [`device_class`], remembered per thread for agents seen recently
//! ([`remembered_device_class`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::event::{EventHeader, EventType};
use crate::json::{Json, Shape, View};
use crate::schema::Registry;

/// Highest accepted amount in major units (one billion of any currency).
pub const MAX_AMOUNT_MAJOR: i64 = 1_000_000_000;
/// Highest accepted heat preference: pure capsaicin.
pub const MAX_SHU: u32 = 16_000_000;

/// Scoville values of the heat levels (see the module docs).
pub const SHU_NONE: u32 = 0;
pub const SHU_MILD: u32 = 1_000;
pub const SHU_MEDIUM: u32 = 10_000;
pub const SHU_HOT: u32 = 50_000;
pub const SHU_EXTRA_HOT: u32 = 300_000;

/// UTM parameters: `utm_source`, `utm_campaign`, … → value.
pub type Utm<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// A validated, normalised event ready to be folded into a profile. Its strings borrow from
/// the record it was decoded from (`'a`) wherever the record holds them as they are (no JSON
/// escapes, nothing trimmed away but whitespace), so decoding a record copies few of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent<'a> {
    /// The envelope's id, type, identities, time and source; its context and payload are
    /// read into `fact`, `utm` and `device`.
    pub header: EventHeader<'a>,
    pub fact: Fact<'a>,
    /// UTM parameters from `context.page_url` (`utm_source`, `utm_campaign`, …).
    #[serde(default)]
    pub utm: Utm<'a>,
    /// Device class from `context.user_agent`, if one was sent.
    #[serde(default)]
    pub device: Option<DeviceClass>,
}

/// Coarse device class derived from the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Mobile,
    Tablet,
    Desktop,
    Bot,
    Unknown,
}

impl DeviceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Desktop => "desktop",
            DeviceClass::Bot => "bot",
            DeviceClass::Unknown => "unknown",
        }
    }
}

/// Consent channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why an address must not be mailed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    HardBounce,
    Complaint,
    Erasure,
    Unsubscribe,
    /// SES refused the address itself (malformed or non-existent domain).
    InvalidAddress,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::HardBounce,
        SuppressionReason::Complaint,
        SuppressionReason::Erasure,
        SuppressionReason::Unsubscribe,
        SuppressionReason::InvalidAddress,
    ];

    pub fn parse(name: &str) -> Option<SuppressionReason> {
        SuppressionReason::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Erasure => "erasure",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::InvalidAddress => "invalid_address",
        }
    }
}

/// A product as seen on a product page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product<'a> {
    pub sku: Cow<'a, str>,
    pub name: Option<Cow<'a, str>>,
    pub price_minor: Option<i64>,
    pub currency: Option<Cow<'a, str>>,
    pub url: Option<Cow<'a, str>>,
}

/// A cart or order line with its unit price in minor units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem<'a> {
    pub sku: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub quantity: u32,
    pub unit_price_minor: i64,
    pub url: Option<Cow<'a, str>>,
}

/// The normalised content of an event, one variant per event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact<'a> {
    PageView {
        url: Option<Cow<'a, str>>,
        title: Option<Cow<'a, str>>,
    },
    ProductView {
        product: Product<'a>,
    },
    AddToCart {
        item: LineItem<'a>,
        currency: Cow<'a, str>,
    },
    /// Removes `quantity` units, or the whole line when `None`.
    RemoveFromCart {
        sku: Cow<'a, str>,
        quantity: Option<u32>,
    },
    CheckoutStarted {
        checkout_id: Option<Cow<'a, str>>,
        total_minor: Option<i64>,
        currency: Option<Cow<'a, str>>,
    },
    Purchase {
        order_id: Cow<'a, str>,
        total_minor: i64,
        currency: Cow<'a, str>,
        items: Vec<LineItem<'a>>,
    },
    EmailOpened {
        campaign: Cow<'a, str>,
        message_id: Cow<'a, str>,
    },
    EmailClicked {
        campaign: Cow<'a, str>,
        message_id: Cow<'a, str>,
        link: Option<Cow<'a, str>>,
    },
    /// Stated heat preference in Scoville heat units; `stated` is the original input.
    HeatPreference {
        shu: u32,
        stated: Cow<'a, str>,
        source: Option<Cow<'a, str>>,
    },
    PollAnswer {
        poll_id: Option<Cow<'a, str>>,
        question_id: Cow<'a, str>,
        answer: Cow<'a, str>,
    },
    ConsentChanged {
        channel: Channel,
        granted: bool,
    },
    /// The anonymous visitor `anonymous_id` is the user `user_id`.
    Identify {
        user_id: Cow<'a, str>,
        anonymous_id: Cow<'a, str>,
    },
    ProfileUpdated {
        email: Option<Cow<'a, str>>,
        name: Option<Cow<'a, str>>,
        timezone: Option<Cow<'a, str>>,
    },
    EmailSuppressed {
        reason: SuppressionReason,
        message_id: Option<Cow<'a, str>>,
    },
}

/// Parses, validates and enriches one raw record. The record is read into a borrowed
/// [`Json`] (no `Value` is built), and only the header's fields are copied out of it.
pub fn decode<'a>(bytes: &'a [u8], registry: &Registry) -> Result<EnrichedEvent<'a>, Vec<Problem>> {
    let json =
        Json::parse(bytes).map_err(|e| vec![Problem::new("", format!("not valid JSON: {e}"))])?;
    let header = registry.validate_json(&json)?;
    let payload = json.get("payload").unwrap_or(&Json::Null);
    enrich(header, json.get("context"), payload)
}

/// Turns a validated event (its header, its `context` object if it has one, and its payload)
/// into an [`EnrichedEvent`], rejecting implausible values.
pub fn enrich<'a>(
    header: EventHeader<'a>,
    context: Option<&Json<'a>>,
    payload: &Json<'a>,
) -> Result<EnrichedEvent<'a>, Vec<Problem>> {
    let member = |key: &str| context?.get(key);
    let page_url = member("page_url").and_then(Json::text);
    let mut problems = Vec::new();
    let fact = {
        let mut p = Payload {
            value: payload,
            problems: &mut problems,
        };
        fact_of(&header, page_url.as_ref(), &mut p)
    };
    let utm = match page_url.map(utm_of_text) {
        Some(Err(p)) => {
            problems.push(p);
            Utm::new()
        }
        Some(Ok(utm)) => utm,
        None => Utm::new(),
    };
    let device = member("user_agent")
        .and_then(View::as_str)
        .map(remembered_device_class);
    if let Some(tz) = member("timezone").and_then(View::as_str) {
        if let Err(p) = check_timezone(tz, "/context/timezone") {
            problems.push(p);
        }
    }
    match fact {
        Some(fact) if problems.is_empty() => Ok(EnrichedEvent {
            header,
            fact,
            utm,
            device,
        }),
        _ => {
            if problems.is_empty() {
                problems.push(Problem::new("/payload", "payload could not be read"));
            }
            Err(problems)
        }
    }
}

/// Typed access to the payload, recording a problem for every missing or mistyped field.
struct Payload<'p, 'a> {
    value: &'p Json<'a>,
    problems: &'p mut Vec<Problem>,
}

impl<'a> Payload<'_, 'a> {
    fn field<'v>(value: &'v Json<'a>, key: &str) -> Option<&'v Json<'a>> {
        value.get(key).filter(|v| !v.is_null())
    }

    /// A string member, trimmed (borrowed from the record where it can be).
    fn opt_str(&mut self, at: &Json<'a>, base: &str, key: &str) -> Option<Cow<'a, str>> {
        match Self::field(at, key) {
            None => None,
            Some(Json::String(s)) => Some(trimmed(s)),
            Some(_) => {
                self.problems
                    .push(Problem::new(format!("{base}/{key}"), "must be a string"));
                None
            }
        }
    }

    fn str(&mut self, at: &Json<'a>, base: &str, key: &str) -> Option<Cow<'a, str>> {
        let v = self.opt_str(at, base, key);
        if v.as_deref().is_none_or(str::is_empty) {
            if Self::field(at, key).is_none() {
                self.problems
                    .push(Problem::new(format!("{base}/{key}"), "is required"));
            } else if v.is_some() {
                self.problems
                    .push(Problem::new(format!("{base}/{key}"), "must not be empty"));
            }
            return None;
        }
        v
    }

    fn opt_u32(&mut self, at: &Json<'a>, base: &str, key: &str) -> Option<u32> {
        let v = Self::field(at, key)?;
        match v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=1000).contains(n))
        {
            Some(n) => Some(n),
            None => {
                self.problems.push(Problem::new(
                    format!("{base}/{key}"),
                    "must be an integer 1..=1000",
                ));
                None
            }
        }
    }

    fn money(&mut self, at: &Json<'a>, base: &str, key: &str, currency: &str) -> Option<i64> {
        let problem = |m: String| Problem::new(format!("{base}/{key}"), m);
        let Some(v) = Self::field(at, key) else {
            self.problems.push(problem("is required".to_owned()));
            return None;
        };
        to_minor(v, currency)
            .map_err(|m| self.problems.push(problem(m)))
            .ok()
    }

    fn currency(&mut self, at: &Json<'a>, base: &str, key: &str) -> Option<Cow<'a, str>> {
        let c = self.opt_str(at, base, key)?;
        if currency_exponent(&c).is_none() {
            self.problems.push(Problem::new(
                format!("{base}/{key}"),
                format!("unknown ISO 4217 currency '{c}'"),
            ));
            return None;
        }
        Some(c)
    }

    fn line(&mut self, at: &Json<'a>, base: &str, currency: Option<&str>) -> Option<LineItem<'a>> {
        let sku = self.str(at, base, "sku");
        let name = self.str(at, base, "name");
        let quantity = match Self::field(at, "quantity") {
            Some(_) => self.opt_u32(at, base, "quantity"),
            None => {
                self.problems
                    .push(Problem::new(format!("{base}/quantity"), "is required"));
                None
            }
        };
        let price = currency.and_then(|c| self.money(at, base, "price", c));
        let url = self.opt_str(at, base, "url");
        Some(LineItem {
            sku: sku?,
            name: name?,
            quantity: quantity?,
            unit_price_minor: price?,
            url,
        })
    }
}

fn fact_of<'a>(
    header: &EventHeader<'a>,
    page_url: Option<&Cow<'a, str>>,
    p: &mut Payload<'_, 'a>,
) -> Option<Fact<'a>> {
    let v = p.value;
    let b = "/payload";
    Some(match header.event_type {
        EventType::PageView => Fact::PageView {
            url: p.opt_str(v, b, "url").or_else(|| page_url.cloned()),
            title: p.opt_str(v, b, "title"),
        },
        EventType::ProductView => {
            let sku = p.str(v, b, "sku");
            let name = p.opt_str(v, b, "name");
            let currency = p.currency(v, b, "currency");
            let price_minor = match (Payload::field(v, "price"), currency.as_deref()) {
                (None, _) => None,
                (Some(_), Some(c)) => p.money(v, b, "price", c),
                (Some(_), None) => {
                    p.problems
                        .push(Problem::new("/payload/currency", "is required with price"));
                    None
                }
            };
            let url = p.opt_str(v, b, "url").or_else(|| page_url.cloned());
            Fact::ProductView {
                product: Product {
                    sku: sku?,
                    name,
                    price_minor,
                    currency,
                    url,
                },
            }
        }
        EventType::AddToCart => {
            let currency = p.currency(v, b, "currency");
            if currency.is_none() && Payload::field(v, "currency").is_none() {
                p.problems
                    .push(Problem::new("/payload/currency", "is required"));
            }
            let item = p.line(v, b, currency.as_deref());
            Fact::AddToCart {
                item: item?,
                currency: currency?,
            }
        }
        EventType::RemoveFromCart => {
            let sku = p.str(v, b, "sku");
            let quantity = p.opt_u32(v, b, "quantity");
            Fact::RemoveFromCart {
                sku: sku?,
                quantity,
            }
        }
        EventType::CheckoutStarted => {
            let checkout_id = p.opt_str(v, b, "checkout_id");
            let currency = p.currency(v, b, "currency");
            let total_minor = match (Payload::field(v, "total"), currency.as_deref()) {
                (None, _) => None,
                (Some(_), Some(c)) => p.money(v, b, "total", c),
                (Some(_), None) => {
                    p.problems
                        .push(Problem::new("/payload/currency", "is required with total"));
                    None
                }
            };
            Fact::CheckoutStarted {
                checkout_id,
                total_minor,
                currency,
            }
        }
        EventType::Purchase => {
            let order_id = p.str(v, b, "order_id");
            let currency = p.currency(v, b, "currency");
            if currency.is_none() && Payload::field(v, "currency").is_none() {
                p.problems
                    .push(Problem::new("/payload/currency", "is required"));
            }
            let total = currency.as_deref().and_then(|c| p.money(v, b, "total", c));
            let mut items = Vec::new();
            let mut items_ok = true;
            match Payload::field(v, "items").map(View::shape) {
                Some(Shape::Array(list)) => {
                    for (i, item) in list.iter().enumerate() {
                        match p.line(item, &format!("{b}/items/{i}"), currency.as_deref()) {
                            Some(line) => items.push(line),
                            None => items_ok = false,
                        }
                    }
                }
                Some(_) => {
                    p.problems
                        .push(Problem::new("/payload/items", "must be an array"));
                    items_ok = false;
                }
                None => {}
            }
            if !items_ok {
                return None;
            }
            Fact::Purchase {
                order_id: order_id?,
                total_minor: total?,
                currency: currency?,
                items,
            }
        }
        EventType::EmailOpened => {
            let campaign = p.str(v, b, "campaign");
            let message_id = p.str(v, b, "message_id");
            Fact::EmailOpened {
                campaign: campaign?,
                message_id: message_id?,
            }
        }
        EventType::EmailClicked => {
            let campaign = p.str(v, b, "campaign");
            let message_id = p.str(v, b, "message_id");
            let link = p.opt_str(v, b, "link");
            Fact::EmailClicked {
                campaign: campaign?,
                message_id: message_id?,
                link,
            }
        }
        EventType::HeatPreference => {
            let source = p.opt_str(v, b, "source");
            let Some(value) = Payload::field(v, "value") else {
                p.problems
                    .push(Problem::new("/payload/value", "is required"));
                return None;
            };
            match heat_to_shu(value) {
                Ok(shu) => {
                    let stated = match value {
                        Json::String(s) => trimmed(s),
                        other => Cow::Owned(other.to_string()),
                    };
                    Fact::HeatPreference {
                        shu,
                        stated,
                        source,
                    }
                }
                Err(m) => {
                    p.problems.push(Problem::new("/payload/value", m));
                    return None;
                }
            }
        }
        EventType::PollAnswer => {
            let poll_id = p.opt_str(v, b, "poll_id");
            let question_id = p.str(v, b, "question_id");
            let answer = p.str(v, b, "answer");
            Fact::PollAnswer {
                poll_id,
                question_id: question_id?,
                answer: answer?,
            }
        }
        EventType::ConsentChanged => {
            let channel = p.str(v, b, "channel");
            let channel = match channel.as_deref().map(|c| (c, Channel::parse(c))) {
                Some((_, Some(c))) => Some(c),
                Some((c, None)) => {
                    p.problems.push(Problem::new(
                        "/payload/channel",
                        format!("unknown channel '{c}'"),
                    ));
                    None
                }
                None => None,
            };
            let granted = match Payload::field(v, "granted").map(View::shape) {
                Some(Shape::Bool(g)) => Some(g),
                _ => {
                    p.problems
                        .push(Problem::new("/payload/granted", "must be true or false"));
                    None
                }
            };
            Fact::ConsentChanged {
                channel: channel?,
                granted: granted?,
            }
        }
        EventType::Identify => {
            let user_id = p
                .opt_str(v, b, "user_id")
                .or_else(|| header.user_id.clone());
            let anonymous_id = p
                .opt_str(v, b, "anonymous_id")
                .or_else(|| header.anonymous_id.clone());
            if user_id.as_deref().is_none_or(str::is_empty) {
                p.problems
                    .push(Problem::new("/user_id", "identify needs a user_id"));
            }
            if anonymous_id.as_deref().is_none_or(str::is_empty) {
                p.problems.push(Problem::new(
                    "/anonymous_id",
                    "identify needs an anonymous_id",
                ));
            }
            if let (Some(env_user), Some(user)) = (&header.user_id, &user_id) {
                if env_user != user {
                    p.problems.push(Problem::new(
                        "/payload/user_id",
                        "differs from the envelope's user_id",
                    ));
                    return None;
                }
            }
            Fact::Identify {
                user_id: user_id.filter(|s| !s.is_empty())?,
                anonymous_id: anonymous_id.filter(|s| !s.is_empty())?,
            }
        }
        EventType::ProfileUpdated => {
            let email = p.opt_str(v, b, "email");
            let name = p.opt_str(v, b, "name");
            let timezone = p.opt_str(v, b, "timezone");
            let mut ok = true;
            if let Some(e) = &email {
                if !plausible_email(e) {
                    p.problems.push(Problem::new(
                        "/payload/email",
                        "is not a plausible email address",
                    ));
                    ok = false;
                }
            }
            if let Some(tz) = &timezone {
                if let Err(problem) = check_timezone(tz, "/payload/timezone") {
                    p.problems.push(problem);
                    ok = false;
                }
            }
            if email.is_none() && name.is_none() && timezone.is_none() {
                p.problems.push(Problem::new(
                    "/payload",
                    "needs at least one of email, name, timezone",
                ));
                ok = false;
            }
            if !ok {
                return None;
            }
            Fact::ProfileUpdated {
                email: email.map(|e| match e.bytes().any(|b| b.is_ascii_uppercase()) {
                    true => Cow::Owned(e.to_ascii_lowercase()),
                    false => e,
                }),
                name,
                timezone,
            }
        }
        EventType::EmailSuppressed => {
            let reason = match p.str(v, b, "reason").as_deref() {
                Some(name) if SuppressionReason::parse(name).is_some() => {
                    SuppressionReason::parse(name)
                }
                Some(other) => {
                    p.problems.push(Problem::new(
                        "/payload/reason",
                        format!("unknown reason '{other}'"),
                    ));
                    None
                }
                None => None,
            };
            let message_id = p.opt_str(v, b, "message_id");
            Fact::EmailSuppressed {
                reason: reason?,
                message_id,
            }
        }
    })
}

/// A syntactic plausibility check only (one `@`, non-empty local part, dotted domain, no
/// spaces); deliverability is SES's job.
pub fn plausible_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && s.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Accepts IANA time zone names known to the tz database (`Europe/Berlin`, `UTC`).
fn check_timezone(tz: &str, path: &str) -> Result<(), Problem> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| Problem::new(path, format!("'{tz}' is not an IANA time zone name")))
}

const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const THREE_DECIMAL: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
const TWO_DECIMAL: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR",
    "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF",
    "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VES", "WST", "XCD", "YER", "ZAR",
    "ZMW", "ZWL",
];

/// Number of minor-unit digits of an ISO 4217 currency, `None` if the code is unknown.
pub fn currency_exponent(code: &str) -> Option<u32> {
    // Every listed code is three upper-case ASCII letters and the lists are sorted (tested),
    // so each lookup is a binary search over the codes read as big-endian integers, which
    // sort as the strings do: a few integer comparisons instead of a `memcmp` call each.
    fn key(code: &str) -> Option<u32> {
        match code.as_bytes() {
            &[a, b, c] => Some(u32::from_be_bytes([0, a, b, c])),
            _ => None,
        }
    }
    let wanted = key(code)?;
    let listed = |list: &[&str]| list.binary_search_by_key(&Some(wanted), |c| key(c)).is_ok();
    if listed(ZERO_DECIMAL) {
        Some(0)
    } else if listed(THREE_DECIMAL) {
        Some(3)
    } else if listed(TWO_DECIMAL) {
        Some(2)
    } else {
        None
    }
}

/// Converts a major-unit amount (decimal string or JSON number) to minor units, exactly.
pub fn to_minor(amount: &impl View, currency: &str) -> Result<i64, String> {
    let exponent = currency_exponent(currency)
        .ok_or_else(|| format!("unknown ISO 4217 currency '{currency}'"))?;
    let text: Cow<'_, str> = match amount.shape() {
        Shape::String(s) => s.trim().into(),
        // serde_json prints the shortest representation that round-trips, so 12.5 -> "12.5".
        Shape::Number(n) => n.to_string().into(),
        _ => return Err("must be a decimal string or a number".to_owned()),
    };
    if text.starts_with('-') {
        return Err(format!("'{text}' is negative"));
    }
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
        return Err(format!("'{text}' is not a plain decimal amount like 12.50"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > exponent as usize {
        return Err(format!(
            "'{text}' has more decimals than {currency} allows ({exponent})"
        ));
    }
    let int = int.trim_start_matches('0');
    if int.len() > 10 {
        return Err(format!("'{text}' is implausibly large"));
    }
    let major: i64 = if int.is_empty() {
        0
    } else {
        int.parse()
            .map_err(|_| format!("'{text}' is not a number"))?
    };
    if major > MAX_AMOUNT_MAJOR {
        return Err(format!(
            "'{text}' is implausibly large (max {MAX_AMOUNT_MAJOR} {currency})"
        ));
    }
    // `frac` is at most `exponent` (≤ 3) ASCII digits, checked above.
    let minor_frac = crate::digits::fraction(frac.as_bytes(), exponent as usize)
        .ok_or_else(|| format!("'{text}' is not a number"))?;
    Ok(major * 10_i64.pow(exponent) + i64::from(minor_frac))
}

/// Maps a stated heat preference to Scoville heat units (table in the module docs).
pub fn heat_to_shu(value: &impl View) -> Result<u32, String> {
    match value.shape() {
        Shape::Number(n) => {
            let shu = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or("is not a finite number")?;
            shu_in_range(shu)
        }
        Shape::String(s) => {
            let text = s.trim().to_lowercase();
            if text.is_empty() {
                return Err("must not be empty".to_owned());
            }
            if let Some(shu) = numeric_shu(&text) {
                return shu_in_range(shu);
            }
            text_to_shu(&text)
                .ok_or_else(|| format!("could not understand heat preference '{}'", s.trim()))
        }
        _ => Err("must be a number of Scoville units or a text".to_owned()),
    }
}

fn shu_in_range(shu: f64) -> Result<u32, String> {
    if shu < 0.0 {
        Err(format!("{shu} SHU is negative"))
    } else if shu > f64::from(MAX_SHU) {
        Err(format!(
            "{shu} SHU is implausible (max {MAX_SHU}, pure capsaicin)"
        ))
    } else {
        // In range 0..=16e6 by the checks above, so the cast cannot truncate.
        Ok(shu.round() as u32)
    }
}

/// `"50000"`, `"50,000"`, `"50_000 shu"`, `"-5"` → number; anything with letters besides a
/// trailing `shu`/`scoville` → `None` (treated as text).
fn numeric_shu(text: &str) -> Option<f64> {
    let t = text
        .trim_end_matches("scoville")
        .trim_end_matches("shu")
        .trim();
    let t: String = t
        .chars()
        .filter(|c| !matches!(c, ',' | '_' | ' '))
        .collect();
    if t.is_empty() || !t.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Heat phrases and what they mean, strongest claim first: the first list with a phrase in the
/// text decides ("not too hot" is mild although it says "hot"). Every phrase is words of
/// letters, digits or apostrophes joined by single spaces (tested).
const HEAT_PHRASES: [(&[&str], u32); 5] = [
    (HEAT_NONE, SHU_NONE),
    (HEAT_SOFT, SHU_MILD),
    (HEAT_EXTREME, SHU_EXTRA_HOT),
    (HEAT_MEDIUM, SHU_MEDIUM),
    (HEAT_HOT, SHU_HOT),
];
const HEAT_NONE: &[&str] = &[
    "none",
    "no heat",
    "not spicy",
    "no spice",
    "nothing spicy",
    "hate spicy",
    "zero",
    "not at all spicy",
];
const HEAT_SOFT: &[&str] = &[
    "not too hot",
    "not very hot",
    "not that hot",
    "not too spicy",
    "a little",
    "a bit",
    "gentle",
    "mild",
    "little heat",
];
const HEAT_EXTREME: &[&str] = &[
    "extra hot",
    "very hot",
    "really hot",
    "super hot",
    "hottest",
    "extreme",
    "extremely hot",
    "insane",
    "reaper",
    "ghost",
    "scorpion",
    "nuclear",
    "melt",
    "as hot as possible",
    "very spicy",
    "really spicy",
    "super spicy",
];
const HEAT_MEDIUM: &[&str] = &["medium", "moderate", "some heat", "in between", "middle"];
const HEAT_HOT: &[&str] = &["hot", "spicy", "heat", "fire", "fiery"];

/// The words of a heat text: runs of letters, digits and apostrophes (so `-`, `_`, spaces and
/// punctuation all separate words).
fn heat_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
}

/// The Scoville value of a free heat text: the first list of [`HEAT_PHRASES`] one of whose
/// phrases occurs in it as consecutive whole words.
fn text_to_shu(text: &str) -> Option<u32> {
    let words: Vec<&str> = heat_words(text).collect();
    let said = |phrase: &str| {
        let length = phrase.split(' ').count();
        words
            .windows(length)
            .any(|run| run.iter().copied().eq(phrase.split(' ')))
    };
    HEAT_PHRASES
        .iter()
        .find(|(phrases, _)| phrases.iter().any(|p| said(p)))
        .map(|&(_, shu)| shu)
}

/// The `utm_*` query parameters of a page URL. Relative or malformed URLs are a problem.
///
/// A plain `http(s)://host[:port]/…` URL of unreserved ASCII (what shops send) is checked and
/// split by [`plain_url_query`] without building a `url::Url`; any other URL goes through the
/// `url` crate's full WHATWG parser. Both give the same result (property-tested).
pub fn utm_of(page_url: &str) -> Result<Utm<'_>, Problem> {
    match plain_url_query(page_url) {
        Some(query) => Ok(utm_pairs(query)),
        None => {
            let url = url::Url::parse(page_url).map_err(|e| {
                Problem::new("/context/page_url", format!("is not an absolute URL: {e}"))
            })?;
            Ok(owned(utm_pairs(url.query())))
        }
    }
}

/// [`utm_of`] a page URL that may borrow from the record or not.
fn utm_of_text(page_url: Cow<'_, str>) -> Result<Utm<'_>, Problem> {
    match page_url {
        Cow::Borrowed(url) => utm_of(url),
        Cow::Owned(url) => utm_of(&url).map(owned),
    }
}

/// UTM parameters that own their values.
fn owned(utm: Utm<'_>) -> Utm<'static> {
    utm.into_iter()
        .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
        .collect()
}

/// `s` without leading and trailing whitespace, still borrowed if it was.
fn trimmed<'a>(s: &Cow<'a, str>) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    }
}

/// The UTM parameters Ember keeps; query keys match them case-insensitively.
const UTM_KEYS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];

/// Longest UTM value kept, in characters (longer ones are cut).
const UTM_VALUE_CHARS: usize = 200;

fn utm_pairs(query: Option<&str>) -> Utm<'_> {
    let mut utm = Utm::new();
    for (k, v) in query_pairs(query.unwrap_or_default()) {
        let Some(key) = UTM_KEYS.iter().find(|u| u.eq_ignore_ascii_case(&k)) else {
            continue;
        };
        let v = trimmed(&v);
        if !v.is_empty() {
            // At most 200 characters; 200 bytes or fewer are at most 200 characters.
            let kept = if v.len() <= UTM_VALUE_CHARS {
                v
            } else {
                Cow::Owned(v.chars().take(UTM_VALUE_CHARS).collect())
            };
            utm.insert(Cow::Borrowed(*key), kept);
        }
    }
    utm
}

/// The `name=value` pairs of a query, decoded as `application/x-www-form-urlencoded`
/// exactly like `form_urlencoded::parse`; a pair without `%` or `+` decodes to itself, so
/// only the others go through the decoder.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let mut rest = query;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        // One scan per pair finds its end, its first `=` and whether it needs decoding.
        let (mut end, mut equals, mut coded) = (rest.len(), None, false);
        for (at, c) in rest.bytes().enumerate() {
            match c {
                b'&' => {
                    end = at;
                    break;
                }
                b'=' if equals.is_none() => equals = Some(at),
                b'%' | b'+' => coded = true,
                _ => {}
            }
        }
        let pair = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if pair.is_empty() {
            continue;
        }
        if coded {
            if let Some(decoded) = form_urlencoded::parse(pair.as_bytes()).next() {
                return Some(decoded);
            }
            continue;
        }
        let (name, value) = match equals {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, ""),
        };
        return Some((Cow::Borrowed(name), Cow::Borrowed(value)));
    })
}

/// `Some(query)` when `url` is certainly a valid absolute URL whose query the WHATWG parser
/// keeps byte for byte: `http://` or `https://`, a lower-case ASCII domain (labels of `a-z`,
/// `0-9`, `-`; no `xn--` label; the last label starts with a letter, so it is never read
/// as an IPv4 address), an optional port up to 65535, then only printable ASCII that no
/// part of the URL percent-encodes or rewrites. `None` means "not sure": the caller uses the
/// full parser.
fn plain_url_query(url: &str) -> Option<Option<&str>> {
    // One pass over the bytes, left to right: scheme, host labels, port, then the rest.
    let b = url.as_bytes();
    let mut i = if b.starts_with(b"https://") {
        8
    } else if b.starts_with(b"http://") {
        7
    } else {
        return None;
    };
    let mut label = i;
    loop {
        match b.get(i) {
            Some(b'a'..=b'z' | b'0'..=b'9' | b'-') => i += 1,
            end => {
                let text = &b[label..i];
                if text.is_empty() || text.starts_with(b"xn--") {
                    return None;
                }
                if end == Some(&b'.') {
                    i += 1;
                    label = i;
                    continue;
                }
                // The last label: a letter first, so the host is never read as IPv4.
                if !text[0].is_ascii_lowercase() {
                    return None;
                }
                break;
            }
        }
    }
    if b.get(i) == Some(&b':') {
        let digits = i + 1;
        let mut port: u32 = 0;
        i = digits;
        while let Some(&d @ b'0'..=b'9') = b.get(i) {
            port = port * 10 + u32::from(d - b'0');
            i += 1;
            if i - digits > 5 {
                return None;
            }
        }
        if i == digits || port > 65_535 {
            return None;
        }
    }
    if !matches!(b.get(i), None | Some(b'/' | b'?' | b'#')) {
        return None;
    }
    let (mut question, mut fragment) = (None, None);
    for (at, &c) in b.iter().enumerate().skip(i) {
        let kept = c.is_ascii_graphic()
            && !matches!(
                c,
                b'"' | b'\'' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            );
        if !kept {
            return None;
        }
        match c {
            b'?' if question.is_none() && fragment.is_none() => question = Some(at),
            b'#' if fragment.is_none() => fragment = Some(at),
            _ => {}
        }
    }
    // ASCII positions are character boundaries, so slicing here cannot fail.
    Some(question.and_then(|q| url.get(q + 1..fragment.unwrap_or(b.len()))))
}

/// Slots of the per-thread table behind [`remembered_device_class`] (a power of two).
const DEVICE_MEMO_SLOTS: usize = 256;
/// Longest user agent [`remembered_device_class`] keeps, in bytes; longer ones (real agents
/// are 60–300 bytes) are classified every time, so a table holds at most 128 KiB of agents
/// (and 6 KiB of slots).
const DEVICE_MEMO_MAX_LEN: usize = 512;

/// Recently classified user agents: a direct-mapped table (the agent's hash picks its slot;
/// a later agent for the same slot replaces the one there).
struct DeviceMemo {
    hasher: foldhash::fast::RandomState,
    slots: Vec<Option<(Box<str>, DeviceClass)>>,
}

thread_local! {
    static DEVICE_MEMO: std::cell::RefCell<DeviceMemo> = std::cell::RefCell::new(DeviceMemo {
        hasher: foldhash::fast::RandomState::default(),
        slots: vec![None; DEVICE_MEMO_SLOTS],
    });
}

/// [`device_class`], remembered per thread for recently seen agents: the same answer, at the
/// cost of one hash and one comparison when the agent was seen before.
///
/// User agents repeat: every event of a session sends the same one, and browsers that send
/// reduced user-agent strings send one string for all their users of a version. So most
/// records of a batch ask about an agent the thread has already classified (and a Lambda
/// process keeps its thread between invocations). Classifying anew costs ~25 substring
/// searches over the lower-cased agent. An agent that misses (new, evicted, or chosen to
/// collide) is classified as before and copied into its slot: ~11 % more than without the
/// table (`device/*/distinct` in the benches), so a hostile mix of agents cannot cost more.
pub fn remembered_device_class(user_agent: &str) -> DeviceClass {
    if user_agent.len() > DEVICE_MEMO_MAX_LEN {
        return device_class(user_agent);
    }
    DEVICE_MEMO
        .with(|memo| {
            // Only `device_class` runs while the table is borrowed, so this never fails; if it
            // did, the agent would simply be classified without the table.
            let mut memo = memo.try_borrow_mut().ok()?;
            let hash = std::hash::BuildHasher::hash_one(&memo.hasher, user_agent);
            // The top bits pick the slot (foldhash mixes them best).
            let slot = (hash >> (64 - DEVICE_MEMO_SLOTS.trailing_zeros())) as usize;
            let entry = memo.slots.get_mut(slot)?;
            match entry {
                Some((agent, class)) if **agent == *user_agent => Some(*class),
                _ => {
                    let class = device_class(user_agent);
                    *entry = Some((user_agent.into(), class));
                    Some(class)
                }
            }
        })
        .unwrap_or_else(|| device_class(user_agent))
}

/// Classifies a user agent. Rules, first match wins (case-insensitive substrings):
/// empty → unknown; `bot`, `crawler`, `spider`, `slurp`, `curl/`, `wget`, `python-requests`,
/// `headless`, `facebookexternalhit`, `preview` → bot; `ipad`, `tablet`, `kindle`, `silk/`,
/// `playbook`, Android without `mobile` → tablet; `mobi`, `iphone`, `ipod`, `android`,
/// `windows phone`, `blackberry`, `opera mini` → mobile; `windows nt`, `macintosh`, `x11`,
/// `linux`, `cros` → desktop; otherwise unknown.
pub fn device_class(user_agent: &str) -> DeviceClass {
    let ua = user_agent.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| ua.contains(n));
    if ua.trim().is_empty() {
        DeviceClass::Unknown
    } else if any(&[
        "bot",
        "crawler",
        "spider",
        "slurp",
        "curl/",
        "wget",
        "python-requests",
        "headless",
        "facebookexternalhit",
        "preview",
    ]) {
        DeviceClass::Bot
    } else if any(&["ipad", "tablet", "kindle", "silk/", "playbook"])
        || (ua.contains("android") && !ua.contains("mobile"))
    {
        DeviceClass::Tablet
    } else if any(&[
        "mobi",
        "iphone",
        "ipod",
        "android",
        "windows phone",
        "blackberry",
        "opera mini",
    ]) {
        DeviceClass::Mobile
    } else if any(&["windows nt", "macintosh", "x11", "linux", "cros"]) {
        DeviceClass::Desktop
    } else {
        DeviceClass::Unknown
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn registry() -> Registry {
        Registry::embedded().unwrap()
    }

    fn event(t: &str, payload: Value) -> Value {
        json!({"event_id": "e-1", "type": t, "version": 1, "user_id": "u-1",
               "occurred_at": "2026-11-20T10:00:00Z", "source": "web", "payload": payload})
    }

    /// Decodes `v`'s JSON text; the text is leaked so the event can borrow from it.
    fn decode_value(v: &Value) -> Result<EnrichedEvent<'static>, Vec<Problem>> {
        decode(serde_json::to_vec(v).unwrap().leak(), &registry())
    }

    #[test]
    fn money_is_converted_exactly_with_the_currency_exponent() {
        assert_eq!(to_minor(&json!("12.50"), "EUR"), Ok(1250));
        assert_eq!(to_minor(&json!(12.5), "EUR"), Ok(1250));
        assert_eq!(to_minor(&json!(0.1), "USD"), Ok(10));
        assert_eq!(to_minor(&json!("19.99"), "USD"), Ok(1999));
        assert_eq!(to_minor(&json!(1500), "JPY"), Ok(1500));
        assert_eq!(to_minor(&json!("1.234"), "KWD"), Ok(1234));
        assert_eq!(to_minor(&json!("1.5"), "BHD"), Ok(1500));
        assert_eq!(
            to_minor(&json!("12.500"), "EUR"),
            Ok(1250),
            "trailing zeros are fine"
        );
        assert_eq!(to_minor(&json!("0"), "EUR"), Ok(0));
    }

    #[test]
    fn implausible_money_is_rejected() {
        for (amount, currency, needle) in [
            (json!("-1.00"), "EUR", "negative"),
            (json!(-3), "EUR", "negative"),
            (json!("1.005"), "EUR", "more decimals"),
            (json!("1.5"), "JPY", "more decimals"),
            (json!("1e3"), "EUR", "plain decimal"),
            (json!(1e15), "EUR", "implausibly large"),
            (json!("NaN"), "EUR", "plain decimal"),
            (json!("12."), "EUR", "plain decimal"),
            (json!(""), "EUR", "plain decimal"),
            (json!("5000000000"), "EUR", "implausibly large"),
            (json!("99999999999999999999"), "EUR", "implausibly large"),
            (json!("1.00"), "XYZ", "unknown ISO 4217"),
            (json!(true), "EUR", "decimal string or a number"),
        ] {
            let err = to_minor(&amount, currency).unwrap_err();
            assert!(err.contains(needle), "{amount} {currency}: {err}");
        }
    }

    #[test]
    fn heat_levels_map_to_documented_shu() {
        for (input, shu) in [
            (json!("mild"), SHU_MILD),
            (json!("Medium"), SHU_MEDIUM),
            (json!("hot"), SHU_HOT),
            (json!("extra-hot"), SHU_EXTRA_HOT),
            (json!("EXTRA HOT"), SHU_EXTRA_HOT),
            (json!("I like it really hot"), SHU_EXTRA_HOT),
            (json!("not too hot please"), SHU_MILD),
            (json!("I don't like it, nothing spicy"), SHU_NONE),
            (json!("somewhere in between, medium-ish"), SHU_MEDIUM),
            (json!("Give me the Carolina Reaper"), SHU_EXTRA_HOT),
            (json!("spicy!"), SHU_HOT),
            (json!(2500), 2_500),
            (json!(2500.4), 2_500),
            (json!("50,000 SHU"), 50_000),
            (json!("16000000"), MAX_SHU),
            (json!(0), 0),
        ] {
            assert_eq!(heat_to_shu(&input), Ok(shu), "{input}");
        }
    }

    #[test]
    fn implausible_heat_is_rejected() {
        for (input, needle) in [
            (json!(-5), "negative"),
            (json!("-5"), "negative"),
            (json!(16_000_001), "implausible"),
            (json!(1e12), "implausible"),
            (json!("banana"), "could not understand"),
            (json!("   "), "empty"),
            (json!(true), "number of Scoville"),
        ] {
            let err = heat_to_shu(&input).unwrap_err();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn device_classes() {
        for (ua, class) in [
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", DeviceClass::Mobile),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36", DeviceClass::Mobile),
            ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15", DeviceClass::Tablet),
            ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", DeviceClass::Tablet),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", DeviceClass::Desktop),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15", DeviceClass::Desktop),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", DeviceClass::Desktop),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", DeviceClass::Bot),
            ("curl/8.4.0", DeviceClass::Bot),
            ("", DeviceClass::Unknown),
            ("SomethingElse/1.0", DeviceClass::Unknown),
        ] {
            assert_eq!(device_class(ua), class, "{ua}");
        }
    }

    /// 2,000 agents of every class fill the 256 slots many times over, so slots are shared
    /// and replaced; every answer, first or repeated, must be `device_class`'s.
    #[test]
    fn remembered_device_classes_are_device_classes() {
        let platforms = [
            "iPhone; CPU iPhone OS 17_0 like Mac OS X",
            "iPad; CPU OS 17_0 like Mac OS X",
            "Linux; Android 14; Pixel 8",
            "Linux; Android 13; SM-X700",
            "Windows NT 10.0; Win64; x64",
            "X11; Linux x86_64",
            "compatible; Googlebot/2.1",
            "SomethingElse",
        ];
        let agents: Vec<String> = (0..2_000)
            .map(|i| {
                let tail = if i % 3 == 0 { " Mobile" } else { "" };
                format!(
                    "Mozilla/5.0 ({}) Build/{i}{tail}",
                    platforms[i % platforms.len()]
                )
            })
            .collect();
        let classes: std::collections::BTreeSet<_> =
            agents.iter().map(|a| device_class(a).as_str()).collect();
        assert_eq!(classes.len(), 5, "{classes:?}");
        for round in 0..3 {
            for (i, agent) in agents.iter().enumerate() {
                // Repeats right away, and after other agents took the slot.
                let again = &agents[(i * 7 + round) % agents.len()];
                for a in [agent, agent, again] {
                    assert_eq!(remembered_device_class(a), device_class(a), "{a}");
                }
            }
        }
        let long = format!("Mozilla/5.0 (iPhone) {}", "x".repeat(DEVICE_MEMO_MAX_LEN));
        assert_eq!(remembered_device_class(&long), DeviceClass::Mobile);
        assert_eq!(remembered_device_class(""), DeviceClass::Unknown);
    }

    /// The table keeps what it classified (agents up to the length limit), so a repeat is
    /// answered from it; the test threads have a table each.
    #[test]
    fn remembered_agents_are_kept_in_the_thread_table() {
        let kept = |agent: &str| {
            DEVICE_MEMO.with(|m| {
                m.borrow()
                    .slots
                    .iter()
                    .flatten()
                    .any(|(a, _)| &**a == agent)
            })
        };
        let agent = "Mozilla/5.0 (X11; Linux x86_64) remembered-test";
        let long = format!("Mozilla/5.0 (X11) {}", "y".repeat(DEVICE_MEMO_MAX_LEN));
        assert!(!kept(agent));
        assert_eq!(remembered_device_class(agent), DeviceClass::Desktop);
        assert!(kept(agent));
        assert_eq!(remembered_device_class(&long), DeviceClass::Desktop);
        assert!(!kept(&long));
    }

    /// What [`text_to_shu`] did before it compared words: a search for each phrase, padded
    /// with spaces, in the words joined by single spaces.
    fn text_to_shu_by_padded_search(text: &str) -> Option<u32> {
        let normalised = text.replace(['-', '_'], " ");
        let words: Vec<&str> = normalised
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .collect();
        let joined = format!(" {} ", words.join(" "));
        HEAT_PHRASES
            .iter()
            .find(|(phrases, _)| phrases.iter().any(|p| joined.contains(&format!(" {p} "))))
            .map(|&(_, shu)| shu)
    }

    #[test]
    fn heat_phrases_are_single_spaced_words() {
        for (phrases, _) in HEAT_PHRASES {
            for p in phrases {
                assert!(!p.is_empty(), "empty phrase");
                assert_eq!(heat_words(p).collect::<Vec<_>>().join(" "), *p);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Phrases, parts of phrases and other words, with any separators between them.
        #[test]
        fn heat_texts_read_like_a_padded_phrase_search(
            parts in proptest::collection::vec(
                (
                    "not|too|hot|a|bit|little|no|heat|very|spicy|extra|at|all|some|mild|hothot|shot|in|between|x'y|é",
                    "[ _,.!'-]{1,2}",
                ),
                0..7,
            ),
        ) {
            let text: String = parts.iter().map(|(w, sep)| format!("{w}{sep}")).collect();
            proptest::prop_assert_eq!(text_to_shu(&text), text_to_shu_by_padded_search(&text), "{:?}", text);
        }
    }

    #[test]
    fn heat_phrases_match_whole_words_only() {
        assert_eq!(text_to_shu("not too hot"), Some(SHU_MILD));
        assert_eq!(text_to_shu("not-too_hot!"), Some(SHU_MILD));
        assert_eq!(text_to_shu("hothot"), None);
        assert_eq!(text_to_shu("shot hot"), Some(SHU_HOT));
        assert_eq!(text_to_shu("a bitter"), None);
        assert_eq!(text_to_shu("no no heat"), Some(SHU_NONE));
        assert_eq!(text_to_shu(""), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Percent signs, pluses, escapes (valid, invalid, non-UTF-8), `=` and `&` in any mix.
        #[test]
        fn query_pairs_decode_like_form_urlencoded(
            query in "([a-cu_=&+]|%(2[0-9B]|3D|26|C3|A9|FF|4)|é){0,24}",
        ) {
            let ours: Vec<(String, String)> = query_pairs(&query)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn strings_borrow_from_the_record_unless_escaped_and_read_the_same_either_way() {
        let plain = br#"{"event_id":"e-1","type":"add_to_cart","version":1,"user_id":"u-1",
            "occurred_at":"2026-11-20T10:00:00Z","source":"web",
            "context":{"page_url":"https://shop.example/p?utm_source=ig&utm_term=%20x"},
            "payload":{"sku":" HS-1 ","name":"Reaper","price":"9.50","currency":"EUR","quantity":1}}"#;
        // The same event with every string written with escape sequences.
        let escaped = br#"{"event_id":"e\u002d1","type":"add_to_cart","version":1,"user_id":"u\u002d1",
            "occurred_at":"2026-11-20T10:00:00Z","source":"w\u0065b",
            "context":{"page_url":"https:\/\/shop.example\/p?utm_source=\u0069g&utm_term=%20x"},
            "payload":{"sku":" HS\u002d1 ","name":"Re\u0061per","price":"9.50","currency":"E\u0055R","quantity":1}}"#;
        let a = decode(plain, &registry()).unwrap();
        let b = decode(escaped, &registry()).unwrap();
        assert_eq!(a, b);
        let borrowed = |c: &Cow<'_, str>| matches!(c, Cow::Borrowed(_));
        let Fact::AddToCart { item, currency } = &a.fact else {
            panic!("{a:?}")
        };
        assert_eq!(item.sku, "HS-1", "trimmed");
        assert!(borrowed(&a.header.event_id) && borrowed(&item.sku) && borrowed(currency));
        assert!(borrowed(&a.utm["utm_source"]));
        assert_eq!(a.utm["utm_term"], "x");
        assert!(!borrowed(&a.utm["utm_term"]), "percent-decoded: a copy");
        let Fact::AddToCart { item, .. } = &b.fact else {
            panic!("{b:?}")
        };
        assert!(!borrowed(&b.header.event_id) && !borrowed(&item.sku));
    }

    #[test]
    fn utm_values_are_cut_at_200_characters_not_bytes() {
        let kept = |value: &str| {
            let url = format!("https://shop.example/?utm_term={value}");
            utm_of(&url)
                .unwrap()
                .remove("utm_term")
                .unwrap()
                .into_owned()
        };
        for n in [199, 200] {
            assert_eq!(kept(&"a".repeat(n)), "a".repeat(n));
        }
        assert_eq!(kept(&"a".repeat(201)), "a".repeat(200));
        // Two bytes per character: 150 characters (300 bytes) stay whole, 250 are cut to 200.
        assert_eq!(kept(&"é".repeat(150)), "é".repeat(150));
        assert_eq!(kept(&"é".repeat(250)), "é".repeat(200));
        assert_eq!(kept(&"%C3%A9".repeat(201)), "é".repeat(200));
    }

    #[test]
    fn utm_parameters_are_extracted() {
        let utm = utm_of("https://shop.example/p?utm_source=news&UTM_Medium=email&utm_campaign=Ghost%20Week&x=1&utm_term=").unwrap();
        assert_eq!(utm.len(), 3);
        assert_eq!(utm["utm_source"], "news");
        assert_eq!(utm["utm_medium"], "email");
        assert_eq!(utm["utm_campaign"], "Ghost Week");
        assert!(utm_of("/relative/path").is_err());
    }

    #[test]
    fn currency_lists_are_sorted_and_disjoint() {
        for list in [ZERO_DECIMAL, THREE_DECIMAL, TWO_DECIMAL] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
        let all = [ZERO_DECIMAL, THREE_DECIMAL, TWO_DECIMAL].concat();
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        for code in &all {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "{code}"
            );
        }
        // Every three-letter code: listed ones get their list's exponent, the rest none.
        let letters = b'A'..=b'Z';
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = String::from_utf8(vec![a, b, c]).unwrap_or_default();
                    let expected = [(ZERO_DECIMAL, 0), (THREE_DECIMAL, 3), (TWO_DECIMAL, 2)]
                        .iter()
                        .find(|(list, _)| list.contains(&code.as_str()))
                        .map(|&(_, exponent)| exponent);
                    assert_eq!(currency_exponent(&code), expected, "{code}");
                }
            }
        }
        assert_eq!(currency_exponent("EURO"), None);
        assert_eq!(currency_exponent("EU"), None);
        assert_eq!(currency_exponent(""), None);
        assert_eq!(currency_exponent("eur"), None);
    }

    /// What the full WHATWG parser makes of a URL: `Some(query)` if it is valid.
    fn whatwg_query(u: &str) -> Option<Option<String>> {
        url::Url::parse(u)
            .ok()
            .map(|p| p.query().map(str::to_owned))
    }

    #[test]
    fn the_plain_url_shortcut_agrees_with_the_url_parser_on_edge_cases() {
        let plain = [
            "https://shop.example",
            "http://shop.example/",
            "https://shop.example:8443/p/HS-1?utm_source=a+b&utm_campaign=%C3%A9t%C3%A9#top?x=1",
            "https://a-b.c0.example/?",
            "https://1.2.3.example/p?%zz=1&utm_term=%",
            "https://shop.example#only-fragment",
            "https://shop.example/p#top?utm_source=x",
            "https://shop.example#?utm_source=x",
            "https://shop.example?#",
            "https://shop.example:0/?a=1?b=2#c#d",
        ];
        for u in plain {
            let q = plain_url_query(u).unwrap_or_else(|| panic!("{u} is plain"));
            assert_eq!(whatwg_query(u), Some(q.map(str::to_owned)), "{u}");
        }
        let not_plain = [
            "https://1.2.3.4/p?utm_source=x",
            "https://1.2.3.400/",
            "https://shop.123/",
            "https://shop.0x1f/",
            "https://Shop.Example/",
            "https://xn--mnchen-3ya.example/",
            "https://shop..example/",
            "https://shop.example./",
            "https://user@shop.example/",
            "https://shop.example:65536/",
            "https://shop.example:/",
            "https://shop.example/a b",
            "https://shop.example/?q='x'",
            "https://shop.example/\\p",
            "https://shop.example/\tp",
            "https://shop.example/\u{e9}",
            " https://shop.example/",
            "HTTPS://shop.example/",
            "ftp://shop.example/",
            "https:shop.example",
            "/relative",
        ];
        for u in not_plain {
            assert_eq!(plain_url_query(u), None, "{u}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Whenever the shortcut answers, the URL is valid and its query is the parser's,
        /// so `utm_of` returns the same parameters either way.
        #[test]
        fn the_plain_url_shortcut_never_disagrees_with_the_url_parser(
            scheme in "https://|http://|https://|http://|HTTPS://|ftp://",
            // Mostly plain, with at most one odd character in the host and one in the tail.
            host in "([a-z0-9-]{1,4}\\.){0,2}[a-zA-Z0-9_.:@-]?[a-z][a-z0-9-]{0,4}(:[0-9]{0,6})?",
            tail in "(/[a-z0-9._~%-]{0,5})?(\\?[a-z0-9=&%+._~-]{0,6})?[ '\"<>\\^`{|}\t\u{e9}/?#&=%+a-z]?[a-z0-9=&#?]{0,3}",
        ) {
            let u = format!("{scheme}{host}{tail}");
            if let Some(q) = plain_url_query(&u) {
                proptest::prop_assert_eq!(whatwg_query(&u), Some(q.map(str::to_owned)));
                let parsed = url::Url::parse(&u).unwrap();
                let full = utm_pairs(parsed.query());
                proptest::prop_assert_eq!(utm_of(&u).unwrap(), full);
            }
        }

        /// Any text, asked twice: the remembered class is the computed one.
        #[test]
        fn remembered_device_class_of_any_text(agent in "\\PC{0,80}") {
            proptest::prop_assert_eq!(remembered_device_class(&agent), device_class(&agent));
            proptest::prop_assert_eq!(remembered_device_class(&agent), device_class(&agent));
        }

        /// Any text at all gets an answer (parameters or a problem), never a panic.
        #[test]
        fn utm_of_takes_any_text(url in "(https?://)?\\PC{0,40}") {
            let _ = utm_of(&url);
        }

        #[test]
        fn plain_shop_urls_take_the_shortcut(
            host in "[a-z][a-z0-9-]{0,8}(\\.[a-z0-9-]{1,8}){0,2}\\.[a-z]{2,6}",
            path in "(/[a-zA-Z0-9._~-]{0,10}){0,3}",
            source in "[a-zA-Z0-9%+._-]{0,12}",
        ) {
            proptest::prop_assume!(!host.contains("xn--"));
            let u = format!("https://{host}{path}?utm_source={source}&x=1");
            let q = plain_url_query(&u);
            proptest::prop_assert!(q.is_some(), "{} was not plain", u);
            proptest::prop_assert_eq!(whatwg_query(&u), q.map(|q| q.map(str::to_owned)));
        }
    }

    #[test]
    fn add_to_cart_is_normalised() {
        let mut v = event(
            "add_to_cart",
            json!({"sku": "HS-1", "name": "Ghost", "price": "12.50", "currency": "EUR", "quantity": 2}),
        );
        v["context"] = json!({"page_url": "https://shop.example/?utm_source=ig", "user_agent": "Mozilla/5.0 (iPhone; Mobile)"});
        let e = decode_value(&v).unwrap();
        assert_eq!(
            e.fact,
            Fact::AddToCart {
                item: LineItem {
                    sku: "HS-1".into(),
                    name: "Ghost".into(),
                    quantity: 2,
                    unit_price_minor: 1250,
                    url: None
                },
                currency: "EUR".into()
            }
        );
        assert_eq!(e.utm.get("utm_source").map(|v| &**v), Some("ig"));
        assert_eq!(e.device, Some(DeviceClass::Mobile));
    }

    #[test]
    fn purchase_problems_name_the_item() {
        let v = event(
            "purchase",
            json!({"order_id": "o-1", "total": "10.50", "currency": "JPY",
                   "items": [{"sku": "A", "name": "A", "price": "10.5", "quantity": 1}]}),
        );
        let problems = decode_value(&v).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/payload/total", "/payload/items/0/price"],
            "{problems:?}"
        );
    }

    #[test]
    fn purchase_is_normalised() {
        let v = event(
            "purchase",
            json!({"order_id": "o-1", "total": 25, "currency": "EUR",
                   "items": [{"sku": "A", "name": "A", "price": "12.50", "quantity": 2}]}),
        );
        let Fact::Purchase {
            total_minor,
            currency,
            items,
            ..
        } = decode_value(&v).unwrap().fact
        else {
            panic!()
        };
        assert_eq!(
            (total_minor, currency.as_ref(), items[0].unit_price_minor),
            (2500, "EUR", 1250)
        );
    }

    #[test]
    fn unknown_currency_is_a_problem() {
        let v = event(
            "add_to_cart",
            json!({"sku": "A", "name": "A", "price": "1", "currency": "ABC", "quantity": 1}),
        );
        let problems = decode_value(&v).unwrap_err();
        assert_eq!(
            problems,
            vec![Problem::new(
                "/payload/currency",
                "unknown ISO 4217 currency 'ABC'"
            )]
        );
    }

    #[test]
    fn heat_preference_problems_point_at_the_value() {
        let problems = decode_value(&event("heat_preference", json!({"value": -10}))).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "/payload/value");
        let e = decode_value(&event(
            "heat_preference",
            json!({"value": "I like it really hot"}),
        ))
        .unwrap();
        assert!(matches!(
            e.fact,
            Fact::HeatPreference {
                shu: SHU_EXTRA_HOT,
                ..
            }
        ));
    }

    #[test]
    fn identify_takes_ids_from_the_envelope() {
        let mut v = event("identify", json!({}));
        v["anonymous_id"] = json!("a-9");
        let e = decode_value(&v).unwrap();
        assert_eq!(
            e.fact,
            Fact::Identify {
                user_id: "u-1".into(),
                anonymous_id: "a-9".into()
            }
        );
        let problems = decode_value(&event("identify", json!({}))).unwrap_err();
        assert_eq!(problems[0].path, "/anonymous_id");
    }

    #[test]
    fn profile_updated_checks_email_and_timezone() {
        let e = decode_value(&event(
            "profile_updated",
            json!({"email": "Ana@Example.COM", "timezone": "Europe/Berlin"}),
        ))
        .unwrap();
        assert_eq!(
            e.fact,
            Fact::ProfileUpdated {
                email: Some("ana@example.com".into()),
                name: None,
                timezone: Some("Europe/Berlin".into())
            }
        );
        let problems = decode_value(&event(
            "profile_updated",
            json!({"email": "not an email", "timezone": "Mars/Olympus"}),
        ))
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["/payload/email", "/payload/timezone"]);
    }

    #[test]
    fn consent_and_suppression_are_typed() {
        let e = decode_value(&event(
            "consent_changed",
            json!({"channel": "email", "granted": false}),
        ))
        .unwrap();
        assert_eq!(
            e.fact,
            Fact::ConsentChanged {
                channel: Channel::Email,
                granted: false
            }
        );
        let e = decode_value(&event("email_suppressed", json!({"reason": "complaint"}))).unwrap();
        assert_eq!(
            e.fact,
            Fact::EmailSuppressed {
                reason: SuppressionReason::Complaint,
                message_id: None
            }
        );
        let problems =
            decode_value(&event("email_suppressed", json!({"reason": "bored"}))).unwrap_err();
        assert_eq!(problems[0].path, "/payload/reason");
    }

    #[test]
    fn bad_json_and_bad_page_url_are_problems() {
        let problems = decode(b"{not json", &registry()).unwrap_err();
        assert!(problems[0].message.starts_with("not valid JSON"));
        let mut v = event("page_view", json!({}));
        v["context"] = json!({"page_url": "not a url"});
        let problems = decode_value(&v).unwrap_err();
        assert_eq!(problems[0].path, "/context/page_url");
    }

    #[test]
    fn every_type_has_a_fixture_that_enriches() {
        let payloads = [
            ("page_view", json!({"title": "Home"})),
            (
                "product_view",
                json!({"sku": "A", "price": 3, "currency": "USD"}),
            ),
            (
                "add_to_cart",
                json!({"sku": "A", "name": "A", "price": 3, "currency": "USD", "quantity": 1}),
            ),
            ("remove_from_cart", json!({"sku": "A"})),
            (
                "checkout_started",
                json!({"total": "3.00", "currency": "USD"}),
            ),
            (
                "purchase",
                json!({"order_id": "o", "total": 3, "currency": "USD", "items": []}),
            ),
            ("email_opened", json!({"campaign": "c", "message_id": "m"})),
            (
                "email_clicked",
                json!({"campaign": "c", "message_id": "m", "link": "https://x.example"}),
            ),
            ("heat_preference", json!({"value": "medium"})),
            (
                "poll_answer",
                json!({"question_id": "q", "answer": "smoky"}),
            ),
            (
                "consent_changed",
                json!({"channel": "sms", "granted": true}),
            ),
            ("identify", json!({"anonymous_id": "a"})),
            ("profile_updated", json!({"name": "Ana"})),
            ("email_suppressed", json!({"reason": "hard_bounce"})),
        ];
        assert_eq!(payloads.len(), EventType::ALL.len());
        for (t, p) in payloads {
            let e = decode_value(&event(t, p)).unwrap_or_else(|e| panic!("{t}: {e:?}"));
            assert_eq!(e.header.event_type.as_str(), t);
        }
    }
}
