//! EventBridge implementation of [`EventBus`]: `PutEvents` on the custom bus named in
//! configuration (`EVENT_BUS_NAME`), at most 10 entries per call, `Source` =
//! [`BusEvent::SOURCE`]. `PutEvents` fails per entry inside a successful response, so every
//! entry's `ErrorCode` is checked and only the failed, retryable entries are sent again, with
//! bounded exponential backoff and jitter.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use ember_core::ports::{BusEvent, EventBus, PortError, PortResult};
use ember_core::trace::TraceContext;

use crate::retry::{classify, is_transient_code, Backoff};

/// `PutEvents` accepts at most this many entries per call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;

const STAGE: &str = "eventbridge.put_events";

/// Ember's custom EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
    backoff: Backoff,
}

impl EventBridgeBus {
    /// Builds the client from the process's one `SdkConfig`.
    pub fn from_conf(config: &aws_config::SdkConfig, bus_name: impl Into<String>) -> Self {
        Self::new(Client::new(config), bus_name)
    }

    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
            backoff: Backoff::default(),
        }
    }

    /// Overrides the retry policy for failed entries.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// One entry; a segment change of a traced request carries its X-Ray trace header, so
    /// the email function's invocation joins the request's trace.
    fn entry(&self, event: &BusEvent) -> PutEventsRequestEntry {
        let trace = event
            .trace()
            .and_then(TraceContext::from_traceparent)
            .map(|t| t.to_xray());
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(event.source())
            .detail_type(event.detail_type())
            .detail(event.detail_json())
            .set_trace_header(trace)
            .build()
    }

    /// Publishes one chunk (≤10 events); returns one result per event of the chunk.
    async fn publish_chunk(&self, events: &[BusEvent]) -> Vec<PortResult<()>> {
        let mut results: Vec<Option<PortResult<()>>> = vec![None; events.len()];
        // Indices (into `events`) still to send.
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let entries: Vec<PutEventsRequestEntry> =
                pending.iter().map(|&i| self.entry(&events[i])).collect();
            let mut retry: Vec<(usize, PortError)> = Vec::new();
            match self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
            {
                Err(e) => {
                    let err = classify(&e, STAGE);
                    if err.is_retryable() {
                        retry.extend(pending.iter().map(|&i| (i, err.clone())));
                    } else {
                        for &i in &pending {
                            results[i] = Some(Err(err.clone()));
                        }
                    }
                }
                Ok(out) => {
                    let entries = out.entries();
                    for (pos, &i) in pending.iter().enumerate() {
                        match entries.get(pos) {
                            // No result entry for this input: the answer is incomplete.
                            None => retry.push((
                                i,
                                PortError::Transient {
                                    stage: STAGE,
                                    reason: "no result entry returned".into(),
                                },
                            )),
                            Some(r) => match r.error_code() {
                                None => results[i] = Some(Ok(())),
                                Some(code) => {
                                    let reason =
                                        format!("{code}: {}", r.error_message().unwrap_or(""));
                                    if is_transient_code(code) {
                                        retry.push((
                                            i,
                                            PortError::Transient {
                                                stage: STAGE,
                                                reason,
                                            },
                                        ));
                                    } else {
                                        results[i] = Some(Err(PortError::Permanent {
                                            stage: STAGE,
                                            reason,
                                        }));
                                    }
                                }
                            },
                        }
                    }
                    if out.failed_entry_count() > 0 {
                        tracing::warn!(
                            stage = STAGE,
                            bus = %self.bus_name,
                            failed = out.failed_entry_count(),
                            attempt,
                            "PutEvents reported failed entries"
                        );
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            if !self.backoff.can_retry(attempt) {
                for (i, err) in retry {
                    results[i] = Some(Err(err));
                }
                break;
            }
            self.backoff.wait(attempt).await;
            attempt += 1;
            pending = retry.into_iter().map(|(i, _)| i).collect();
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PortError::Transient {
                        stage: STAGE,
                        reason: "not attempted".into(),
                    })
                })
            })
            .collect()
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[BusEvent]) -> Vec<PortResult<()>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_ENTRIES_PER_CALL) {
            results.extend(self.publish_chunk(chunk).await);
        }
        results
    }
}
