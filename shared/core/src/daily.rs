//! Per-day counters for the rolling windows (`events_7d`, `revenue_30d_minor`, …).
//!
//! Stored as columns, one list per counter, newest day first: entry `i` of every list is
//! the day `to - i` (UTC). A list ends at its last non-zero entry, and nothing older than
//! [`WINDOW_DAYS`] days before `to` is kept, so a customer active every day costs five lists
//! of at most 30 small numbers, not 30 maps.

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

/// Days of counters kept, relative to the newest day seen.
pub const WINDOW_DAYS: usize = 30;

/// What happened on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounters {
    pub events: u64,
    pub page_views: u64,
    pub product_views: u64,
    pub purchases: u64,
    pub revenue_minor: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Daily {
    /// The newest day seen; `None` until the first event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub page_views: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub product_views: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purchases: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revenue_minor: Vec<i64>,
}

fn at<T: Copy + Default>(column: &[T], i: usize) -> T {
    column.get(i).copied().unwrap_or_default()
}

/// Adds `n` at index `i`, growing the column with zeros as needed.
fn bump<T: Copy + Default + PartialEq>(column: &mut Vec<T>, i: usize, n: T, add: fn(T, T) -> T) {
    if n == T::default() {
        return;
    }
    if column.len() <= i {
        column.resize(i + 1, T::default());
    }
    column[i] = add(column[i], n);
}

/// Shifts a column `by` days older: `by` zeros in front, then cut to the window and trimmed.
fn shift<T: Copy + Default + PartialEq>(column: &mut Vec<T>, by: usize) {
    if column.is_empty() {
        return;
    }
    let keep = WINDOW_DAYS.saturating_sub(by).min(column.len());
    column.truncate(keep);
    column.splice(0..0, std::iter::repeat_n(T::default(), by.min(WINDOW_DAYS)));
    trim(column);
}

fn trim<T: Default + PartialEq>(column: &mut Vec<T>) {
    column.truncate(WINDOW_DAYS);
    while column.last().is_some_and(|v| *v == T::default()) {
        column.pop();
    }
}

impl Daily {
    pub fn is_empty(&self) -> bool {
        self.to.is_none()
    }

    /// Index of `date` in the columns, if it is within the window.
    fn index(&self, date: NaiveDate) -> Option<usize> {
        let age = (self.to? - date).num_days();
        usize::try_from(age).ok().filter(|a| *a < WINDOW_DAYS)
    }

    /// The counters of `date` (zero outside the window).
    pub fn day(&self, date: NaiveDate) -> DayCounters {
        match self.index(date) {
            None => DayCounters::default(),
            Some(i) => DayCounters {
                events: at(&self.events, i),
                page_views: at(&self.page_views, i),
                product_views: at(&self.product_views, i),
                purchases: at(&self.purchases, i),
                revenue_minor: at(&self.revenue_minor, i),
            },
        }
    }

    /// Moves the window so that `date` is its newest day (no-op if it already is newer).
    pub fn advance_to(&mut self, date: NaiveDate) {
        let by = match self.to {
            None => {
                self.to = Some(date);
                return;
            }
            Some(to) if date <= to => return,
            Some(to) => usize::try_from((date - to).num_days()).unwrap_or(usize::MAX),
        };
        self.to = Some(date);
        shift(&mut self.events, by);
        shift(&mut self.page_views, by);
        shift(&mut self.product_views, by);
        shift(&mut self.purchases, by);
        shift(&mut self.revenue_minor, by);
    }

    /// Adds `counters` to `date`; the window moves forward to a newer date, and a date older
    /// than the window is ignored.
    pub fn add(&mut self, date: NaiveDate, counters: &DayCounters) {
        self.advance_to(date);
        let Some(i) = self.index(date) else { return };
        let add_u = |a: u64, b: u64| a.saturating_add(b);
        bump(&mut self.events, i, counters.events, add_u);
        bump(&mut self.page_views, i, counters.page_views, add_u);
        bump(&mut self.product_views, i, counters.product_views, add_u);
        bump(&mut self.purchases, i, counters.purchases, add_u);
        bump(
            &mut self.revenue_minor,
            i,
            counters.revenue_minor,
            |a, b| a.saturating_add(b),
        );
    }

