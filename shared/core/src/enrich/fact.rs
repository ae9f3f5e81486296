//! The normalised content of an event: one [`Fact`] variant per event type.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::consent::{Channel, SuppressionReason};
use crate::event::EventType;

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
    /// `amount_minor` of order `order_id` returned to the customer.
    Refund {
        order_id: Cow<'a, str>,
        amount_minor: i64,
        currency: Cow<'a, str>,
    },
    /// The customer joined `group` of `campaign`; purchases within `attribution_hours` count
    /// for it.
    CampaignAssigned {
        campaign: Cow<'a, str>,
        group: Cow<'a, str>,
        attribution_hours: u32,
    },
}

impl Fact<'_> {
    /// The event type this fact is the content of.
    pub fn event_type(&self) -> EventType {
        match self {
            Fact::PageView { .. } => EventType::PageView,
            Fact::ProductView { .. } => EventType::ProductView,
            Fact::AddToCart { .. } => EventType::AddToCart,
            Fact::RemoveFromCart { .. } => EventType::RemoveFromCart,
            Fact::CheckoutStarted { .. } => EventType::CheckoutStarted,
            Fact::Purchase { .. } => EventType::Purchase,
            Fact::EmailOpened { .. } => EventType::EmailOpened,
            Fact::EmailClicked { .. } => EventType::EmailClicked,
            Fact::HeatPreference { .. } => EventType::HeatPreference,
            Fact::PollAnswer { .. } => EventType::PollAnswer,
            Fact::ConsentChanged { .. } => EventType::ConsentChanged,
            Fact::Identify { .. } => EventType::Identify,
            Fact::ProfileUpdated { .. } => EventType::ProfileUpdated,
            Fact::EmailSuppressed { .. } => EventType::EmailSuppressed,
            Fact::Refund { .. } => EventType::Refund,
            Fact::CampaignAssigned { .. } => EventType::CampaignAssigned,
        }
    }
}
