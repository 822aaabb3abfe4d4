//! The daemon's HTTP surface: health, readiness, metrics, rollout status and
//! the Alertmanager webhook.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::alerts::{parse_webhook, FiringAlerts, Source, WebhookAlert};
use crate::controller::record::PHASE_NAMES;
use crate::daemon::telemetry::Metrics;
use crate::daemon::token::TokenFile;
use crate::judge::Verdict;
use crate::k8s::alert_record::AlertRecordStore;

/// Largest accepted webhook body. 1,000 alerts with rich labels stay well below.
pub const MAX_ALERT_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One managed service as `/v1/rollouts` shows it (and `canaryd status` reads it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Service name from the policy.
    pub service: String,
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Managed Deployment.
    pub deployment: String,
    /// Current phase, e.g. `Progressing`.
    pub phase: String,
    /// Current step (0-based) when progressing.
    pub step: Option<usize>,
    /// The last verdict with its numbers.
    pub last_verdict: Option<Verdict>,
    /// Names of matching alerts that are firing.
    pub firing_alerts: Vec<String>,
    /// The last reconcile error, until a pass succeeds again.
    pub last_error: Option<String>,
    /// Why the rollout is rolling back, rolled back or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Committed actions that keep failing: what, since when, the API's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_action: Option<String>,
}

/// Everything `/v1/rollouts` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusBoard {
    /// Every managed service.
    pub rollouts: Vec<ServiceStatus>,
    /// Policy files rejected on the last (re)load, one `file:line:column: field: message` each;
    /// the previous valid version of those policies stays in force.
    pub policy_errors: Vec<String>,
}

/// Largest `limit` `/v1/rollouts` accepts.
pub const MAX_PAGE: usize = 1000;

/// Longest `service` glob `/v1/rollouts` accepts, in characters.
pub const MAX_GLOB_CHARS: usize = 253;

/// One page of `/v1/rollouts`: the board's fields, so clients that know only
/// [`StatusBoard`] still parse it, plus counts and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutsPage {
    /// This page's rollouts, sorted by namespace, service and deployment, and
    /// every policy error.
    #[serde(flatten)]
    pub board: StatusBoard,
    /// Rollouts on the board, before filtering (0 from servers without it).
    #[serde(default)]
    pub total: usize,
    /// Rollouts that match the filters, over all pages.
    #[serde(default)]
    pub matched: usize,
    /// Matching rollouts per phase, over all pages.
    #[serde(default)]
    pub phases: BTreeMap<String, usize>,
    /// Opaque token that asks for the next page; absent on the last one.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A query parameter of `/v1/rollouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Param {
    /// `phase=Progressing[,RollingBack...]`.
    Phase,
    /// `namespace=prod` (exact).
    Namespace,
    /// `service=web-*` (glob: `*` any characters, `?` one).
    Service,
    /// `limit=100`: most rollouts in the page.
    Limit,
    /// `continue=<token>`: the page after the one that gave the token.
    Continue,
}

impl Param {
    const ALL: [Param; 5] = [
        Param::Phase,
        Param::Namespace,
        Param::Service,
        Param::Limit,
        Param::Continue,
    ];

    /// The parameter's name in the query string.
    pub fn name(self) -> &'static str {
        match self {
            Param::Phase => "phase",
            Param::Namespace => "namespace",
            Param::Service => "service",
            Param::Limit => "limit",
            Param::Continue => "continue",
        }
    }
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a `/v1/rollouts` query is refused (400, naming the parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter the endpoint does not know.
    #[error("unknown query parameter {0:?} (known: phase, namespace, service, limit, continue)")]
    Unknown(String),
    /// A parameter given more than once.
    #[error("{0}: given more than once")]
    Repeated(Param),
    /// A parameter with an empty value.
    #[error("{0}: empty value")]
    Empty(Param),
    /// A phase no rollout can be in.
    #[error("phase: unknown phase {0:?} (one of {names})", names = PHASE_NAMES.join(", "))]
    Phase(String),
    /// A limit that is not a whole number from 1 to [`MAX_PAGE`].
    #[error("limit: {0:?} is not a whole number from 1 to {MAX_PAGE}")]
    Limit(String),
    /// A glob longer than [`MAX_GLOB_CHARS`].
    #[error("service: glob longer than {MAX_GLOB_CHARS} characters")]
    GlobTooLong,
    /// A continue token this server did not give out.
    #[error("continue: malformed token")]
    Continue,
}

