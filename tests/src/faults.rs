//! Fault injection between the code under test and the emulator.
//!
//! [`FaultProxy`] is a small HTTP proxy on `127.0.0.1:0` that forwards every request to the
//! real emulator endpoint. Tests point an `SdkConfig` at [`FaultProxy::url`] (see
//! [`FaultProxy::sdk_config`]) and add [`Rule`]s that pick requests by AWS operation and
//! inject a [`Fault`]:
//!
//! - the service's throttling error ([`Fault::Throttle`]): DynamoDB and Kinesis
//!   `ProvisionedThroughputExceededException`, EventBridge `ThrottlingException`, SQS
//!   `ThrottlingException`, SESv2 `TooManyRequestsException` (HTTP 429);
//! - HTTP 500 ([`Fault::ServerError`]);
//! - a refusal for good: HTTP 400 `ValidationException` ([`Fault::Refuse`]), what a request
//!   the service will never accept gets;
//! - timeouts: hold the request longer than the client waits ([`Fault::Stall`]), drop the
//!   connection ([`Fault::Drop`]), or let the call take effect and lose the answer
//!   ([`Fault::DropAfterForward`], [`Fault::SlowResponse`]);
//! - a DynamoDB transaction cancelled by a concurrent one ([`Fault::TransactionConflict`]);
//! - partial failures of batch calls ([`Fault::PartialFailure`]): for `PutEvents`,
//!   `PutRecords` and `SendMessageBatch` the chosen entries are *removed* from the request
//!   before it is forwarded (so, as on AWS, a failed entry has no effect) and spliced back into
//!   the response as failed (`ErrorCode`, or SQS `Failed`), with `FailedEntryCount` /
//!   `FailedRecordCount` adjusted. The caller must re-send exactly those entries.
//!
//! Everything is deterministic: a rule fires for the first N matching requests
//! ([`Schedule::First`]), every k-th ([`Schedule::Every`]) or always, and every rule has
//! counters ([`RuleStats`]) the test reads. [`FaultProxy::calls`] counts the requests seen per
//! operation, faulted or not, which is how the benchmarks count AWS calls per batch.
//!
//! Operations are named like the wire: the `X-Amz-Target` header of JSON protocols
//! (`DynamoDB_20120810.PutItem`, `Kinesis_20131202.PutRecords`, `AWSEvents.PutEvents`,
//! `AmazonSQS.SendMessageBatch`), or `METHOD /path` for REST protocols
//! (`POST /v2/email/outbound-emails`). The upstream must be plain HTTP (an emulator).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Operation names as the proxy sees them.
pub mod op {
    pub const DDB_GET_ITEM: &str = "DynamoDB_20120810.GetItem";
    pub const DDB_PUT_ITEM: &str = "DynamoDB_20120810.PutItem";
    pub const DDB_UPDATE_ITEM: &str = "DynamoDB_20120810.UpdateItem";
    pub const DDB_DELETE_ITEM: &str = "DynamoDB_20120810.DeleteItem";
    pub const DDB_BATCH_GET_ITEM: &str = "DynamoDB_20120810.BatchGetItem";
    pub const DDB_BATCH_WRITE_ITEM: &str = "DynamoDB_20120810.BatchWriteItem";
    pub const DDB_TRANSACT_WRITE_ITEMS: &str = "DynamoDB_20120810.TransactWriteItems";
    pub const DDB_QUERY: &str = "DynamoDB_20120810.Query";
    pub const KINESIS_PUT_RECORDS: &str = "Kinesis_20131202.PutRecords";
    pub const KINESIS_PUT_RECORD: &str = "Kinesis_20131202.PutRecord";
    pub const EVENTS_PUT_EVENTS: &str = "AWSEvents.PutEvents";
    pub const SQS_SEND_MESSAGE: &str = "AmazonSQS.SendMessage";
    pub const SQS_SEND_MESSAGE_BATCH: &str = "AmazonSQS.SendMessageBatch";
    pub const SESV2_SEND_EMAIL: &str = "POST /v2/email/outbound-emails";
}

/// Which matching requests (or batch entries) a rule hits. Counting starts at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// The first `n`.
    First(u64),
    /// The k-th, 2k-th, 3k-th, …
    Every(u64),
    Always,
}

