//! Last-writer-wins values: a value with the time it was stated.
//!
//! A newer statement replaces an older one; on equal times the greater value wins, so the
//! result never depends on the order statements arrive in (events of one customer from two
//! devices, or an anonymous profile merged in later).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub value: T,
    pub at: DateTime<Utc>,
}

impl<T: Ord> Stamped<T> {
    pub fn new(value: T, at: DateTime<Utc>) -> Self {
        Stamped { value, at }
    }

    /// A value whose statement time is unknown (set by hand, e.g. in a fixture): any dated
    /// statement replaces it.
    pub fn undated(value: impl Into<T>) -> Self {
        Stamped {
            value: value.into(),
            at: DateTime::UNIX_EPOCH,
        }
    }

    /// Whether `value` stated at `at` replaces this one.
    pub fn yields_to(&self, value: &T, at: DateTime<Utc>) -> bool {
        at > self.at || (at == self.at && *value > self.value)
    }
}

/// Stores `value` stated at `at` in `slot` if it wins (see [`Stamped::yields_to`]). `value` is
/// built only then. Returns whether the slot changed.
pub fn offer<T: Ord>(
    slot: &mut Option<Stamped<T>>,
    candidate: &T,
    at: DateTime<Utc>,
    value: impl FnOnce() -> T,
) -> bool {
    let wins = match slot {
        None => true,
        Some(current) => current.yields_to(candidate, at),
    };
    if wins {
        *slot = Some(Stamped::new(value(), at));
    }
    wins
}

/// Merges `other` into `slot`: the winner of the two stays.
pub fn merge<T: Ord + Clone>(slot: &mut Option<Stamped<T>>, other: &Option<Stamped<T>>) -> bool {
    match other {
        Some(o) => offer(slot, &o.value, o.at, || o.value.clone()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_763_600_000 + i64::from(s), 0).unwrap()
    }

    #[test]
    fn newer_wins_and_ties_go_to_the_greater_value_in_any_order() {
        let statements = [("b", t(1)), ("a", t(2)), ("c", t(2)), ("z", t(0))];
        let mut results = Vec::new();
        for rotation in 0..statements.len() {
            let mut slot: Option<Stamped<String>> = None;
            for i in 0..statements.len() {
                let (v, at) = statements[(i + rotation) % statements.len()];
                offer(&mut slot, &v.to_owned(), at, || v.to_owned());
            }
            results.push(slot);
        }
        assert!(results
            .iter()
            .all(|r| *r == Some(Stamped::new("c".into(), t(2)))));
        let mut slot = Some(Stamped::new("x".to_owned(), t(5)));
        assert!(!merge(&mut slot, &Some(Stamped::new("y".into(), t(4)))));
        assert!(merge(&mut slot, &Some(Stamped::new("y".into(), t(5)))));
        assert!(!merge(&mut slot, &None));
        assert_eq!(slot.unwrap().value, "y");
    }
}