/// Where a page starts after: the sort key of the last rollout shown.
type PageKey = (String, String, String);

/// The sort key of `/v1/rollouts`: namespace, service, deployment (unique:
/// the board holds one entry per Deployment).
fn sort_key(r: &ServiceStatus) -> (&str, &str, &str) {
    (&r.namespace, &r.service, &r.deployment)
}

/// A `/v1/rollouts` query, parsed and checked.
#[derive(Debug, Default)]
pub struct RolloutQuery {
    /// Phases to show; empty: all.
    phases: BTreeSet<&'static str>,
    namespace: Option<String>,
    service: Option<regex::Regex>,
    /// Most rollouts in the page; `None`: all.
    limit: Option<usize>,
    /// Show only rollouts sorted after this key.
    after: Option<PageKey>,
}

impl RolloutQuery {
    /// Parses the query string's pairs; every parameter at most once.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, QueryError> {
        let mut query = Self::default();
        let mut seen = BTreeSet::new();
        for (name, value) in pairs {
            let param = Param::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| QueryError::Unknown(name.clone()))?;
            if !seen.insert(param) {
                return Err(QueryError::Repeated(param));
            }
            if value.is_empty() {
                return Err(QueryError::Empty(param));
            }
            match param {
                Param::Phase => query.phases = parse_phases(value)?,
                Param::Namespace => query.namespace = Some(value.clone()),
                Param::Service => query.service = Some(glob(value)?),
                Param::Limit => query.limit = Some(parse_limit(value)?),
                Param::Continue => query.after = Some(decode_token(value)?),
            }
        }
        Ok(query)
    }

    /// Whether `r` passes the filters (the page bounds aside).
    fn matches(&self, r: &ServiceStatus) -> bool {
        (self.phases.is_empty() || self.phases.contains(r.phase.as_str()))
            && self.namespace.as_ref().is_none_or(|n| *n == r.namespace)
            && self.service.as_ref().is_none_or(|g| g.is_match(&r.service))
    }
}

/// A comma-separated list of phase names.
fn parse_phases(value: &str) -> Result<BTreeSet<&'static str>, QueryError> {
    value
        .split(',')
        .map(|p| {
            PHASE_NAMES
                .into_iter()
                .find(|n| *n == p)
                .ok_or_else(|| QueryError::Phase(p.to_string()))
        })
        .collect()
}

fn parse_limit(value: &str) -> Result<usize, QueryError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(QueryError::Limit(value.to_string())),
    }
}

/// A whole-name glob as a regex: `*` any characters, `?` one, the rest literal.
fn glob(pattern: &str) -> Result<regex::Regex, QueryError> {
    if pattern.chars().count() > MAX_GLOB_CHARS {
        return Err(QueryError::GlobTooLong);
    }
    let mut re = String::from("(?s)^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    re.push('$');
    // Escaped and bounded, so this fails only past the regex size limit.
    regex::Regex::new(&re).map_err(|_| QueryError::GlobTooLong)
}

/// The token is base64url of a JSON array; clients treat it as opaque.
fn encode_token(key: (&str, &str, &str)) -> String {
    let json = serde_json::Value::from(vec![key.0, key.1, key.2]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_token(token: &str) -> Result<PageKey, QueryError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| QueryError::Continue)?;
    serde_json::from_slice(&bytes).map_err(|_| QueryError::Continue)
}

/// The page of `board` that `query` asks for, sorted by [`sort_key`] (pure).
/// A token names the last rollout shown, not an offset, so rollouts added or
/// removed between pages shift nothing the client has yet to see.
pub fn page(board: &StatusBoard, query: &RolloutQuery) -> RolloutsPage {
    let mut matching: Vec<&ServiceStatus> =
        board.rollouts.iter().filter(|r| query.matches(r)).collect();
    matching.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let mut phases = BTreeMap::new();
    for r in &matching {
        *phases.entry(r.phase.clone()).or_default() += 1;
    }
    let start = query.after.as_ref().map_or(0, |(ns, svc, dep)| {
        matching.partition_point(|r| sort_key(r) <= (ns.as_str(), svc.as_str(), dep.as_str()))
    });
    let rest = &matching[start..];
    let shown = &rest[..query.limit.unwrap_or(rest.len()).min(rest.len())];
    let next = match shown.last() {
        Some(last) if shown.len() < rest.len() => Some(encode_token(sort_key(last))),
        _ => None,
    };
    RolloutsPage {
        board: StatusBoard {
            rollouts: shown.iter().map(|r| (*r).clone()).collect(),
            policy_errors: board.policy_errors.clone(),
        },
        total: board.rollouts.len(),
        matched: matching.len(),
        phases,
        next,
    }
}

/// What `/readyz` waits for.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Policies were loaded at least once.
    pub policies_loaded: AtomicBool,
    /// The Kubernetes API answered.
    pub kube_reachable: AtomicBool,
    /// Whether this instance leads is known (either answer).
    pub leadership_known: AtomicBool,
}

