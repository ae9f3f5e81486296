//! The profile's outbox: the bus events of its writes, kept in the profile until they are
//! known to be published, so that no transition is lost when publishing fails or the process
//! dies between the write and the publish.
//!
//! Two parts:
//! - `changes`: the events of one write, stored as [`Changes`] (which segments were entered
//!   and exited, whether the cart changed, at which version): about a hundred bytes instead of
//!   the events themselves, rebuilt with the same ids from the profile.
//! - `events`: events not yet published, in full. Whoever processes the profile next
//!   publishes them first.
//!
//! `by_stream` marks `changes` queued by the enrich handler, whose write also advanced the
//! profile's stream watermark to the records it folded. The handler publishes right after the
//! write and does not write again on success, so the changes stay stored, *held for the
//! stream*, until the next enrich write settles them: it drops them if its records are all new
//! (Lambda moved past the queuing records, which it does only once they reported success, and
//! they report success only once published), and publishes them again if a record is at or
//! below the watermark (the queuing records are being redelivered and the publish may not have
//! happened). Nothing else publishes or drops held changes: the scheduled re-evaluation writes
//! around them, so its writes neither republish nor lose them. Without `by_stream`, `changes`
//! are unpublished like `events`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ports::{BusEvent, CartChange, Decided};
use crate::profile::Profile;
use crate::segment::transitions;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outbox {
    /// What the profile's last write published or is about to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    /// Events of earlier writes that could not be published, in full.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<BusEvent>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub by_stream: bool,
}

/// The bus events of one write, by what changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Changes {
    /// The profile version the write produced (part of every event id).
    pub version: u64,
    pub at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub entered: BTreeSet<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub exited: BTreeSet<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cart: bool,
    /// The configuration version that decided the segment changes.
    #[serde(skip_serializing_if = "is_zero")]
    pub config: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
    /// When the cause event arrived and its trace, so that a republished transition is the
    /// event first published (its latency and trace still start at the customer's action).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingested: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.changes.is_none() && self.events.is_empty()
    }

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.events.len()
            + self.changes.as_ref().map_or(0, |c| {
                c.entered.len() + c.exited.len() + usize::from(c.cart)
            })
    }

    /// Every event in the outbox, the full ones first, then the compact ones rebuilt from
    /// `profile` (the profile stored with them).
    pub fn pending(&self, profile: &Profile) -> Vec<BusEvent> {
        let mut all = self.events.clone();
        if let Some(c) = &self.changes {
            all.extend(c.events(profile));
        }
        all
    }

    /// Whether `changes` are held for the stream (see the module doc).
    pub fn held_for_stream(&self) -> bool {
        self.by_stream && self.changes.is_some()
    }

    /// Whether some event is marked unpublished (anything but held changes).
    pub fn has_unpublished(&self) -> bool {
        !self.events.is_empty() || (self.changes.is_some() && !self.by_stream)
    }

    /// The events marked unpublished: the full ones, then the compact ones unless they are
    /// held for the stream.
    pub fn unpublished(&self, profile: &Profile) -> Vec<BusEvent> {
        if self.by_stream {
            self.events.clone()
        } else {
            self.pending(profile)
        }
    }

    /// Replaces what is marked unpublished with `events`, in full (the profile is about to
    /// move on from the version compact changes were rebuilt against). Held changes stay.
    pub fn set_unpublished(&mut self, events: Vec<BusEvent>) {
        if !self.held_for_stream() {
            self.changes = None;
            self.by_stream = false;
        }
        self.events = events;
    }

    /// Drops the held changes (the stream settled them: published, or about to be again).
    pub fn release_held(&mut self) {
        if self.by_stream {
            self.changes = None;
            self.by_stream = false;
        }
    }
}

impl Changes {
    /// What a write's `events` changed (`None` if nothing is published).
    pub fn of(events: &[BusEvent], version: u64) -> Option<Changes> {
        let mut c = Changes {
            version,
            ..Changes::default()
        };
        for e in events {
            match e {
                BusEvent::SegmentEntered(s) | BusEvent::SegmentExited(s) => {
                    if matches!(e, BusEvent::SegmentEntered(_)) {
                        c.entered.insert(s.segment.clone());
                    } else {
                        c.exited.insert(s.segment.clone());
                    }
                    c.at = Some(s.at);
                    c.cause.clone_from(&s.cause_event_id);
                    c.config = s.config_version;
                    c.backfill = s.backfill;
                    c.ingested = s.ingested_at;
                    c.trace.clone_from(&s.trace);
                }
                BusEvent::CartUpdated(_) => c.cart = true,
                // Published by the admin API, never by a profile write.
                BusEvent::ConfigPublished(_) => {}
            }
        }
        (!events.is_empty()).then_some(c)
    }

