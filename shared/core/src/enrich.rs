//! Normalisation of validated envelopes into typed facts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::event::Envelope;
use crate::schema::Registry;

/// A validated, normalised event ready to be folded into a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent {
    pub envelope: Envelope,
    pub fact: Fact,
    /// UTM parameters from `context.page_url` (`utm_source`, … without the prefix).
    pub utm: BTreeMap<String, String>,
    /// Device class from the user agent, if one was sent.
    pub device: Option<DeviceClass>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Mobile,
    Tablet,
    Desktop,
    Bot,
    Unknown,
}

/// The normalised content of an event, one variant per event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    PageView { url: Option<String>, title: Option<String> },
}

/// Turns a validated envelope into an [`EnrichedEvent`].
pub fn enrich(envelope: Envelope) -> Result<EnrichedEvent, Vec<Problem>> {
    Err(vec![Problem::new("/type", format!("not supported yet: {}", envelope.event_type))])
}

/// Parses, validates and enriches one raw record.
pub fn decode(bytes: &[u8], registry: &Registry) -> Result<EnrichedEvent, Vec<Problem>> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| vec![Problem::new("/", format!("not valid JSON: {e}"))])?;
    enrich(registry.validate(&value)?)
}
