//! The daemon's HTTP surface: health, readiness, metrics, rollout status and
//! the Alertmanager webhook.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::alerts::{parse_webhook, FiringAlerts};
use crate::daemon::telemetry::Metrics;
use crate::judge::Verdict;

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
    pub alert_token: Option<Vec<u8>>,
    /// What `/v1/rollouts` shows.
    pub status: RwLock<StatusBoard>,
    /// What `/readyz` checks.
    pub readiness: Readiness,
}

impl ServerState {
    /// State with no alerts, an empty board and nothing ready yet.
    pub fn new(metrics: Metrics, alert_token: Option<Vec<u8>>) -> Self {
        Self {
            metrics,
            alerts: Mutex::new(FiringAlerts::default()),
            alerts_changed: Notify::new(),
            alert_token,
            status: RwLock::new(StatusBoard::default()),
            readiness: Readiness::default(),
        }
    }
}

/// Reads the webhook token file; surrounding whitespace (a trailing newline) is not part of it.
pub fn read_token_file(path: &std::path::Path) -> crate::Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| crate::Error::ReadInput {
        path: path.display().to_string(),
        source,
    })?;
    Ok(raw.trim_ascii().to_vec())
}

/// The HTTP routes.
pub fn router(state: Arc<ServerState>) -> Router {
    let alerts = Router::new()
        .route("/v1/alerts", post(receive_alerts))
        .layer(DefaultBodyLimit::max(MAX_ALERT_BODY_BYTES))
        // Authenticate before the body is read.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/rollouts", get(rollouts))
        .merge(alerts)
        .with_state(state)
}

/// Serves the routes until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let addr = listener
        .local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_default();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| crate::Error::Serve { addr, source })
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

async fn rollouts(State(state): State<Arc<ServerState>>) -> Response {
    match state.status.read() {
        Ok(board) => Json(board.clone()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned\n").into_response(),
    }
}

async fn require_token(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.alert_token.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            "alert webhook disabled: start canaryd with --alert-token-file\n",
        )
            .into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    // Constant time: the comparison must not leak how much of the token matched.
    if presented.ct_eq(expected).into() {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response()
    }
}

/// What the webhook answers after applying a notification.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertsAccepted {
    received: usize,
    started: usize,
    resolved: usize,
    duplicates: usize,
}

async fn receive_alerts(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let payload = match parse_webhook(&body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let changes = match state.alerts.lock() {
        Ok(mut index) => index.apply(&payload.alerts),
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "alert index poisoned\n").into_response()
        }
    };
    state
        .metrics
        .alerts_received
        .with_label_values(&["webhook"])
        .inc_by(payload.alerts.len() as u64);
    if !changes.started.is_empty() || !changes.resolved.is_empty() {
        // notify_one keeps a permit when nobody waits right now; notify_waiters
        // wakes everyone who does.
        state.alerts_changed.notify_one();
        state.alerts_changed.notify_waiters();
    }
    Json(AlertsAccepted {
        received: payload.alerts.len(),
        started: changes.started.len(),
        resolved: changes.resolved.len(),
        duplicates: changes.duplicates,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token";

    async fn start() -> (String, Arc<ServerState>, tokio::sync::oneshot::Sender<()>) {
        let state = Arc::new(ServerState::new(
            Metrics::new().unwrap(),
            Some(TOKEN.as_bytes().to_vec()),
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
}
