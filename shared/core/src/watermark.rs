//! The stream watermark of a profile: per Kinesis shard, the sequence number of the newest
//! record applied to it.
//!
//! Lambda delivers a shard's records in order and retries from the first failed record, so a
//! record at or below the watermark of its shard has been applied: a retried batch, a bisected
//! half or a replay of the stream (the same records again) changes nothing. Events that come
//! back as *new* records (a client re-sending an event id, a provider redelivering a webhook,
//! an ambiguous `PutRecords` retried by the SDK) are caught by the event-id claims instead.
//!
//! A profile's key maps to one shard at a time; after a reshard its records come from a child
//! shard (Lambda finishes the parent first). At most [`MAX_SHARDS`] shards are remembered: the
//! oldest (smallest shard id, as Kinesis numbers them in creation order) is forgotten first.
//!
//! Records of an anonymous profile folded into the user it was merged into are recognised by
//! the user's `absorbed` watermark of that anonymous id ([`Applied`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::ANON_PREFIX;
use crate::ports::{PortResult, ProfileStore};
use crate::profile::Profile;

pub const MAX_SHARDS: usize = 4;

/// A record's place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    pub shard: &'a str,
    pub sequence: &'a str,
}

impl<'a> Position<'a> {
    pub fn new(shard: &'a str, sequence: &'a str) -> Self {
        Position { shard, sequence }
    }

    /// Reads `<shard>:<sequence number>` (the form of [`fmt::Display`]).
    pub fn parse(text: &'a str) -> Option<Self> {
        let (shard, sequence) = text.rsplit_once(':')?;
        (!shard.is_empty() && !sequence.is_empty()).then_some(Position { shard, sequence })
    }

    /// Whether this record comes at or before `other` in the same shard.
    pub fn at_or_before(&self, other: &Position<'_>) -> bool {
        self.shard == other.shard && compare_sequence(self.sequence, other.sequence).is_le()
    }
}

impl fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard, self.sequence)
    }
}

/// Kinesis sequence numbers are decimal strings of up to 128 digits: compared as numbers.
/// Anything that is not all digits compares as text after every number (and so is never
/// "covered" by a numeric watermark).
pub fn compare_sequence(a: &str, b: &str) -> Ordering {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (digits(a), digits(b)) {
        (true, true) => {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Watermark(BTreeMap<String, String>);

impl Watermark {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the record at `position` has been applied.
    pub fn covers(&self, position: &Position<'_>) -> bool {
        self.0
            .get(position.shard)
            .is_some_and(|seen| compare_sequence(position.sequence, seen).is_le())
    }

    /// Records that `position` has been applied.
    pub fn advance(&mut self, position: &Position<'_>) {
        if self.covers(position) {
            return;
        }
        self.0
            .insert(position.shard.to_owned(), position.sequence.to_owned());
        while self.0.len() > MAX_SHARDS {
            self.0.pop_first();
        }
    }

    pub fn shards(&self) -> impl Iterator<Item = Position<'_>> {
        self.0.iter().map(|(s, q)| Position::new(s, q))
    }
}

/// The user profile an anonymous profile was merged into, when that user still links it:
/// events that reach the anonymous key after the merge (the identify was applied first, from
/// another shard, or the visitor came back without signing in) are folded there.
pub async fn merge_target<S: ProfileStore + ?Sized>(
    store: &S,
    anon: &Profile,
) -> PortResult<Option<Profile>> {
    let Some(into) = anon.merged_into.as_deref() else {
        return Ok(None);
    };
    let raw = anon.id.strip_prefix(ANON_PREFIX).unwrap_or(&anon.id);
    Ok(store
        .get(into)
        .await?
        .filter(|user| user.anonymous_ids.contains(raw)))
}

/// What says whether a record keyed `key` was applied: the key's own profile, and for a
/// merged anonymous profile the user it was merged into.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    key: String,
    own: Watermark,
    user: Option<Profile>,
}

impl Applied {
    pub async fn read<S: ProfileStore + ?Sized>(store: &S, key: &str) -> PortResult<Applied> {
        let Some(profile) = store.get(key).await? else {
            return Ok(Applied {
                key: key.to_owned(),
                ..Default::default()
            });
        };
        let user = merge_target(store, &profile).await?;
        Ok(Applied {
            key: key.to_owned(),
            own: profile.stream,
            user,
        })
    }

    pub fn covers(&self, position: &Position<'_>) -> bool {
        self.own.covers(position)
            || self
                .user
                .as_ref()
                .is_some_and(|u| u.has_applied(&self.key, position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(compare_sequence("9", "10").is_lt());
        assert!(compare_sequence("0010", "10").is_eq());
        assert!(compare_sequence(
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588899"
        )
        .is_lt());
        assert!(compare_sequence("x", "10").is_gt());
    }

    #[test]
    fn a_watermark_covers_what_was_applied_per_shard_and_forgets_old_shards() {
        let mut w = Watermark::default();
        let p = |s, q| Position::new(s, q);
        w.advance(&p("shardId-000000000001", "200"));
        assert!(w.covers(&p("shardId-000000000001", "199")));
        assert!(w.covers(&p("shardId-000000000001", "200")));
        assert!(!w.covers(&p("shardId-000000000001", "201")));
        assert!(!w.covers(&p("shardId-000000000002", "1")));
        w.advance(&p("shardId-000000000001", "150"));
        assert!(
            !w.covers(&p("shardId-000000000001", "201")),
            "never moves back"
        );
        for shard in 2..=5 {
            let id = format!("shardId-00000000000{shard}");
            w.advance(&Position::new(&id, "1"));
        }
        assert_eq!(w.shards().count(), MAX_SHARDS);
        assert!(
            !w.covers(&p("shardId-000000000001", "1")),
            "oldest shard forgotten"
        );
        assert_eq!(
            Position::parse("shardId-000000000001:42"),
            Some(p("shardId-000000000001", "42"))
        );
        assert_eq!(Position::parse("nocolon"), None);
    }
}
