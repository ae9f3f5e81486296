//! The email function: segment-bus events → personalised SESv2 email, honouring consent,
//! suppression, frequency caps, quiet hours and exactly-once sends; plus the SES feedback
//! loop (bounces, complaints, opens, clicks → Ember events on Kinesis).
//!
//! # Layout
//! - [`campaign`]: declarative campaigns (`campaigns.yaml`), validated at start-up.
//! - [`render`]: product catalog (`catalog.json`), recommendations by heat, money formatting
//!   and the strict minijinja templates (`templates/`).
//! - [`handler`]: the send flow, generic over the ports (profiles, ledger, mailer, stream).
//! - [`send_record`]: the send record's states (claimed → sending → sent / rejected /
//!   unknown), claims with an owner, takeover of stale claims, operator re-drive.
//! - [`timers`]: delayed and quiet-hours-deferred sends, and the scheduled sweeper.
//! - [`feedback`]: SES event notifications (EventBridge or SNS) → suppressions and events.
//! - [`tags`]: SES message tags (`campaign`, reversible `profile_id`).
//! - [`deps`]: [`Settings::from_lookup`] (the environment) and [`Deps::build`], the one
//!   production wiring of each binary (`main.rs`, `bin/feedback.rs` and the local runner).
//! - [`error`]: the crate's error enum (retryable or not).
//!
//! Binaries: `email` (segment events and the sweeper's schedule) and `feedback`.

pub mod campaign;
pub mod deps;
pub mod error;
pub mod feedback;
pub mod handler;
pub mod render;
pub mod send_record;
pub mod tags;
pub mod timers;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use deps::{Deps, FeedbackDeps, FeedbackSettings, Settings};
pub use error::EmailError;
pub use feedback::Feedback;
pub use handler::{Email, MessageSettings, Outcome, Skip};

use campaign::{Campaigns, Known};
use ember_core::segment::RuleSet;
use render::Renderer;

/// Loads and cross-validates the embedded campaigns, rules and templates.
pub fn embedded_config() -> Result<(Campaigns, RuleSet, Renderer), EmailError> {
    let rules = RuleSet::embedded().map_err(|e| EmailError::Config(e.to_string()))?;
    let renderer = Renderer::embedded()?;
    let campaigns = load_campaigns(campaign::EMBEDDED, &rules, &renderer)?;
    Ok((campaigns, rules, renderer))
}

/// Validates a campaigns document (the JSON form of `campaigns.yaml`) against the segment
/// rules and templates.
pub fn load_campaigns(
    json: &str,
    rules: &RuleSet,
    renderer: &Renderer,
) -> Result<Campaigns, EmailError> {
    let segment = |name: &str| rules.get(name).map(|r| r.delay);
    let template = |name: &str| renderer.has_template(name);
    Campaigns::from_json(
        json,
        &Known {
            segment: &segment,
            template: &template,
        },
    )
}