    /// The events, as the write built them: segment transitions, then the cart event.
    pub fn events(&self, profile: &Profile) -> Vec<BusEvent> {
        let at = self.at.or(profile.cart.updated_at).unwrap_or_default();
        let before: BTreeSet<String> = self.exited.clone();
        let after: BTreeSet<String> = self.entered.clone();
        let mut events = transitions(
            &profile.id,
            &before,
            &after,
            at,
            self.version,
            self.cause.as_deref(),
            Decided {
                config_version: self.config,
                backfill: self.backfill,
            },
        );
        for e in &mut events {
            if let BusEvent::SegmentEntered(s) | BusEvent::SegmentExited(s) = e {
                s.ingested_at = self.ingested;
                s.trace.clone_from(&self.trace);
            }
        }
        if self.cart {
            events.push(cart_event(profile, self.version, at));
        }
        events
    }
}

/// `CartUpdated` for `profile`'s cart at `version`, with the deterministic id
/// `<profile id>:cart:<version>`.
pub fn cart_event(profile: &Profile, version: u64, at: DateTime<Utc>) -> BusEvent {
    BusEvent::CartUpdated(CartChange {
        id: format!("{}:cart:{version}", profile.id),
        profile_id: profile.id.clone(),
        updated_at: profile.cart.updated_at.unwrap_or(at),
        item_count: profile.cart.items.values().map(|i| i.quantity).sum(),
        value_minor: profile.cart_value_minor(),
        currency: profile.cart.currency.clone(),
        profile_version: version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::CartItem;

    #[test]
    fn changes_rebuild_the_same_events() {
        let at: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
        let mut p = Profile::new("u-1");
        p.version = 7;
        p.cart.items.insert(
            "A".into(),
            CartItem {
                name: "A".into(),
                quantity: 2,
                unit_price_minor: 500,
                url: None,
            },
        );
        p.cart.updated_at = Some(at);
        let before: BTreeSet<String> = ["x".to_owned(), "y".to_owned()].into();
        let after: BTreeSet<String> = ["y".to_owned(), "z".to_owned()].into();
        let mut events = transitions(
            "u-1",
            &before,
            &after,
            at,
            7,
            Some("e-9"),
            Decided {
                config_version: 3,
                backfill: true,
            },
        );
        for e in &mut events {
            if let BusEvent::SegmentEntered(s) | BusEvent::SegmentExited(s) = e {
                s.ingested_at = Some(at);
                s.trace = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
            }
        }
        events.push(cart_event(&p, 7, at));
        let changes = Changes::of(&events, 7).unwrap();
        assert_eq!(changes.events(&p), events);
        assert_eq!(Changes::of(&[], 7), None);
        let outbox = Outbox {
            changes: Some(changes),
            ..Outbox::default()
        };
        assert_eq!(outbox.pending(&p), events);
        // Stored, the changes are small (the trace is most of it).
        assert!(serde_json::to_string(&outbox).unwrap().len() < 250);
    }

    #[test]
    fn held_changes_are_not_unpublished_and_survive_replacing_what_is() {
        let at: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
        let p = Profile::new("u-1");
        let entered = |segment: &str, version| {
            let after = [segment.to_owned()].into();
            transitions(
                "u-1",
                &BTreeSet::new(),
                &after,
                at,
                version,
                None,
                Decided::default(),
            )
        };
        let stream = entered("a", 3);
        let scheduled = entered("b", 4);
        let mut outbox = Outbox {
            changes: Changes::of(&stream, 3),
            events: Vec::new(),
            by_stream: true,
        };
        assert!(outbox.held_for_stream() && !outbox.has_unpublished());
        assert!(outbox.unpublished(&p).is_empty());

        outbox.set_unpublished(scheduled.clone());
        assert!(outbox.held_for_stream() && outbox.has_unpublished());
        assert_eq!(outbox.unpublished(&p), scheduled);
        assert_eq!(outbox.pending(&p), [scheduled.clone(), stream].concat());

        outbox.release_held();
        assert!(!outbox.held_for_stream());
        assert_eq!(outbox.pending(&p), scheduled);

        // Without the mark, changes are unpublished and replaced like the rest.
        let mut unheld = Outbox {
            changes: Changes::of(&scheduled, 4),
            ..Outbox::default()
        };
        assert_eq!(unheld.unpublished(&p), scheduled);
        unheld.set_unpublished(Vec::new());
        assert!(unheld.is_empty());
    }
}
