//! The `archive-eraser` function: on its schedule, clears the raw event archive of erased
//! customers and of objects past the retention ([`ember_aws::archive_erasure`] says how).
//! Stated time: a customer's archived events are gone within [`SETTLE`] plus one schedule
//! period of `DELETE /v1/profiles/{id}`, plus the time a pass needs to read the archive (it
//! carries on over the following runs when one invocation is not enough).
//!
//! [`SETTLE`]: ember_aws::archive_erasure::SETTLE

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use chrono::{DateTime, Timelike, Utc};
use ember_aws::archive::Archive;
use ember_aws::archive_erasure::{self, RunReport};
use ember_aws::ledger::DynamoLedger;
use ember_core::ports::PortResult;

/// Time kept back from the invocation's deadline to save the cursor and answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The function's environment.
#[derive(Debug, Clone)]
pub struct EraserSettings {
    /// `ARCHIVE_BUCKET`.
    pub archive_bucket: String,
    /// `LEDGER_TABLE`: tombstones and the passes' bookkeeping.
    pub ledger_table: String,
    /// `ARCHIVE_RETENTION_DAYS` (optional): objects older than this (plus a day) are deleted.
    pub retention_days: Option<u32>,
}

impl EraserSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<EraserSettings, String> {
        let required = |name: &str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name} is not set"))
        };
        let retention_days =
            match lookup("ARCHIVE_RETENTION_DAYS").filter(|v| !v.is_empty()) {
                None => None,
                Some(v) => Some(v.parse::<u32>().ok().filter(|d| *d > 0).ok_or_else(|| {
                    format!("ARCHIVE_RETENTION_DAYS: {v:?} is not a number of days")
                })?),
            };
        Ok(EraserSettings {
            archive_bucket: required("ARCHIVE_BUCKET")?,
            ledger_table: required("LEDGER_TABLE")?,
            retention_days,
        })
    }

    pub fn from_env() -> Result<EraserSettings, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// What a run needs.
pub struct EraserDeps {
    pub archive: Archive,
    pub ledger: DynamoLedger,
    pub retention: Option<chrono::Duration>,
}

impl EraserDeps {
    pub fn build(sdk: &SdkConfig, settings: &EraserSettings) -> EraserDeps {
        EraserDeps {
            archive: Archive::from_conf(sdk, &settings.archive_bucket),
            ledger: DynamoLedger::from_conf(sdk, &settings.ledger_table),
            retention: settings
                .retention_days
                .map(|d| chrono::Duration::days(i64::from(d))),
        }
    }

    /// One run at `now` (the schedule's time), working until `deadline`. The retention is
    /// enforced by the day's first run only (it lists the bucket; a day is its unit).
    pub async fn handle(&self, now: DateTime<Utc>, deadline: Instant) -> PortResult<RunReport> {
        let retention = self.retention.filter(|_| now.hour() == 0);
        let report =
            archive_erasure::run(&self.archive, &self.ledger, now, retention, deadline).await?;
        tracing::info!(
            pending = report.pending,
            started = report.started,
            finished = report.finished,
            objects = report.objects,
            rewritten = report.rewritten,
            removed = report.removed,
            expired = report.expired,
            "archive erasure run"
        );
        Ok(report)
    }
}