impl Readiness {
    fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.policies_loaded.load(Ordering::Relaxed) {
            missing.push("policies not loaded");
        }
        if !self.kube_reachable.load(Ordering::Relaxed) {
            missing.push("Kubernetes API not reachable");
        }
        if !self.leadership_known.load(Ordering::Relaxed) {
            missing.push("leadership unknown");
        }
        missing
    }
}

/// State shared between the HTTP handlers and the controller.
pub struct ServerState {
    /// canaryd's own metrics.
    pub metrics: Metrics,
    /// Firing alerts, fed by the webhook and by polling.
    pub alerts: Mutex<FiringAlerts>,
    /// Woken whenever the firing set changes, so rollbacks do not wait for a tick.
    pub alerts_changed: Notify,
    /// Bearer token the webhook requires; `None` disables the webhook.
    pub alert_token: Option<Arc<TokenFile>>,
    /// Bearer token that lets a client beyond loopback read `/v1/rollouts`
    /// (the alert token does too); `None`: only loopback clients may read.
    pub read_token: Option<Arc<TokenFile>>,
    /// The cluster-wide alert record the webhook writes to, once the daemon
    /// has a Kubernetes client; without it (tests of this module alone) the
    /// webhook changes only this process's index.
    pub alert_record: OnceLock<Arc<AlertRecordStore>>,
    /// What `/v1/rollouts` shows.
    pub status: RwLock<StatusBoard>,
    /// What `/readyz` checks.
    pub readiness: Readiness,
}

impl ServerState {
    /// State with no alerts, an empty board and nothing ready yet.
    pub fn new(metrics: Metrics, alert_token: Option<TokenFile>) -> Self {
        Self {
            metrics,
            alerts: Mutex::new(FiringAlerts::default()),
            alerts_changed: Notify::new(),
            alert_token: alert_token.map(Arc::new),
            read_token: None,
            alert_record: OnceLock::new(),
            status: RwLock::new(StatusBoard::default()),
            readiness: Readiness::default(),
        }
    }
}

impl ServerState {
    /// Wakes whoever waits on `alerts_changed`. `notify_one` also leaves a
    /// permit when nobody is waiting at this instant, so a controller that is
    /// between two waits still sees the change.
    pub fn wake_alerts(&self) {
        self.alerts_changed.notify_one();
        self.alerts_changed.notify_waiters();
    }
}

/// Longest a client may take to send a request's headers; a slow-header
/// (slowloris) client is disconnected after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one request may take, body and handler included; the webhook's
/// record write has its own bounded retries well inside it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections served at once. Past it, new connections wait in the
/// kernel's accept backlog, so a flood cannot grow tasks or memory.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a shutdown waits for open connections before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The server's limits; [`Limits::DEFAULT`] in the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// See [`REQUEST_TIMEOUT`].
    pub request: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub connections: usize,
}

impl Limits {
    /// The daemon's limits.
    pub const DEFAULT: Limits = Limits {
        header_read: HEADER_READ_TIMEOUT,
        request: REQUEST_TIMEOUT,
        connections: MAX_CONNECTIONS,
    };
}