impl Schedule {
    /// Whether the `n`-th (1-based) candidate is hit.
    pub fn hits(self, n: u64) -> bool {
        match self {
            Schedule::First(limit) => n <= limit,
            Schedule::Every(k) => k > 0 && n.is_multiple_of(k),
            Schedule::Always => true,
        }
    }
}

/// Which requests a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// The exact operation name (see [`op`]).
    Operation(String),
    /// Any operation whose name starts with the prefix, e.g. `DynamoDB_20120810.`.
    Prefix(String),
}

impl Matcher {
    fn matches(&self, operation: &str) -> bool {
        match self {
            Matcher::Operation(o) => o == operation,
            Matcher::Prefix(p) => operation.starts_with(p.as_str()),
        }
    }
}

/// What the proxy does to a hit request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The service's throttling error (not forwarded).
    Throttle,
    /// HTTP 500 with the service's internal-error code (not forwarded).
    ServerError,
    /// HTTP 400 `ValidationException` (not forwarded): not retryable.
    Refuse,
    /// Holds the request this long without forwarding it, then drops the connection. Use a
    /// delay longer than the client's attempt timeout.
    Stall(Duration),
    /// Drops the connection without forwarding.
    Drop,
    /// Forwards (the call takes effect), then drops the connection instead of answering.
    DropAfterForward,
    /// Forwards (the call takes effect), then holds the answer this long.
    SlowResponse(Duration),
    /// Batch calls only: the entries hit by `entries` (counted across all hit requests of the
    /// rule) fail with the service's throttling code and are not forwarded.
    PartialFailure { entries: Schedule },
    /// DynamoDB `TransactWriteItems` only: cancelled as DynamoDB cancels a transaction when
    /// another one holds an item (not forwarded): `TransactionCanceledException`, reason
    /// `TransactionConflict` for every item after the first.
    TransactionConflict,
}

/// One fault rule: requests matching `matcher` are counted; those hit by `requests` get
/// `fault`. Rules are consulted in the order added: each matching rule counts the request
/// until one hits; that one's fault applies and later rules do not see the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub matcher: Matcher,
    /// DynamoDB only: just requests naming this table (`TableName`), e.g. profile writes and
    /// not the claims that share their operation.
    pub table: Option<String>,
    pub requests: Schedule,
    pub fault: Fault,
}

impl Rule {
    /// A rule for one operation (see [`op`]) that hits every matching request; narrow it with
    /// [`Rule::first`] or [`Rule::every`].
    pub fn new(operation: &str, fault: Fault) -> Rule {
        Rule {
            matcher: Matcher::Operation(operation.to_owned()),
            table: None,
            requests: Schedule::Always,
            fault,
        }
    }

    /// A rule for every operation whose name starts with `prefix`.
    pub fn prefix(prefix: &str, fault: Fault) -> Rule {
        Rule {
            matcher: Matcher::Prefix(prefix.to_owned()),
            table: None,
            requests: Schedule::Always,
            fault,
        }
    }

    /// Only requests on this DynamoDB table.
    pub fn on_table(mut self, table: &str) -> Rule {
        self.table = Some(table.to_owned());
        self
    }

    /// Only the first `n` matching requests.
    pub fn first(mut self, n: u64) -> Rule {
        self.requests = Schedule::First(n);
        self
    }

    /// Only every k-th matching request.
    pub fn every(mut self, k: u64) -> Rule {
        self.requests = Schedule::Every(k);
        self
    }
}

/// Counters of one rule, shared with the test.
#[derive(Debug, Default)]
pub struct RuleStats {
    matched: AtomicU64,
    injected: AtomicU64,
    entries_seen: AtomicU64,
    entries_failed: AtomicU64,
}

impl RuleStats {
    /// Requests that matched the rule's operation.
    pub fn matched(&self) -> u64 {
        self.matched.load(Ordering::SeqCst)
    }
    /// Requests the fault was applied to.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
    /// Batch entries seen in hit requests ([`Fault::PartialFailure`] only).
    pub fn entries_seen(&self) -> u64 {
        self.entries_seen.load(Ordering::SeqCst)
    }
    /// Batch entries reported failed ([`Fault::PartialFailure`] only).
    pub fn entries_failed(&self) -> u64 {
        self.entries_failed.load(Ordering::SeqCst)
    }
}

