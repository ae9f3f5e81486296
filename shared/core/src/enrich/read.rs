//! Reading a validated payload into its [`Fact`]: typed field access that records a problem
//! for every missing or mistyped field, one reader per event type.

use std::borrow::Cow;

use serde_json::Value;

use crate::consent::{Channel, SuppressionReason};
use crate::error::Problem;
use crate::event::{EventHeader, EventType};

use super::fact::{Fact, LineItem, Product};
use super::heat::heat_to_shu;
use super::money::{currency_exponent, to_minor};

/// A string read from the payload, trimmed.
type Text = Cow<'static, str>;

/// Typed access to the payload, recording a problem for every missing or mistyped field.
pub(super) struct Payload<'p> {
    pub(super) value: &'p Value,
    pub(super) problems: &'p mut Vec<Problem>,
}

impl Payload<'_> {
    /// An optional amount in `currency`; given without a currency it is a problem.
    fn amount(
        &mut self,
        v: &Value,
        base: &str,
        field: &str,
        currency: Option<&str>,
    ) -> Option<i64> {
        match (Self::field(v, field), currency) {
            (None, _) => None,
            (Some(_), Some(c)) => self.money(v, base, field, c),
            (Some(_), None) => {
                self.problems.push(Problem::new(
                    format!("{base}/currency"),
                    format!("is required with {field}"),
                ));
                None
            }
        }
    }

    /// The `currency` field, which must be there.
    fn required_currency(&mut self, v: &Value, base: &str) -> Option<Text> {
        let currency = self.currency(v, base, "currency");
        if currency.is_none() && Self::field(v, "currency").is_none() {
            self.problems
                .push(Problem::new(format!("{base}/currency"), "is required"));
        }
        currency
    }

    fn field<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
        value.get(key).filter(|v| !v.is_null())
    }

    /// A string member, trimmed.
    fn opt_str(&mut self, at: &Value, base: &str, key: &str) -> Option<Text> {
        match Self::field(at, key) {
            None => None,
            Some(Value::String(s)) => Some(Cow::Owned(s.trim().to_owned())),
            Some(_) => {
                self.problems
                    .push(Problem::new(format!("{base}/{key}"), "must be a string"));
                None
            }
        }
    }

    fn str(&mut self, at: &Value, base: &str, key: &str) -> Option<Text> {
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

    fn opt_u32(&mut self, at: &Value, base: &str, key: &str) -> Option<u32> {
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

    fn money(&mut self, at: &Value, base: &str, key: &str, currency: &str) -> Option<i64> {
        let problem = |m: String| Problem::new(format!("{base}/{key}"), m);
        let Some(v) = Self::field(at, key) else {
            self.problems.push(problem("is required".to_owned()));
            return None;
        };
        to_minor(v, currency)
            .map_err(|m| self.problems.push(problem(m)))
            .ok()
    }

    fn currency(&mut self, at: &Value, base: &str, key: &str) -> Option<Text> {
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

    fn line(
        &mut self,
        at: &Value,
        base: &str,
        currency: Option<&str>,
    ) -> Option<LineItem<'static>> {
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

/// What the readers need besides the payload.
pub(super) struct Read<'r> {
    header: &'r EventHeader<'static>,
    /// `context.page_url`, the default of a page's or product's own URL.
    page_url: Option<&'r Text>,
}

pub(super) fn fact_of(
    header: &EventHeader<'static>,
    page_url: Option<&Text>,
    p: &mut Payload<'_>,
) -> Option<Fact<'static>> {
    // One reader per event type: the payload's fields into its fact, every problem recorded.
    let r = Read { header, page_url };
    match header.event_type {
        EventType::PageView => page_view(p, &r),
        EventType::ProductView => product_view(p, &r),
        EventType::AddToCart => add_to_cart(p, &r),
        EventType::RemoveFromCart => remove_from_cart(p, &r),
        EventType::CheckoutStarted => checkout_started(p, &r),
        EventType::Purchase => purchase(p, &r),
        EventType::EmailOpened => email_opened(p, &r),
        EventType::EmailClicked => email_clicked(p, &r),
        EventType::HeatPreference => heat_preference(p, &r),
        EventType::PollAnswer => poll_answer(p, &r),
        EventType::ConsentChanged => consent_changed(p, &r),
        EventType::Identify => identify(p, &r),
        EventType::ProfileUpdated => profile_updated(p, &r),
        EventType::EmailSuppressed => email_suppressed(p, &r),
        EventType::Refund => refund(p, &r),
        EventType::CampaignAssigned => campaign_assigned(p, &r),
    }
}

fn page_view(p: &mut Payload<'_>, r: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    Some(Fact::PageView {
        url: p.opt_str(v, b, "url").or_else(|| r.page_url.cloned()),
        title: p.opt_str(v, b, "title"),
    })
}

fn product_view(p: &mut Payload<'_>, r: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let sku = p.str(v, b, "sku");
    let name = p.opt_str(v, b, "name");
    let currency = p.currency(v, b, "currency");
    let price_minor = p.amount(v, b, "price", currency.as_deref());
    let url = p.opt_str(v, b, "url").or_else(|| r.page_url.cloned());
    Some(Fact::ProductView {
        product: Product {
            sku: sku?,
            name,
            price_minor,
            currency,
            url,
        },
    })
}

fn add_to_cart(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let currency = p.required_currency(v, b);
    let item = p.line(v, b, currency.as_deref());
    Some(Fact::AddToCart {
        item: item?,
        currency: currency?,
    })
}