/// The peer of a connection, as the handlers see it.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// The HTTP routes, each request bounded by `request_timeout`.
pub fn router(state: Arc<ServerState>, request_timeout: Duration) -> Router {
    let alerts = Router::new()
        .route("/v1/alerts", post(receive_alerts))
        .layer(DefaultBodyLimit::max(MAX_ALERT_BODY_BYTES))
        // Authenticate before the body is read.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let board = Router::new()
        .route("/v1/rollouts", get(rollouts))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_reader,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(board)
        .merge(alerts)
        .layer(middleware::from_fn_with_state(request_timeout, time_limit))
        .with_state(state)
}

/// Serves the routes with [`Limits::DEFAULT`] until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    serve_with(listener, state, Limits::DEFAULT, shutdown).await
}

/// Serves the routes until `shutdown` completes: HTTP/1.1 with a header-read
/// timeout, a cap on connections served at once, and a time limit per
/// request.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let addr = listener
        .local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_default();
    let app = router(state, limits.request);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(Peer(peer))),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A failed connection (reset, timed out headers) is the client's business.
            let _ = conn.await;
            drop(slot);
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(addr = %addr, "Connections still open after the shutdown grace; dropping them.");
    }
    Ok(())
}

/// Bounds every request by `limit` (a slow body included).
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    let missing = state.readiness.missing();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let body = format!("not ready: {}\n", missing.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn rollouts(
    State(state): State<Arc<ServerState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let query = match RolloutQuery::parse(&params) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match state.status.read() {
        Ok(board) => Json(page(&board, &query)).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned\n").into_response(),
    }
}

/// The bearer token a request presents, if any.
fn presented(headers: &HeaderMap) -> &[u8] {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default()
}

fn unauthorized() -> Response {
    // The body never repeats what was presented.
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

async fn require_token(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.alert_token.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "alert webhook disabled: start canaryd with --alert-token-file\n",
        )
            .into_response();
    };
    if token.accepts(presented(&headers)) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

/// `/v1/rollouts` shows reasons and last errors: loopback clients (a
/// `kubectl port-forward` arrives there) read freely, others need the read
/// token or the alert token.
async fn require_reader(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let local = request
        .extensions()
        .get::<Peer>()
        .is_none_or(|Peer(peer)| peer.ip().is_loopback());
    let token = presented(&headers);
    let allowed = local
        || [&state.read_token, &state.alert_token]
            .into_iter()
            .flatten()
            .any(|t| t.accepts(token));
    if allowed {
        next.run(request).await
    } else if state.read_token.is_none() && state.alert_token.is_none() {
        (
            StatusCode::FORBIDDEN,
            "/v1/rollouts is readable from loopback only: start canaryd with --read-token-file\n",
        )
            .into_response()
    } else {
        unauthorized()
    }
}

/// What the webhook answers after applying a notification.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertsAccepted {
    received: usize,
    started: usize,
    resolved: usize,
    duplicates: usize,
    /// Firing alerts that no policy matches; they cannot affect a rollout.
    unmatched: usize,
    /// Firing alerts left out because the record is full (answered with 507,
    /// so Alertmanager sends them again).
    refused: usize,
}

async fn receive_alerts(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let payload = match parse_webhook(&body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    state
        .metrics
        .alerts_received
        .with_label_values(&["webhook"])
        .inc_by(payload.alerts.len() as u64);
    let now_ms = crate::controller::now_ms() as i64;
    let accepted = match state.alert_record.get() {
        Some(store) => match record(&state, store, &payload.alerts, now_ms).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "Alert notification not recorded; Alertmanager will retry.");
                let body = format!("alert notification not recorded, retry: {e}\n");
                return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            }
        },
        None => apply_locally(&state, &payload.alerts, now_ms),
    };
    let status = if accepted.refused > 0 {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::OK
    };
    (status, Json(accepted)).into_response()
}

/// Writes a notification into the cluster-wide record, then puts the record
/// into this replica's index at once (the watch brings it to the others).
async fn record(
    state: &ServerState,
    store: &AlertRecordStore,
    alerts: &[WebhookAlert],
    now_ms: i64,
) -> crate::Result<AlertsAccepted> {
    let (written, changes) = store.apply(alerts, now_ms).await?;
    crate::k8s::alert_record::publish(state, &written);
    Ok(AlertsAccepted {
        received: alerts.len(),
        started: changes.started.len(),
        resolved: changes.resolved.len(),
        duplicates: changes.duplicates,
        unmatched: changes.unmatched,
        refused: changes.refused,
    })
}

