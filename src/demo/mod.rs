//! The demo service (`canaryd demo-app`) and its load generator (`canaryd demo-load`).
//!
//! The demo app answers `GET /` after a lognormal latency with HTTP 500 at a
//! configured rate, and exposes `http_requests_total{code,version,role,pod}`
//! and the `http_request_duration_seconds{version,role,pod}` histogram
//! (Prometheus default buckets) on `GET /metrics`. By default it really
//! sleeps the sampled latency and records the measured handler time; with
//! `sleep: false` it records the sampled latency without waiting.
//!
//! The load generator sends a fixed request rate, round-robin over loopback
//! URLs, for a bounded duration, and reports what it sent and got back.

pub mod pods;

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

/// Default lognormal shape (σ of the log latency).
pub const DEFAULT_LATENCY_SIGMA: f64 = 0.5;
/// Longest latency the demo app will ever wait (caps the lognormal tail).
pub const MAX_LATENCY: Duration = Duration::from_secs(5);
/// Timeout of one load-generator request.
pub const LOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests the load generator keeps in flight at most; beyond that a tick is skipped.
pub const LOAD_MAX_IN_FLIGHT: usize = 512;
/// Longest the load generator waits for in-flight requests after its duration.
pub const LOAD_DRAIN_TIMEOUT: Duration = LOAD_REQUEST_TIMEOUT;
/// Longest a load run may last.
pub const MAX_LOAD_DURATION: Duration = Duration::from_secs(3600);
/// Highest request rate the load generator accepts.
pub const MAX_LOAD_RPS: f64 = 2000.0;

/// Errors of the demo app and load generator.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A load target is not on the loopback interface.
    #[error("refusing to send load to {0}: only loopback targets are allowed")]
    NotLoopback(String),
    /// The metrics registry rejected a metric.
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
    /// Socket or HTTP server failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Building the HTTP client failed.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Settings of one demo-app instance.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// Release label, e.g. `v2`.
    pub version: String,
    /// Role label: `canary`, `baseline` or `stable`.
    pub role: String,
    /// Pod label (use a name matching `metrics::pod_regex`).
    pub pod: String,
    /// Share of requests answered with HTTP 500, in `0..=1`.
    pub error_rate: f64,
    /// Median latency.
    pub latency_median: Duration,
    /// σ of the log latency (0: constant latency).
    pub latency_sigma: f64,
    /// Sleep the sampled latency (true) or only record it (false).
    pub sleep: bool,
}

impl AppConfig {
    fn validate(&self) -> Result<LogNormal<f64>, DemoError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(DemoError::Invalid(format!(
                "error rate {} is not within 0..=1",
                self.error_rate
            )));
        }
        if self.latency_median.is_zero() {
            return Err(DemoError::Invalid("median latency must be positive".into()));
        }
        if !self.latency_sigma.is_finite() || self.latency_sigma < 0.0 {
            return Err(DemoError::Invalid(format!(
                "latency sigma {} must be finite and >= 0",
                self.latency_sigma
            )));
        }
        LogNormal::new(self.latency_median.as_secs_f64().ln(), self.latency_sigma)
            .map_err(|e| DemoError::Invalid(format!("latency distribution: {e}")))
    }
}

struct AppState {
    config: AppConfig,
    latency: LogNormal<f64>,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
}