    /// Every day with counters, newest first.
    pub fn days(&self) -> impl Iterator<Item = (NaiveDate, DayCounters)> + '_ {
        let len = [
            self.events.len(),
            self.page_views.len(),
            self.product_views.len(),
            self.purchases.len(),
            self.revenue_minor.len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
        .min(WINDOW_DAYS);
        let to = self.to;
        (0..len).filter_map(move |i| {
            let date = to? - Duration::days(i64::try_from(i).ok()?);
            let c = self.day(date);
            (c != DayCounters::default()).then_some((date, c))
        })
    }

    /// Adds every day of `other` (e.g. a merged anonymous profile).
    pub fn merge(&mut self, other: &Daily) {
        if let Some(to) = other.to {
            self.advance_to(to);
        }
        for (date, c) in other.days() {
            self.add(date, &c);
        }
    }

    /// The sum of `pick` over the `days` calendar days up to and including `today`.
    pub fn sum(&self, days: u32, today: NaiveDate, pick: impl Fn(&DayCounters) -> i64) -> i64 {
        if days == 0 {
            return 0;
        }
        let from = today - Duration::days(i64::from(days) - 1);
        self.days()
            .filter(|(d, _)| *d >= from && *d <= today)
            .map(|(_, c)| pick(&c))
            .fold(0i64, i64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    fn one(events: u64, revenue: i64) -> DayCounters {
        DayCounters {
            events,
            revenue_minor: revenue,
            purchases: u64::from(revenue != 0),
            ..Default::default()
        }
    }

    #[test]
    fn days_are_added_shifted_and_dropped_past_the_window() {
        let mut daily = Daily::default();
        daily.add(d(10), &one(2, 0));
        daily.add(d(12), &one(1, 500));
        daily.add(d(10), &one(1, 0));
        assert_eq!(daily.to, Some(d(12)));
        assert_eq!(daily.events, vec![1, 0, 3]);
        assert_eq!(daily.revenue_minor, vec![500]);
        assert_eq!(daily.sum(3, d(12), |c| c.events as i64), 4);
        assert_eq!(daily.sum(2, d(12), |c| c.events as i64), 1);
        assert_eq!(daily.sum(30, d(12), |c| c.revenue_minor), 500);
        // 30 days later the 10th is out of the window; the 12th is the oldest day kept.
        daily.add(
            d(12) + Duration::days(29),
            &DayCounters {
                page_views: 1,
                events: 1,
                ..Default::default()
            },
        );
        assert_eq!(daily.events.len(), 30);
        assert_eq!(daily.day(d(12)).events, 1);
        assert_eq!(daily.day(d(10)), DayCounters::default());
        daily.add(d(11), &one(5, 0));
        assert_eq!(daily.day(d(11)), DayCounters::default(), "too old: ignored");
        daily.advance_to(d(12) + Duration::days(400));
        assert!(daily.events.is_empty() && daily.revenue_minor.is_empty());
    }

    #[test]
    fn merge_adds_the_other_days_in_any_order() {
        let mut a = Daily::default();
        a.add(d(3), &one(1, 0));
        a.add(d(5), &one(2, 100));
        let mut b = Daily::default();
        b.add(d(4), &one(7, 0));
        b.add(d(6), &one(1, 0));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.events, vec![1, 2, 7, 1]);
    }

    #[test]
    fn hostile_stored_columns_are_read_within_the_window() {
        let daily = Daily {
            to: Some(d(20)),
            events: vec![1; 500],
            ..Default::default()
        };
        assert_eq!(daily.sum(400, d(20), |c| c.events as i64), 30);
        assert_eq!(daily.days().count(), 30);
    }
}
