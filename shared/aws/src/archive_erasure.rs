//! The archive's erasure passes, run on a schedule (function `archive-eraser`): after
//! `DELETE /v1/profiles/{id}`, no copy of the customer's events stays in the archive beyond a
//! stated time, and no object outlives the archive's retention.
//!
//! Each erasure leaves a pending record in the ledger (`archive-erasure`,
//! `pending#<at>#<hashed id>`, written with the tombstone). A run:
//! 1. given the retention (the function passes it to the day's first run), deletes objects
//!    whose partition is older than the retention plus a day. Firehose's
//!    objects expire by the bucket's lifecycle rule, but an object a pass rewrote is new to
//!    S3 and would otherwise live a whole retention again;
//! 2. starts a pass if none is under way and some erasure is at least [`SETTLE`] old (by
//!    then Firehose, which buffers up to 15 minutes, has delivered every event accepted
//!    before it). The pass covers every erasure up to that point (`cutoff`);
//! 3. continues the pass: the objects after the saved cursor, in key order and
//!    [`ERASE_CONCURRENCY`] at a time, are read and rewritten without the records of
//!    customers with a tombstone (see [`archive::erase_object`]), until the invocation's
//!    time is nearly up; the cursor is saved every [`SAVE_EVERY`] objects and when it stops,
//!    so the next run resumes there;
//! 4. at the end of the objects, deletes the pending records up to `cutoff` and the pass.
//!
//! Overlapping runs are harmless: a rewrite is a function of the object and the tombstones,
//! so two runs write the same result; the cursor moves by compare-and-set, and a run that
//! loses it stops.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use ember_core::ports::{Ledger, PortResult, ARCHIVE_ERASURE_PENDING, ARCHIVE_ERASURE_PK};
use serde_json::json;

use crate::archive::{self, Archive, ErasureReport, Tombstones, ERASE_CONCURRENCY};

/// How old an erasure must be before a pass starts for it.
pub const SETTLE: Duration = Duration::hours(1);
/// Objects between two saves of the cursor (rounded up to whole groups of
/// [`ERASE_CONCURRENCY`]).
pub const SAVE_EVERY: usize = 64;
const PASS_SK: &str = "pass";

/// What one run did (the function's response).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunReport {
    /// Erasures waiting for a pass (before this run's pass finished).
    pub pending: usize,
    /// A pass was started by this run.
    pub started: bool,
    /// The pass in progress reached the end of the archive in this run.
    pub finished: bool,
    /// Objects read, rewritten, and records removed by this run.
    pub objects: usize,
    pub rewritten: usize,
    pub removed: usize,
    /// Objects deleted for being older than the retention.
    pub expired: usize,
}

/// The pass under way, as stored in the ledger.
#[derive(Debug, Clone, PartialEq)]
struct Pass {
    /// Erasures at or before this time are covered.
    cutoff: String,
    /// The last object done ("" before the first).
    after: String,
}

impl Pass {
    fn attrs(&self) -> serde_json::Value {
        json!({"cutoff": self.cutoff, "after": self.after})
    }

    fn from_attrs(v: &serde_json::Value) -> Option<Pass> {
        Some(Pass {
            cutoff: v["cutoff"].as_str()?.to_owned(),
            after: v["after"].as_str()?.to_owned(),
        })
    }
}

/// One scheduled run at `now`. Objects older than `retention` (plus a day) are deleted;
/// the pass takes objects [`ERASE_CONCURRENCY`] at a time and stops taking more at
/// `deadline` (it always does one group).
pub async fn run(
    archive: &Archive,
    ledger: &impl Ledger,
    now: DateTime<Utc>,
    retention: Option<Duration>,
    deadline: Instant,
) -> PortResult<RunReport> {
    let mut report = RunReport::default();
    if let Some(retention) = retention {
        for key in archive
            .keys(None, Some(now - retention - Duration::days(1)))
            .await?
        {
            archive.delete(&key).await?;
            report.expired += 1;
        }
    }
    let pending = ledger
        .query(ARCHIVE_ERASURE_PK, ARCHIVE_ERASURE_PENDING)
        .await?;
    report.pending = pending.len();
    let mut pass = match ledger.get(ARCHIVE_ERASURE_PK, PASS_SK).await? {
        Some(stored) => match Pass::from_attrs(&stored) {
            Some(pass) => pass,
            // Unreadable: start over (a pass is safe to repeat).
            None => {
                ledger.delete(ARCHIVE_ERASURE_PK, PASS_SK).await?;
                return Ok(report);
            }
        },
        None => {
            let settled = format!("{ARCHIVE_ERASURE_PENDING}{}", stamp(now - SETTLE));
            // Sort keys start with the erasure's time: the oldest comes first.
            if pending.first().is_none_or(|(sk, _)| *sk > settled) {
                return Ok(report);
            }
            let pass = Pass {
                cutoff: stamp(now - SETTLE),
                after: String::new(),
            };
            if !ledger
                .claim(ARCHIVE_ERASURE_PK, PASS_SK, &pass.attrs(), None)
                .await?
            {
                return Ok(report); // another run started one
            }
            report.started = true;
            pass
        }
    };

    let keys: Vec<String> = archive
        .keys(None, None)
        .await?
        .into_iter()
        .filter(|k| *k > pass.after)
        .collect();
    let tombstones = Tombstones::new(ledger);
    let mut done = ErasureReport::default();
    let mut since_save = 0;
    let mut chunks = keys.chunks(ERASE_CONCURRENCY).peekable();
    while let Some(chunk) = chunks.next() {
        done.add(&archive::erase_objects(archive, chunk, &tombstones).await?);
        let last = &chunk[chunk.len() - 1];
        since_save += chunk.len();
        let out_of_time = Instant::now() >= deadline;
        if chunks.peek().is_none() {
            break;
        }
        if out_of_time || since_save >= SAVE_EVERY {
            since_save = 0;
            // Another run moved the cursor: it carries on.
            if !move_cursor(ledger, &mut pass, last).await? || out_of_time {
                return Ok(with(report, &done));
            }
        }
    }
    report = with(report, &done);
    let covered = format!("{ARCHIVE_ERASURE_PENDING}{}#~", pass.cutoff);
    for (sk, _) in pending.iter().filter(|(sk, _)| *sk <= covered) {
        ledger.delete(ARCHIVE_ERASURE_PK, sk).await?;
    }
    ledger.delete(ARCHIVE_ERASURE_PK, PASS_SK).await?;
    report.finished = true;
    Ok(report)
}

/// Saves `key` as the last object done; `false` if another run moved the cursor.
async fn move_cursor(ledger: &impl Ledger, pass: &mut Pass, key: &str) -> PortResult<bool> {
    let next = Pass {
        cutoff: pass.cutoff.clone(),
        after: key.to_owned(),
    };
    let moved = ledger
        .replace_if(
            ARCHIVE_ERASURE_PK,
            PASS_SK,
            &pass.attrs(),
            &next.attrs(),
            None,
        )
        .await?;
    *pass = next;
    Ok(moved)
}

fn with(mut report: RunReport, done: &ErasureReport) -> RunReport {
    report.objects = done.objects;
    report.rewritten = done.rewritten;
    report.removed = done.removed;
    report
}

/// Times as the pending records' sort keys write them.
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
