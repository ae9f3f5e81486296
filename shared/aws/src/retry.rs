//! Bounded exponential backoff with full jitter, and the one place where AWS SDK errors are
//! classified as retryable ([`PortError::Transient`]) or not ([`PortError::Permanent`]).
//!
//! The SDK clients already retry whole calls (standard retry mode). This module is for what
//! the SDK cannot see: per-entry failures inside a successful `PutEvents`,
//! `SendMessageBatch` or `PutRecords` response, and optimistic-locking loops.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use ember_core::ports::PortError;

/// Bounded exponential backoff: attempt `n` (0-based) waits a random duration in
/// `[0, min(cap, base * 2^n)]` ("full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Total attempts, the first one included. At least 1.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_attempts: 4,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    pub fn new(max_attempts: u32, base: Duration, cap: Duration) -> Self {
        Backoff {
            max_attempts: max_attempts.max(1),
            base,
            cap,
        }
    }

    /// The upper bound of the wait after failed attempt `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A jittered wait after failed attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }

    /// Whether another attempt may follow failed attempt `attempt` (0-based).
    pub fn can_retry(&self, attempt: u32) -> bool {
        attempt + 1 < self.max_attempts
    }

    /// Sleeps the jittered delay for failed attempt `attempt`.
    pub async fn wait(&self, attempt: u32) {
        tokio::time::sleep(self.delay(attempt)).await;
    }
}

/// Error codes that mean "slow down" or "try again" whatever the service.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSThrottlingException",
    "SlowDown",
    "TransactionInProgressException",
    // A transaction's cancellation reasons name throttling without the suffix.
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "InternalServerError",
    "InternalServerErrorException",
    "InternalFailure",
    "InternalError",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "AWS.SimpleQueueService.RequestThrottled",
];

/// Whether an AWS error code (service-level or per-entry) is worth retrying.
pub fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// Maps any SDK error to a [`PortError`] naming the `stage` that failed (its text with
/// addresses redacted): throttling, 5xx,
/// timeouts and connection failures are transient; everything else (validation, missing
/// resource, access denied, request construction) is permanent. Callers match the
/// operation-specific errors they care about (e.g. `ConditionalCheckFailedException`) first.
pub fn classify<E>(err: &SdkError<E>, stage: &'static str) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // SDK and service texts can quote request values; they end up in logs.
    let reason = ember_core::privacy::redact_addresses(&DisplayErrorContext(err).to_string());
    let transient = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            err.code().is_some_and(is_transient_code) || status == 429 || status >= 500
        }
        _ => false,
    };
    if transient {
        PortError::Transient { stage, reason }
    } else {
        PortError::Permanent { stage, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let b = Backoff::new(5, Duration::from_millis(100), Duration::from_millis(350));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(2), Duration::from_millis(350));
        assert_eq!(b.ceiling(40), Duration::from_millis(350));
        for attempt in 0..10 {
            assert!(b.delay(attempt) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let b = Backoff::new(3, Duration::ZERO, Duration::ZERO);
        assert!(b.can_retry(0));
        assert!(b.can_retry(1));
        assert!(!b.can_retry(2));
        assert!(!Backoff::new(0, Duration::ZERO, Duration::ZERO).can_retry(0));
    }

    #[test]
    fn throttling_codes_are_transient() {
        assert!(is_transient_code("ThrottlingException"));
        assert!(is_transient_code("ProvisionedThroughputExceededException"));
        assert!(!is_transient_code("ValidationException"));
        assert!(!is_transient_code("ResourceNotFoundException"));
    }
}