/// Applies a notification to this process's index only.
fn apply_locally(state: &ServerState, alerts: &[WebhookAlert], now_ms: i64) -> AlertsAccepted {
    let changes = match state.alerts.lock() {
        Ok(mut index) => index.apply(Source::Webhook, alerts, now_ms),
        Err(poisoned) => poisoned.into_inner().apply(Source::Webhook, alerts, now_ms),
    };
    if changes.changed() {
        state.wake_alerts();
    }
    AlertsAccepted {
        received: alerts.len(),
        started: changes.started.len(),
        resolved: changes.resolved.len(),
        duplicates: changes.duplicates,
        ..AlertsAccepted::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-0123456";

    async fn start() -> (String, Arc<ServerState>, tokio::sync::oneshot::Sender<()>) {
        let state = Arc::new(ServerState::new(
            Metrics::new().unwrap(),
            Some(TokenFile::fixed(TOKEN.as_bytes())),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = state.clone();
        tokio::spawn(async move {
            serve(listener, s, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        (url, state, tx)
    }

    /// Posts `len` bytes over a raw socket and returns the status code. The
    /// server answers 413 from Content-Length before the body is sent and then
    /// closes, so an HTTP client may fail its write (broken pipe) before it
    /// reads the answer; here writing and reading run independently.
    async fn post_oversized(url: &str, len: usize) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = url.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let head = format!(
            "POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..len.div_ceil(chunk.len()) {
                wr.write_all(&chunk).await?;
            }
            Ok::<(), std::io::Error>(())
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        writer.abort();
        let line = String::from_utf8_lossy(&answer);
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn payload(n: usize) -> String {
        let alerts: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"status":"firing","labels":{{"alertname":"HighErrorRate","service":"myapp","i":"{i}"}},"fingerprint":"f{i}"}}"#
                )
            })
            .collect();
        format!(
            r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
            alerts.join(",")
        )
    }

    #[tokio::test]
    async fn webhook_requires_the_token() {
        let (url, state, _stop) = start().await;
        let client = reqwest::Client::new();
        let no_token = client
            .post(format!("{url}/v1/alerts"))
            .body(payload(1))
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status(), 401);
        let wrong = client
            .post(format!("{url}/v1/alerts"))
            .bearer_auth("s3cret-tokex")
            .body(payload(1))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        assert!(state.alerts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn webhook_rejects_oversized_and_malformed_bodies() {
        let (url, state, _stop) = start().await;
        let client = reqwest::Client::new();
        assert_eq!(post_oversized(&url, 10 * 1024 * 1024).await, 413);
        let bad = client
            .post(format!("{url}/v1/alerts"))
            .bearer_auth(TOKEN)
            .body(r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":7}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let text = bad.text().await.unwrap();
        assert!(text.starts_with("alerts[0].labels: invalid type"), "{text}");
        assert!(state.alerts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn webhook_accepts_a_thousand_alerts_and_deduplicates() {
        let (url, state, _stop) = start().await;
        let client = reqwest::Client::new();
        for expected_started in [1000, 0] {
            let resp = client
                .post(format!("{url}/v1/alerts"))
                .bearer_auth(TOKEN)
                .body(payload(1000))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["started"], expected_started);
        }
        assert_eq!(state.alerts.lock().unwrap().len(), 1000);
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("canaryd_alerts_received_total{source=\"webhook\"} 2000"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn readiness_lists_what_is_missing() {
        let (url, state, _stop) = start().await;
        let resp = reqwest::get(format!("{url}/readyz")).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.text().await.unwrap(),
            "not ready: policies not loaded, Kubernetes API not reachable, leadership unknown\n"
        );
        for flag in [
            &state.readiness.policies_loaded,
            &state.readiness.kube_reachable,
            &state.readiness.leadership_known,
        ] {
            flag.store(true, Ordering::Relaxed);
        }
        let resp = reqwest::get(format!("{url}/readyz")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
    }

    #[tokio::test]
    async fn rollouts_shows_the_board() {
        let (url, state, _stop) = start().await;
        state.status.write().unwrap().policy_errors =
            vec!["policies/x.yaml:3:1: alpha: must be below 0.5".into()];
        let body: serde_json::Value = reqwest::get(format!("{url}/v1/rollouts"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["policyErrors"][0],
            "policies/x.yaml:3:1: alpha: must be below 0.5"
        );
        assert_eq!(body["rollouts"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn rollouts_pages_over_http_and_refuses_bad_parameters_naming_them() {
        let (url, state, _stop) = start().await;
        state.status.write().unwrap().rollouts = (0..5)
            .map(|i| entry("prod", &format!("web-{i}"), "Idle"))
            .collect();
        let get = |query: String| {
            let url = url.clone();
            async move {
                let resp = reqwest::get(format!("{url}/v1/rollouts?{query}"))
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            }
        };
        let (status, body) = get("service=web-*&limit=3".into()).await;
        assert_eq!(status, 200, "{body}");
        let first: RolloutsPage = serde_json::from_str(&body).unwrap();
        assert_eq!(first.board.rollouts.len(), 3);
        assert_eq!((first.total, first.matched), (5, 5));
        // Clients that know only the board still parse a page.
        let old: StatusBoard = serde_json::from_str(&body).unwrap();
        assert_eq!(old.rollouts, first.board.rollouts);
        let token = first.next.unwrap();
        let (status, body) = get(format!("service=web-*&limit=3&continue={token}")).await;
        assert_eq!(status, 200, "{body}");
        let second: RolloutsPage = serde_json::from_str(&body).unwrap();
        assert_eq!(services(&second), ["web-3", "web-4"]);
        assert_eq!(second.next, None);
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("phase=progressing", "phase"),
            ("continue=bm90LWEtdG9rZW4", "continue"),
            ("namespaces=prod", "namespaces"),
        ] {
            let (status, body) = get(query.into()).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(body.contains(param), "{query}: {body}");
        }
    }

    fn entry(namespace: &str, service: &str, phase: &str) -> ServiceStatus {
        ServiceStatus {
            service: service.into(),
            namespace: namespace.into(),
            deployment: service.into(),
            phase: phase.into(),
            step: None,
            last_verdict: None,
            firing_alerts: Vec::new(),
            last_error: None,
            reason: None,
            failing_action: None,
        }
    }

    fn services(page: &RolloutsPage) -> Vec<&str> {
        page.board
            .rollouts
            .iter()
            .map(|r| r.service.as_str())
            .collect()
    }

    fn query(q: &[(&str, &str)]) -> Result<RolloutQuery, QueryError> {
        let pairs: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RolloutQuery::parse(&pairs)
    }

    fn sample() -> StatusBoard {
        StatusBoard {
            rollouts: vec![
                entry("prod", "web-b", "Progressing"),
                entry("dev", "web-a", "Idle"),
                entry("prod", "api", "Failed"),
                entry("prod", "web-a", "Idle"),
                entry("prod", "web.x", "RollingBack"),
                entry("prod", "webxx", "Idle"),
                entry("prod", "xweb-a", "Idle"),
            ],
            policy_errors: vec!["policies/x.yaml:1:1: bad".into()],
        }
    }

    fn keys(page: &RolloutsPage) -> Vec<String> {
        page.board
            .rollouts
            .iter()
            .map(|r| format!("{}/{}", r.namespace, r.service))
            .collect()
    }

    #[test]
    fn no_parameters_give_the_whole_board_sorted_with_counts() {
        let page = page(&sample(), &query(&[]).unwrap());
        assert_eq!(
            keys(&page),
            [
                "dev/web-a",
                "prod/api",
                "prod/web-a",
                "prod/web-b",
                "prod/web.x",
                "prod/webxx",
                "prod/xweb-a"
            ]
        );
        assert_eq!(
            (page.total, page.matched, page.next.as_deref()),
            (7, 7, None)
        );
        let phases: Vec<(&str, usize)> =
            page.phases.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        assert_eq!(
            phases,
            [
                ("Failed", 1),
                ("Idle", 4),
                ("Progressing", 1),
                ("RollingBack", 1)
            ]
        );
        assert_eq!(page.board.policy_errors, ["policies/x.yaml:1:1: bad"]);
    }

    #[test]
    fn filters_combine_and_counts_follow_them() {
        let board = sample();
        let by = |q: &[(&str, &str)]| keys(&page(&board, &query(q).unwrap()));
        assert_eq!(by(&[("namespace", "dev")]), ["dev/web-a"]);
        assert_eq!(
            by(&[("phase", "Failed,RollingBack")]),
            ["prod/api", "prod/web.x"]
        );
        assert_eq!(
            by(&[
                ("phase", "Idle"),
                ("namespace", "prod"),
                ("service", "web*")
            ]),
            ["prod/web-a", "prod/webxx"]
        );
        let filtered = page(&board, &query(&[("namespace", "prod")]).unwrap());
        assert_eq!((filtered.total, filtered.matched), (7, 6));
        assert_eq!(filtered.phases["Idle"], 3);
    }

    #[test]
    fn service_globs_match_whole_names_with_star_and_question_mark_only() {
        let board = sample();
        let by = |glob: &str| {
            let page = page(
                &board,
                &query(&[("namespace", "prod"), ("service", glob)]).unwrap(),
            );
            services(&page).join(" ")
        };
        assert_eq!(by("web-*"), "web-a web-b", "anchored at both ends");
        assert_eq!(by("web?a"), "web-a");
        assert_eq!(by("web.x"), "web.x", "a dot is literal");
        assert_eq!(by("web-a*"), "web-a", "a star matches nothing too");
        assert_eq!(by("*web-a"), "web-a xweb-a");
        assert_eq!(by("web[x]x"), "", "brackets are literal");
        assert_eq!(by("*"), "api web-a web-b web.x webxx xweb-a");
        assert_eq!(
            query(&[("service", &"*".repeat(MAX_GLOB_CHARS + 1))]).err(),
            Some(QueryError::GlobTooLong)
        );
    }

    #[test]
    fn continue_tokens_walk_every_match_once_and_survive_board_changes() {
        let mut board = sample();
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("limit", "2"), ("namespace", "prod")];
            if let Some(t) = &token {
                q.push(("continue", t));
            }
            let p = page(&board, &query(&q).unwrap());
            assert!(p.board.rollouts.len() <= 2);
            assert_eq!(p.matched, 6 - usize::from(seen.len() >= 2));
            seen.extend(keys(&p));
            if seen.len() == 2 {
                // One already shown goes away: nothing still to come is skipped.
                board.rollouts.retain(|r| r.service != "api");
            }
            match p.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "prod/api",
                "prod/web-a",
                "prod/web-b",
                "prod/web.x",
                "prod/webxx",
                "prod/xweb-a"
            ]
        );
        let last = page(&board, &query(&[("limit", "100")]).unwrap());
        assert_eq!(last.next, None, "no token when everything fits");
    }

    #[test]
    fn a_token_encodes_the_last_key_and_decodes_back() {
        let token = encode_token(("prod", "web/1", "dé\"q"));
        assert_eq!(
            decode_token(&token),
            Ok(("prod".into(), "web/1".into(), "dé\"q".into()))
        );
    }

    #[test]
    fn bad_parameters_are_refused_naming_them() {
        let not_json = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[1,2]");
        for (q, want, message) in [
            (
                vec![("continue", "%%%")],
                QueryError::Continue,
                "continue: malformed token",
            ),
            (
                vec![("continue", not_json.as_str())],
                QueryError::Continue,
                "continue: malformed token",
            ),
            (
                vec![("limit", "0")],
                QueryError::Limit("0".into()),
                "limit: \"0\" is not",
            ),
            (
                vec![("limit", "1001")],
                QueryError::Limit("1001".into()),
                "limit: ",
            ),
            (
                vec![("limit", "-1")],
                QueryError::Limit("-1".into()),
                "limit: ",
            ),
            (
                vec![("limit", "ten")],
                QueryError::Limit("ten".into()),
                "limit: ",
            ),
            (
                vec![("phase", "Idle,Paused")],
                QueryError::Phase("Paused".into()),
                "phase: unknown phase \"Paused\" (one of Idle, ",
            ),
            (
                vec![("namespace", "")],
                QueryError::Empty(Param::Namespace),
                "namespace: empty value",
            ),
            (
                vec![("phase", "Idle"), ("phase", "Failed")],
                QueryError::Repeated(Param::Phase),
                "phase: given more than once",
            ),
            (
                vec![("page", "2")],
                QueryError::Unknown("page".into()),
                "unknown query parameter \"page\"",
            ),
        ] {
            assert_eq!(query(&q).err(), Some(want.clone()), "{q:?}");
            assert!(want.to_string().starts_with(message), "{want}");
        }
        assert!(query(&[("limit", &MAX_PAGE.to_string())]).is_ok());
    }

    async fn start_limited(
        limits: Limits,
    ) -> (String, Arc<ServerState>, tokio::sync::oneshot::Sender<()>) {
        let state = Arc::new(ServerState::new(
            Metrics::new().unwrap(),
            Some(TokenFile::fixed(TOKEN.as_bytes())),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(listener, state.clone(), limits, async {
            let _ = rx.await;
        }));
        (addr, state, tx)
    }

    /// Reads until the server closes the connection; returns what came and
    /// whether it closed before `within`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let closed = tokio::time::timeout(within, async {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .is_ok();
        (String::from_utf8_lossy(&got).into_owned(), closed)
    }

    #[tokio::test]
    async fn a_slow_header_client_is_dropped_after_the_header_timeout() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits {
            header_read: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let (addr, _state, _stop) = start_limited(limits).await;
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // The headers never end; the server must hang up on its own.
        let (_, closed) = closed_within(&mut slow, Duration::from_secs(10)).await;
        assert!(closed, "the slow-header connection is still open");
        // A normal client is still served.
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_is_free() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits {
            connections: 2,
            header_read: Duration::from_secs(30),
            ..Limits::DEFAULT
        };
        let (addr, _state, _stop) = start_limited(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            held.push(s);
        }
        let third = tokio::spawn({
            let addr = addr.clone();
            async move {
                reqwest::get(format!("http://{addr}/healthz"))
                    .await
                    .map(|r| r.status())
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !third.is_finished(),
            "a third connection was served past the cap of 2"
        );
        drop(held);
        let status = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("served once a slot is free")
            .unwrap()
            .unwrap();
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn a_slow_body_gets_408_after_the_request_timeout() {
        use tokio::io::AsyncWriteExt;
        let limits = Limits {
            request: Duration::from_millis(300),
            ..Limits::DEFAULT
        };
        let (addr, state, _stop) = start_limited(limits).await;
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (answer, _) = closed_within(&mut s, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(state.alerts.lock().unwrap().is_empty());
    }

    async fn rollouts_from(
        state: Arc<ServerState>,
        peer: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        use tower::ServiceExt;
        let app =
            router(state, REQUEST_TIMEOUT).layer(axum::Extension(Peer(peer.parse().unwrap())));
        let mut request = axum::http::Request::get("/v1/rollouts");
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = app
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn rollouts_beyond_loopback_need_a_token_and_errors_echo_no_secret() {
        let read = "read-token-0123456789";
        let mut state = ServerState::new(
            Metrics::new().unwrap(),
            Some(TokenFile::fixed(TOKEN.as_bytes())),
        );
        state.read_token = Some(Arc::new(TokenFile::fixed(read.as_bytes())));
        let state = Arc::new(state);
        assert_eq!(
            rollouts_from(state.clone(), "127.0.0.1:5000", None).await.0,
            200
        );
        assert_eq!(
            rollouts_from(state.clone(), "[::1]:5000", None).await.0,
            200
        );
        assert_eq!(
            rollouts_from(state.clone(), "10.1.2.3:5000", Some(read))
                .await
                .0,
            200
        );
        assert_eq!(
            rollouts_from(state.clone(), "10.1.2.3:5000", Some(TOKEN))
                .await
                .0,
            200
        );
        let (status, body) = rollouts_from(
            state.clone(),
            "10.1.2.3:5000",
            Some("read-token-0123456788"),
        )
        .await;
        assert_eq!(status, 401);
        assert!(!body.contains("read-token"), "{body}");
        assert_eq!(rollouts_from(state, "10.1.2.3:5000", None).await.0, 401);
        // Without any token, beyond loopback is refused outright.
        let open = Arc::new(ServerState::new(Metrics::new().unwrap(), None));
        let (status, body) = rollouts_from(open, "10.1.2.3:5000", None).await;
        assert_eq!(status, 403);
        assert!(body.contains("--read-token-file"), "{body}");
    }
}