struct ActiveRule {
    rule: Rule,
    stats: Arc<RuleStats>,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<ActiveRule>>,
    calls: Mutex<BTreeMap<String, u64>>,
    meter: Mutex<Option<Arc<crate::capacity::CapacityMeter>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The proxy. Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish()
    }
}

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    #[error("upstream endpoint: {0}")]
    Upstream(String),
    #[error("binding the proxy listener: {0}")]
    Bind(#[from] std::io::Error),
}

type ProxyBody = Full<Bytes>;
type HttpClient = Client<HttpConnector, ProxyBody>;

impl FaultProxy {
    /// Starts a proxy in front of the emulator endpoints the SDK would use: each request goes
    /// to its service's `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL` (read from
    /// `.emulator/env` when not exported, see [`crate::emulator::load_env`]), so services
    /// split across emulators stay where their resources are.
    pub async fn from_env() -> Result<FaultProxy, FaultProxyError> {
        crate::emulator::load_env();
        let upstream = std::env::var("AWS_ENDPOINT_URL")
            .map_err(|_| FaultProxyError::Upstream("AWS_ENDPOINT_URL is not set".into()))?;
        let mut upstreams = Upstreams::new(&upstream)?;
        for (_, service) in SIGNING_NAMES {
            if let Some(url) = std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
                .ok()
                .filter(|u| !u.trim().is_empty())
            {
                upstreams.services.insert(service, plain_http(&url)?);
            }
        }
        FaultProxy::serve(upstreams).await
    }