/// The demo app's router (`/`, `/metrics`, `/healthz`) with its own registry.
pub fn app_router(config: AppConfig) -> Result<Router, DemoError> {
    let latency = config.validate()?;
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("http_requests_total", "HTTP requests by status code."),
        &["code", "version", "role", "pod"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "http_request_duration_seconds",
            "HTTP request latency in seconds.",
        ),
        &["version", "role", "pod"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    // Create every series at zero so `increase` sees them from the start.
    for code in ["200", "500"] {
        requests.with_label_values(&[code, &config.version, &config.role, &config.pod]);
    }
    duration.with_label_values(&[&config.version, &config.role, &config.pod]);
    let state = Arc::new(AppState {
        config,
        latency,
        registry,
        requests,
        duration,
    });
    Ok(Router::new()
        .route("/", get(handle_root))
        .route("/metrics", get(handle_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state))
}

async fn handle_root(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (latency, fail) = {
        let mut rng = rand::rng();
        let latency = state
            .latency
            .sample(&mut rng)
            .min(MAX_LATENCY.as_secs_f64());
        (latency, rng.random::<f64>() < state.config.error_rate)
    };
    let started = Instant::now();
    let observed = if state.config.sleep {
        tokio::time::sleep(Duration::from_secs_f64(latency)).await;
        started.elapsed().as_secs_f64()
    } else {
        latency
    };
    let c = &state.config;
    let (status, code) = if fail {
        (StatusCode::INTERNAL_SERVER_ERROR, "500")
    } else {
        (StatusCode::OK, "200")
    };
    state
        .requests
        .with_label_values(&[code, &c.version, &c.role, &c.pod])
        .inc();
    state
        .duration
        .with_label_values(&[&c.version, &c.role, &c.pod])
        .observe(observed);
    (status, format!("{} {} {}\n", c.version, c.role, code))
}

async fn handle_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    let mut out = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut out) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", encoder.format_type().to_string())],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

/// Serves the demo app on `listener` until `shutdown` completes.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    config: AppConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    let router = app_router(config)?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Settings of one load run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Requests per second over all targets.
    pub rps: f64,
    /// How long to send.
    pub duration: Duration,
    /// Loopback URLs, served round-robin.
    pub targets: Vec<String>,
}

/// What one target got during a load run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    /// The URL.
    pub url: String,
    /// Requests sent.
    pub sent: u64,
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    /// Answers with another status.
    pub other_status: u64,
    /// Requests that got no answer (connection error or timeout).
    pub failed: u64,
    /// Ticks skipped because [`LOAD_MAX_IN_FLIGHT`] requests were in flight.
    pub skipped: u64,
}

/// Summary of a load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Seconds from the first request to the last answer.
    pub elapsed_secs: f64,
    /// One entry per target, in the given order.
    pub targets: Vec<TargetReport>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    server_errors: AtomicU64,
    other_status: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// Whether `url` is an `http(s)` URL whose host is on the loopback interface.
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return false;
    }
    match parsed.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

