//! The email function: segment-bus events → personalised SESv2 email, honouring consent,
//! suppression, frequency caps, quiet hours and exactly-once sends; plus the SES feedback
//! loop (bounces, complaints, opens, clicks → Ember events on Kinesis).
//!
//! # Layout
//! - [`assignment`]: the `campaign_assigned` event of a send or holdout, which opens the
//!   campaign's attribution window in the profile.
//! - [`campaign`]: declarative campaigns (`campaigns.yaml`), validated at start-up.
//! - [`experiment`]: a campaign's holdout share, variants and attribution window, and the
//!   deterministic assignment of a customer to one group.
//! - [`compiled`]: one configuration version (rules, campaigns, templates, catalog) compiled
//!   and cross-checked, every problem with its path; the built-in version.
//! - [`preview`]: what a campaign would do for a customer now, changing nothing (the admin
//!   API's campaign preview).
//! - [`render`]: product catalog (`catalog.json`), recommendations by heat, money formatting
//!   and the strict minijinja templates (`templates/`).
//! - [`filters`]: the template filters (human numbers, heat bands, links, sentences).
//! - [`handler`]: the send flow, generic over the ports (profiles, ledger, mailer, stream).
//! - [`send_record`]: the send record's states (claimed → sending → sent / rejected /
//!   unknown), claims with an owner, takeover of stale claims, operator re-drive.
//! - [`send_rate`]: the global emails-per-second limit, shared through the ledger.
//! - [`timers`]: delayed and quiet-hours-deferred sends, and the scheduled sweeper.
//! - [`feedback`]: SES event notifications (EventBridge or SNS) → suppressions and events.
//! - [`tags`]: SES message tags (`campaign`, reversible `profile_id`).
//! - [`deps`]: [`Settings::from_lookup`] (the environment) and [`Deps::build`], the one
//!   production wiring of each binary (`main.rs`, `bin/feedback.rs` and the local runner).
//! - [`error`]: the crate's error enum (retryable or not).
//!
//! Binaries: `email` (segment events and the sweeper's schedule) and `feedback`.

pub mod assignment;
pub mod campaign;
pub mod compiled;
pub mod deps;
pub mod error;
pub mod experiment;
pub mod feedback;
pub mod filters;
pub mod handler;
pub mod preview;
pub mod render;
pub mod send_rate;
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