fn remove_from_cart(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let sku = p.str(v, b, "sku");
    let quantity = p.opt_u32(v, b, "quantity");
    Some(Fact::RemoveFromCart {
        sku: sku?,
        quantity,
    })
}

fn checkout_started(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let checkout_id = p.opt_str(v, b, "checkout_id");
    let currency = p.currency(v, b, "currency");
    let total_minor = p.amount(v, b, "total", currency.as_deref());
    Some(Fact::CheckoutStarted {
        checkout_id,
        total_minor,
        currency,
    })
}

fn purchase(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let order_id = p.str(v, b, "order_id");
    let currency = p.required_currency(v, b);
    let total = currency.as_deref().and_then(|c| p.money(v, b, "total", c));
    let mut items = Vec::new();
    let mut items_ok = true;
    match Payload::field(v, "items") {
        Some(Value::Array(list)) => {
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
    Some(Fact::Purchase {
        order_id: order_id?,
        total_minor: total?,
        currency: currency?,
        items,
    })
}

fn email_opened(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let campaign = p.str(v, b, "campaign");
    let message_id = p.str(v, b, "message_id");
    Some(Fact::EmailOpened {
        campaign: campaign?,
        message_id: message_id?,
    })
}

fn email_clicked(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let campaign = p.str(v, b, "campaign");
    let message_id = p.str(v, b, "message_id");
    let link = p.opt_str(v, b, "link");
    Some(Fact::EmailClicked {
        campaign: campaign?,
        message_id: message_id?,
        link,
    })
}

fn heat_preference(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let source = p.opt_str(v, b, "source");
    let Some(value) = Payload::field(v, "value") else {
        p.problems
            .push(Problem::new("/payload/value", "is required"));
        return None;
    };
    Some(match heat_to_shu(value) {
        Ok(shu) => {
            let stated = match value {
                Value::String(s) => s.trim().to_owned(),
                other => other.to_string(),
            };
            Fact::HeatPreference {
                shu,
                stated: Cow::Owned(stated),
                source,
            }
        }
        Err(m) => {
            p.problems.push(Problem::new("/payload/value", m));
            return None;
        }
    })
}

fn poll_answer(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let poll_id = p.opt_str(v, b, "poll_id");
    let question_id = p.str(v, b, "question_id");
    let answer = p.str(v, b, "answer");
    Some(Fact::PollAnswer {
        poll_id,
        question_id: question_id?,
        answer: answer?,
    })
}

fn consent_changed(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
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
    let granted = match Payload::field(v, "granted") {
        Some(Value::Bool(g)) => Some(*g),
        _ => {
            p.problems
                .push(Problem::new("/payload/granted", "must be true or false"));
            None
        }
    };
    Some(Fact::ConsentChanged {
        channel: channel?,
        granted: granted?,
    })
}

fn identify(p: &mut Payload<'_>, r: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let user_id = p
        .opt_str(v, b, "user_id")
        .or_else(|| r.header.user_id.clone());
    let anonymous_id = p
        .opt_str(v, b, "anonymous_id")
        .or_else(|| r.header.anonymous_id.clone());
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
    if let (Some(env_user), Some(user)) = (&r.header.user_id, &user_id) {
        if env_user != user {
            p.problems.push(Problem::new(
                "/payload/user_id",
                "differs from the envelope's user_id",
            ));
            return None;
        }
    }
    Some(Fact::Identify {
        user_id: user_id.filter(|s| !s.is_empty())?,
        anonymous_id: anonymous_id.filter(|s| !s.is_empty())?,
    })
}

fn profile_updated(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
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
    Some(Fact::ProfileUpdated {
        email: email.map(|e| match e.bytes().any(|b| b.is_ascii_uppercase()) {
            true => Cow::Owned(e.to_ascii_lowercase()),
            false => e,
        }),
        name,
        timezone,
    })
}

fn email_suppressed(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let reason = match p.str(v, b, "reason").as_deref() {
        Some(name) if SuppressionReason::parse(name).is_some() => SuppressionReason::parse(name),
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
    Some(Fact::EmailSuppressed {
        reason: reason?,
        message_id,
    })
}

fn refund(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let order_id = p.str(v, b, "order_id");
    let currency = p.required_currency(v, b);
    let amount = currency.as_deref().and_then(|c| p.money(v, b, "amount", c));
    if amount.is_some_and(|a| a <= 0) {
        p.problems
            .push(Problem::new("/payload/amount", "must be positive"));
        return None;
    }
    Some(Fact::Refund {
        order_id: order_id?,
        amount_minor: amount?,
        currency: currency?,
    })
}

fn campaign_assigned(p: &mut Payload<'_>, _: &Read<'_>) -> Option<Fact<'static>> {
    let v = p.value;
    let b = "/payload";
    let campaign = p.str(v, b, "campaign");
    let group = p.str(v, b, "group");
    let hours = match Payload::field(v, "attribution_hours").map(Value::as_u64) {
        Some(Some(h)) if (1..=720).contains(&h) => u32::try_from(h).ok(),
        _ => {
            p.problems.push(Problem::new(
                "/payload/attribution_hours",
                "must be an integer 1..=720",
            ));
            None
        }
    };
    Some(Fact::CampaignAssigned {
        campaign: campaign?,
        group: group?,
        attribution_hours: hours?,
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
pub(super) fn check_timezone(tz: &str, path: &str) -> Result<(), Problem> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| Problem::new(path, format!("'{tz}' is not an IANA time zone name")))
}