    /// Starts a proxy on `127.0.0.1:0` forwarding everything to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Result<FaultProxy, FaultProxyError> {
        FaultProxy::serve(Upstreams::new(upstream)?).await
    }

    async fn serve(upstreams: Upstreams) -> Result<FaultProxy, FaultProxyError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstreams.default.clone();
        let task = tokio::spawn(accept_loop(
            listener,
            state.clone(),
            client,
            Arc::new(upstreams),
        ));
        Ok(FaultProxy {
            addr,
            upstream,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`: the endpoint URL to give the SDK.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where requests of services without an endpoint of their own go.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// An `SdkConfig` whose every client goes through this proxy, with a short per-attempt
    /// timeout (so [`Fault::Stall`] is noticed quickly) and the SDK's standard retries
    /// (`max_attempts` per call, 10 ms initial backoff so tests stay fast).
    pub async fn sdk_config(&self, max_attempts: u32, attempt_timeout: Duration) -> SdkConfig {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .endpoint_url(self.url())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(10))
                    .with_max_backoff(Duration::from_millis(100)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt_timeout)
                    .connect_timeout(Duration::from_secs(2))
                    .build(),
            )
            .load()
            .await
    }

    /// Adds a rule (after the existing ones) and returns its counters.
    pub fn add(&self, rule: Rule) -> Arc<RuleStats> {
        let stats = Arc::new(RuleStats::default());
        lock(&self.state.rules).push(ActiveRule {
            rule,
            stats: stats.clone(),
        });
        stats
    }

    /// Removes every rule: from now on everything is forwarded untouched.
    pub fn clear_rules(&self) {
        lock(&self.state.rules).clear();
    }

    /// Requests seen for `operation` (faulted or not) since start or [`Self::reset_calls`].
    pub fn calls(&self, operation: &str) -> u64 {
        lock(&self.state.calls).get(operation).copied().unwrap_or(0)
    }

    /// Requests seen per operation.
    pub fn all_calls(&self) -> BTreeMap<String, u64> {
        lock(&self.state.calls).clone()
    }

    /// A DynamoDB capacity meter over every call forwarded from now on (one per proxy).
    pub fn meter(&self) -> Arc<crate::capacity::CapacityMeter> {
        lock(&self.state.meter)
            .get_or_insert_with(Default::default)
            .clone()
    }

    pub fn reset_calls(&self) {
        lock(&self.state.calls).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Signing names (the service in a SigV4 credential scope) and the SDK's service ids as the
/// endpoint variables spell them. SES signs v1 and v2 alike: the path tells them apart.
const SIGNING_NAMES: &[(&str, &str)] = &[
    ("dynamodb", "DYNAMODB"),
    ("kinesis", "KINESIS"),
    ("events", "EVENTBRIDGE"),
    ("sqs", "SQS"),
    ("ses", "SESV2"),
    ("ses", "SES"),
    ("s3", "S3"),
    ("firehose", "FIREHOSE"),
    ("monitoring", "CLOUDWATCH"),
    ("logs", "CLOUDWATCH_LOGS"),
    ("kms", "KMS"),
    ("sts", "STS"),
];

/// Where the proxy forwards: per service id, else the default.
#[derive(Debug, Clone)]
struct Upstreams {
    default: String,
    services: BTreeMap<&'static str, String>,
}

impl Upstreams {
    fn new(default: &str) -> Result<Upstreams, FaultProxyError> {
        Ok(Upstreams {
            default: plain_http(default)?,
            services: BTreeMap::new(),
        })
    }

    /// The upstream of `req`'s service, named by its SigV4 credential scope.
    fn of<B>(&self, req: &Request<B>) -> &str {
        let signing = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|auth| auth.split("Credential=").nth(1))
            .and_then(|credential| credential.split('/').nth(3));
        let v2 = req.uri().path().starts_with("/v2/");
        let service = SIGNING_NAMES
            .iter()
            .filter(|(name, _)| Some(*name) == signing)
            .map(|(_, id)| *id)
            .find(|id| *id != if v2 { "SES" } else { "SESV2" });
        service
            .and_then(|id| self.services.get(id))
            .unwrap_or(&self.default)
    }
}

fn plain_http(url: &str) -> Result<String, FaultProxyError> {
    let url = url.trim().trim_end_matches('/').to_owned();
    if !url.starts_with("http://") {
        return Err(FaultProxyError::Upstream(format!(
            "only plain-HTTP emulator endpoints can be proxied, got {url}"
        )));
    }
    Ok(url)
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    client: HttpClient,
    upstreams: Arc<Upstreams>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (state, client, upstreams) = (state.clone(), client.clone(), upstreams.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let upstream = upstreams.of(&req).to_owned();
                handle(req, state.clone(), client.clone(), upstream)
            });
            // A connection ends with an error when a fault drops it on purpose: ignore.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

/// Why the proxy closed a connection instead of answering.
#[derive(Debug, thiserror::Error)]
#[error("fault proxy: {0}")]
struct Dropped(String);

/// The operation name of a request (see the module doc).
pub fn operation_of<B>(req: &Request<B>) -> String {
    match req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        Some(target) => target.to_owned(),
        None => format!("{} {}", req.method(), req.uri().path()),
    }
}

/// The `TableName` of a DynamoDB request body.
fn table_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("TableName")?.as_str().map(str::to_owned)
}

/// What to do with one request, decided under the rules lock.
enum Decision {
    Forward,
    Inject(Fault, Arc<RuleStats>, Schedule),
}

fn decide(state: &State, operation: &str, body: &[u8]) -> Decision {
    let rules = lock(&state.rules);
    // Bodies are parsed only while a rule filters on a table.
    let table = rules
        .iter()
        .any(|r| r.rule.table.is_some())
        .then(|| table_of(body))
        .flatten();
    let candidates = rules.iter().filter(|r| {
        r.rule.matcher.matches(operation) && (r.rule.table.is_none() || r.rule.table == table)
    });
    for active in candidates {
        let n = active.stats.matched.fetch_add(1, Ordering::SeqCst) + 1;
        if !active.rule.requests.hits(n) {
            continue;
        }
        active.stats.injected.fetch_add(1, Ordering::SeqCst);
        let entries = match active.rule.fault {
            Fault::PartialFailure { entries } => entries,
            _ => Schedule::Always,
        };
        return Decision::Inject(active.rule.fault.clone(), active.stats.clone(), entries);
    }
    Decision::Forward
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    client: HttpClient,
    upstream: String,
) -> Result<Response<ProxyBody>, Dropped> {
    let operation = operation_of(&req);
    *lock(&state.calls).entry(operation.clone()).or_insert(0) += 1;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Dropped(format!("reading request body: {e}")))?
        .to_bytes();
    let req = Request::from_parts(parts, body);

    match decide(&state, &operation, req.body()) {
        Decision::Forward => {
            let meter = lock(&state.meter).clone();
            match meter {
                None => forward(&client, &upstream, req).await,
                Some(meter) => {
                    let body = req.body().clone();
                    let response = forward(&client, &upstream, req).await?;
                    let answer = response.body().clone();
                    let answer = answer
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    meter.observe(&operation, &body, response.status().as_u16(), &answer);
                    let (parts, _) = response.into_parts();
                    Ok(Response::from_parts(parts, Full::new(answer)))
                }
            }
        }
        Decision::Inject(fault, stats, entries) => match fault {
            Fault::Throttle => Ok(error_response(&operation, ErrorKind::Throttle)),
            Fault::ServerError => Ok(error_response(&operation, ErrorKind::Internal)),
            Fault::Refuse => Ok(error_response(&operation, ErrorKind::Refused)),
            Fault::Stall(delay) => {
                tokio::time::sleep(delay).await;
                Err(Dropped(format!("stalled {operation} for {delay:?}")))
            }
            Fault::Drop => Err(Dropped(format!("dropped {operation}"))),
            Fault::DropAfterForward => {
                let _ = forward(&client, &upstream, req).await;
                Err(Dropped(format!("dropped the answer to {operation}")))
            }
            Fault::SlowResponse(delay) => {
                let response = forward(&client, &upstream, req).await;
                tokio::time::sleep(delay).await;
                response
            }
            Fault::TransactionConflict => Ok(transaction_conflict(req.body())),
            Fault::PartialFailure { .. } => {
                partial_failure(&client, &upstream, &operation, req, &stats, entries).await
            }
        },
    }
}

async fn forward(
    client: &HttpClient,
    upstream: &str,
    req: Request<Bytes>,
) -> Result<Response<ProxyBody>, Dropped> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = format!("{upstream}{path}")
        .parse()
        .map_err(|e| Dropped(format!("building the upstream URI: {e}")))?;
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let response = client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| Dropped(format!("forwarding to {upstream}: {e}")))?;
    let (mut parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Dropped(format!("reading the upstream answer: {e}")))?
        .to_bytes();
    parts.headers.remove(TRANSFER_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// DynamoDB's answer to a `TransactWriteItems` cancelled by a concurrent transaction: one
/// cancellation reason per item, in the request's order.
fn transaction_conflict(request: &[u8]) -> Response<ProxyBody> {
    let items = serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|r| r["TransactItems"].as_array().map(Vec::len))
        .unwrap_or(1);
    // The profile's put (first) is fine; the items after it are held by another transaction.
    let codes: Vec<&str> = (0..items)
        .map(|i| {
            if i == 0 && items > 1 {
                "None"
            } else {
                "TransactionConflict"
            }
        })
        .collect();
    let reasons: Vec<Value> = codes
        .iter()
        .map(|&code| match code {
            "None" => json!({ "Code": code }),
            _ => json!({ "Code": code, "Message": "Transaction is ongoing for the item" }),
        })
        .collect();
    let body = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
        "CancellationReasons": reasons,
    })
    .to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

#[derive(Clone, Copy)]
enum ErrorKind {
    Throttle,
    Internal,
    Refused,
}

/// The wire error a service returns for throttling, an internal failure or a refusal.
fn error_response(operation: &str, kind: ErrorKind) -> Response<ProxyBody> {
    let throttle = matches!(kind, ErrorKind::Throttle);
    let refused = matches!(kind, ErrorKind::Refused);
    let status = if throttle || refused {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    // JSON-protocol services: (operation prefix, content type, throttling code, internal
    // failure code, message), as each service answers.
    const JSON_ERRORS: [(&str, &str, &str, &str, &str); 4] = [
        (
            "DynamoDB_20120810.",
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            "injected by the fault proxy",
        ),
        (
            "Kinesis_20131202.",
            "application/x-amz-json-1.1",
            "ProvisionedThroughputExceededException",
            "InternalFailure",
            "Rate exceeded for shard (injected)",
        ),
        (
            "AWSEvents.",
            "application/x-amz-json-1.1",
            "ThrottlingException",
            "InternalException",
            "Rate exceeded (injected)",
        ),
        (
            "AmazonSQS.",
            "application/x-amz-json-1.0",
            "ThrottlingException",
            "InternalError",
            "injected by the fault proxy",
        ),
    ];
    let json_error = JSON_ERRORS
        .iter()
        .find(|(prefix, ..)| operation.starts_with(prefix));
    let (content_type, code, message) =
        if let Some((_, ct, throttling, internal, message)) = json_error {
            let code = match kind {
                ErrorKind::Throttle => *throttling,
                ErrorKind::Internal => *internal,
                ErrorKind::Refused => "ValidationException",
            };
            (*ct, code, *message)
        } else {
            // REST-JSON (SESv2 …): the code travels in a header, 429 for throttling.
            let (status, code) = match kind {
                ErrorKind::Throttle => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException"),
                ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
                ErrorKind::Refused => (StatusCode::BAD_REQUEST, "BadRequestException"),
            };
            let body =
                json!({ "message": format!("{code} (injected by the fault proxy)") }).to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert("x-amzn-errortype", HeaderValue::from_static(code));
            return response;
        };
    let body = json!({ "__type": code, "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The batch shape of an operation: request entries key, and how results come back.
enum BatchShape {
    /// PutEvents / PutRecords: results in order, failed ones carry `ErrorCode`.
    Ordered {
        entries: &'static str,
        results: &'static str,
        count: &'static str,
        code: &'static str,
    },
    /// SendMessageBatch: `Successful` / `Failed` lists keyed by entry `Id`.
    Keyed,
}

fn batch_shape(operation: &str) -> Option<BatchShape> {
    match operation {
        op::EVENTS_PUT_EVENTS => Some(BatchShape::Ordered {
            entries: "Entries",
            results: "Entries",
            count: "FailedEntryCount",
            code: "ThrottlingException",
        }),
        op::KINESIS_PUT_RECORDS => Some(BatchShape::Ordered {
            entries: "Records",
            results: "Records",
            count: "FailedRecordCount",
            code: "ProvisionedThroughputExceededException",
        }),
        op::SQS_SEND_MESSAGE_BATCH => Some(BatchShape::Keyed),
        _ => None,
    }
}

async fn partial_failure(
    client: &HttpClient,
    upstream: &str,
    operation: &str,
    req: Request<Bytes>,
    stats: &RuleStats,
    entries: Schedule,
) -> Result<Response<ProxyBody>, Dropped> {
    let Some(shape) = batch_shape(operation) else {
        // Not a batch call: nothing to fail per entry.
        return forward(client, upstream, req).await;
    };
    let entries_key = match shape {
        BatchShape::Ordered { entries, .. } => entries,
        BatchShape::Keyed => "Entries",
    };
    let (parts, body) = req.into_parts();
    let Ok(mut request_json) = serde_json::from_slice::<Value>(&body) else {
        return forward(client, upstream, Request::from_parts(parts, body)).await;
    };
    let all: Vec<Value> = request_json
        .get(entries_key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Which entries fail, counted across all hit requests of the rule.
    let failed: Vec<bool> = all
        .iter()
        .map(|_| {
            let n = stats.entries_seen.fetch_add(1, Ordering::SeqCst) + 1;
            entries.hits(n)
        })
        .collect();
    let failed_count = failed.iter().filter(|f| **f).count();
    stats
        .entries_failed
        .fetch_add(failed_count as u64, Ordering::SeqCst);
    let kept: Vec<Value> = all
        .iter()
        .zip(&failed)
        .filter(|(_, f)| !**f)
        .map(|(e, _)| e.clone())
        .collect();

    // Forward only the entries that "made it"; if none did, answer without forwarding.
    let mut upstream_json = Value::Null;
    let mut template: Option<hyper::http::response::Parts> = None;
    if !kept.is_empty() {
        request_json[entries_key] = Value::Array(kept);
        let body = Bytes::from(request_json.to_string());
        let response = forward(client, upstream, Request::from_parts(parts, body)).await?;
        let (rparts, rbody) = response.into_parts();
        let bytes = rbody
            .collect()
            .await
            .map_err(|e| Dropped(e.to_string()))?
            .to_bytes();
        if !rparts.status.is_success() {
            // The whole call failed upstream: pass that on unchanged.
            return Ok(Response::from_parts(rparts, Full::new(bytes)));
        }
        upstream_json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        template = Some(rparts);
    }

    let merged = match shape {
        BatchShape::Ordered {
            results,
            count,
            code,
            ..
        } => {
            let mut upstream_results = upstream_json
                .get(results)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter();
            let merged: Vec<Value> = failed
                .iter()
                .map(|f| {
                    if *f {
                        json!({ "ErrorCode": code, "ErrorMessage": "injected by the fault proxy" })
                    } else {
                        upstream_results.next().unwrap_or_else(
                            || json!({ "ErrorCode": "InternalFailure", "ErrorMessage": "missing" }),
                        )
                    }
                })
                .collect();
            let failures = merged
                .iter()
                .filter(|r| r.get("ErrorCode").is_some())
                .count();
            let mut out = if upstream_json.is_object() {
                upstream_json
            } else {
                json!({})
            };
            out[results] = Value::Array(merged);
            out[count] = json!(failures);
            out
        }
        BatchShape::Keyed => {
            let mut out = if upstream_json.is_object() {
                upstream_json
            } else {
                json!({})
            };
            if out.get("Successful").is_none() {
                out["Successful"] = json!([]);
            }
            let mut failed_list = out
                .get("Failed")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (entry, f) in all.iter().zip(&failed) {
                if *f {
                    failed_list.push(json!({
                        "Id": entry.get("Id").cloned().unwrap_or(Value::Null),
                        "SenderFault": false,
                        "Code": "InternalError",
                        "Message": "injected by the fault proxy",
                    }));
                }
            }
            out["Failed"] = Value::Array(failed_list);
            out
        }
    };
    let body = Bytes::from(merged.to_string());
    let mut response = match template {
        Some(parts) => Response::from_parts(parts, Full::new(body.clone())),
        None => {
            let mut r = Response::new(Full::new(body.clone()));
            let content_type = if operation.starts_with("AmazonSQS.") {
                "application/x-amz-json-1.0"
            } else {
                "application/x-amz-json-1.1"
            };
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
    };
    let headers = response.headers_mut();
    headers.remove("x-amz-crc32");
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_deterministic() {
        let first: Vec<bool> = (1..=4).map(|n| Schedule::First(2).hits(n)).collect();
        assert_eq!(first, vec![true, true, false, false]);
        let every: Vec<bool> = (1..=6).map(|n| Schedule::Every(3).hits(n)).collect();
        assert_eq!(every, vec![false, false, true, false, false, true]);
        assert!(!Schedule::Every(0).hits(1));
        assert!(Schedule::Always.hits(99));
    }

    #[test]
    fn operations_are_named_like_the_wire() {
        let req = Request::builder()
            .header("X-Amz-Target", "DynamoDB_20120810.PutItem")
            .body(())
            .unwrap();
        assert_eq!(operation_of(&req), op::DDB_PUT_ITEM);
        let req = Request::builder()
            .method("POST")
            .uri("/v2/email/outbound-emails")
            .body(())
            .unwrap();
        assert_eq!(operation_of(&req), op::SESV2_SEND_EMAIL);
        assert!(Matcher::Prefix("DynamoDB_20120810.".into()).matches(op::DDB_GET_ITEM));
        assert!(!Matcher::Operation(op::DDB_GET_ITEM.into()).matches(op::DDB_PUT_ITEM));
    }

    #[test]
    fn a_table_rule_counts_and_hits_only_requests_on_its_table() {
        let state = State::default();
        let stats = Arc::new(RuleStats::default());
        lock(&state.rules).push(ActiveRule {
            rule: Rule::new(op::DDB_PUT_ITEM, Fault::Drop).on_table("profiles"),
            stats: stats.clone(),
        });
        let hit = |body: &str| {
            matches!(
                decide(&state, op::DDB_PUT_ITEM, body.as_bytes()),
                Decision::Inject(..)
            )
        };
        assert!(!hit(r#"{"TableName":"ledger","Item":{}}"#));
        assert!(!hit("not json"));
        assert!(hit(r#"{"TableName":"profiles","Item":{}}"#));
        assert_eq!((stats.matched(), stats.injected()), (1, 1));
    }
}