impl Counters {
    /// Counts one answer (or its absence).
    fn count(&self, answer: reqwest::Result<reqwest::Response>) {
        let counter = match answer {
            Ok(r) if r.status().is_success() => &self.ok,
            Ok(r) if r.status().is_server_error() => &self.server_errors,
            Ok(_) => &self.other_status,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, url: &str) -> TargetReport {
        TargetReport {
            url: url.to_string(),
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            other_status: self.other_status.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// Rejects settings out of range and targets off the loopback interface.
fn validate_load(config: &LoadConfig) -> Result<(), DemoError> {
    if !(config.rps.is_finite() && config.rps > 0.0 && config.rps <= MAX_LOAD_RPS) {
        return Err(DemoError::Invalid(format!(
            "rps {} must be within (0, {MAX_LOAD_RPS}]",
            config.rps
        )));
    }
    if config.duration.is_zero() || config.duration > MAX_LOAD_DURATION {
        return Err(DemoError::Invalid(format!(
            "duration {:?} must be within (0, {MAX_LOAD_DURATION:?}]",
            config.duration
        )));
    }
    if config.targets.is_empty() {
        return Err(DemoError::Invalid("no target URL".into()));
    }
    if let Some(bad) = config.targets.iter().find(|u| !is_loopback_url(u)) {
        return Err(DemoError::NotLoopback(bad.clone()));
    }
    Ok(())
}

/// Waits at most [`LOAD_DRAIN_TIMEOUT`] for the requests in flight, then abandons them.
async fn drain(mut tasks: tokio::task::JoinSet<()>) {
    let drained = tokio::time::timeout(LOAD_DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = tasks.len(),
            "load requests still in flight after the drain timeout; abandoning them"
        );
        tasks.abort_all();
    }
}

/// Sends `rps` requests per second, round-robin over the targets, for
/// `duration`, then waits (at most [`LOAD_DRAIN_TIMEOUT`]) for answers.
pub async fn run_load(config: &LoadConfig) -> Result<LoadReport, DemoError> {
    validate_load(config)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(LOAD_REQUEST_TIMEOUT)
        .build()
        .map_err(|e| DemoError::Client(e.to_string()))?;
    let counters: Arc<Vec<Counters>> =
        Arc::new(config.targets.iter().map(|_| Counters::default()).collect());
    let permits = Arc::new(tokio::sync::Semaphore::new(LOAD_MAX_IN_FLIGHT));
    let total = (config.rps * config.duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / config.rps);
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(started + period.mul_f64(i as f64)).await;
        let target = (i % config.targets.len() as u64) as usize;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counters[target].skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        counters[target].sent.fetch_add(1, Ordering::Relaxed);
        let request = client.get(&config.targets[target]);
        let counters = counters.clone();
        tasks.spawn(async move {
            counters[target].count(request.send().await);
            drop(permit);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    drain(tasks).await;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let targets = config
        .targets
        .iter()
        .zip(counters.iter())
        .map(|(url, c)| c.report(url))
        .collect();
    Ok(LoadReport {
        elapsed_secs,
        targets,
    })
}

/// Parses a duration like `500ms`, `30s`, `5m`, `1h` or plain seconds `30`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(error_rate: f64) -> AppConfig {
        AppConfig {
            version: "v2".into(),
            role: "canary".into(),
            pod: "web-canary-7d9f8b6c5d-x2k4p".into(),
            error_rate,
            latency_median: Duration::from_millis(120),
            latency_sigma: 0.5,
            sleep: false,
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(is_loopback_url("http://127.0.0.1:8080/"));
        assert!(is_loopback_url("http://127.1.2.3:8080/"));
        assert!(is_loopback_url("http://localhost:1/"));
        assert!(is_loopback_url("http://[::1]:1/"));
        assert!(!is_loopback_url("http://10.0.0.1/"));
        assert!(!is_loopback_url("http://example.com/"));
        assert!(!is_loopback_url("ftp://127.0.0.1/"));
        assert!(!is_loopback_url("not a url"));
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(app_router(config(1.5)).is_err());
        let mut c = config(0.1);
        c.latency_sigma = -1.0;
        assert!(app_router(c).is_err());
    }

    #[tokio::test]
    async fn load_counts_match_what_the_app_exports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_app(listener, config(0.3), async {
            let _ = stopped.await;
        }));
        let report = run_load(&LoadConfig {
            rps: 200.0,
            duration: Duration::from_secs(1),
            targets: vec![format!("http://{addr}/")],
        })
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
        let t = &report.targets[0];
        assert_eq!(t.sent, 200);
        assert_eq!(t.ok + t.server_errors, 200, "{t:?}");
        assert!((30..=100).contains(&t.server_errors), "{t:?}");
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let line = format!(
            "http_requests_total{{code=\"500\",pod=\"web-canary-7d9f8b6c5d-x2k4p\",role=\"canary\",version=\"v2\"}} {}",
            t.server_errors
        );
        assert!(body.contains(&line), "missing {line} in\n{body}");
        assert!(body.contains("http_request_duration_seconds_count{pod=\"web-canary-7d9f8b6c5d-x2k4p\",role=\"canary\",version=\"v2\"} 200"), "{body}");
        assert!(
            body.contains("le=\"0.005\""),
            "default buckets expected: {body}"
        );
        let _ = stop.send(());
        assert!(server.await.is_ok());
    }

    #[tokio::test]
    async fn load_refuses_non_loopback_targets() {
        let err = run_load(&LoadConfig {
            rps: 1.0,
            duration: Duration::from_secs(1),
            targets: vec!["http://192.0.2.1/".into()],
        })
        .await;
        assert!(matches!(err, Err(DemoError::NotLoopback(_))));
    }
}
