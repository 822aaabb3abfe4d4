//! [`PrometheusSource`]: the [`MetricSource`] backed by the Prometheus HTTP API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::{try_join_all, BoxFuture};
use prometheus_http_query::response::Data;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::observation::{MetricWindow, WindowObservation};
use crate::policy::{Policy, PrometheusAuth, PrometheusConfig};

use super::query::{batched_query, parse_batched};
use super::{MetricSource, MetricsError, Role, Window};

/// Longest one HTTP query may take, connection included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a TCP/TLS connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Evaluation timeout asked of Prometheus (`timeout=`), below [`QUERY_TIMEOUT`].
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(8);
/// Attempts per query, the first included, for retryable errors.
pub const MAX_ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled before each later one.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Readiness probe timeout for [`MetricSource::is_online`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Characters of an unexpected response body kept in error messages.
const BODY_EXCERPT_CHARS: usize = 200;

/// Timeouts and retry bounds of a [`PrometheusSource`]; defaults are the
/// named constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceOptions {
    /// Longest one HTTP query may take ([`QUERY_TIMEOUT`]).
    pub query_timeout: Duration,
    /// Longest a connection may take to open ([`CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Attempts per query ([`MAX_ATTEMPTS`]; at least 1).
    pub max_attempts: u32,
    /// First backoff, doubled per retry ([`INITIAL_BACKOFF`]).
    pub initial_backoff: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            query_timeout: QUERY_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            max_attempts: MAX_ATTEMPTS,
            initial_backoff: INITIAL_BACKOFF,
        }
    }
}

/// Reads metrics from a Prometheus server with one instant query per metric
/// per window (both arms batched), bounded retries with exponential backoff,
/// and optional bearer/basic auth and a custom CA.
pub struct PrometheusSource {
    client: prometheus_http_query::Client,
    url: String,
    auth: Option<PrometheusAuth>,
    options: SourceOptions,
    queries_sent: AtomicU64,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &self.url)
            .field("auth", &self.auth.as_ref().map(|_| "<configured>"))
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// Builds a source for `config`. Reads the CA file now; secret files are
    /// read on every request so rotated tokens are picked up.
    pub fn new(config: &PrometheusConfig) -> Result<Self, MetricsError> {
        Self::with_options(config, SourceOptions::default())
    }

    /// Like [`PrometheusSource::new`] with explicit timeouts and retry bounds.
    pub fn with_options(
        config: &PrometheusConfig,
        options: SourceOptions,
    ) -> Result<Self, MetricsError> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.query_timeout)
            .connect_timeout(options.connect_timeout);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                MetricsError::Config(format!("reading CA file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| MetricsError::Config(format!("CA file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(MetricsError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| MetricsError::Config(format!("building HTTP client: {e}")))?;
        let client = prometheus_http_query::Client::from(http, &config.url)
            .map_err(|e| MetricsError::Config(format!("prometheus URL {:?}: {e}", config.url)))?;
        Ok(PrometheusSource {
            client,
            url: config.url.clone(),
            auth: config.auth.clone(),
            options,
            queries_sent: AtomicU64::new(0),
        })
    }

    /// HTTP query requests sent so far, retries included.
    pub fn queries_sent(&self) -> u64 {
        self.queries_sent.load(Ordering::Relaxed)
    }

    /// Runs an instant query at `at_unix_secs`, retrying retryable errors up
    /// to `max_attempts` times with exponential backoff.
    pub async fn query(&self, promql: &str, at_unix_secs: i64) -> Result<Data, MetricsError> {
        let mut backoff = self.options.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.query_once(promql, at_unix_secs).await {
                Ok(data) => return Ok(data),
                Err(error) if error.is_retryable() && attempt < self.options.max_attempts => {
                    tracing::warn!(attempt, backoff_ms = backoff.as_millis() as u64, %error, "prometheus query failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn auth_header(&self) -> Result<Option<HeaderValue>, MetricsError> {
        let read = |path: std::path::PathBuf| async move {
            tokio::fs::read_to_string(&path)
                .await
                .map(|s| s.trim().to_string())
                .map_err(|e| MetricsError::Config(format!("reading {}: {e}", path.display())))
        };
        let value = match &self.auth {
            None => return Ok(None),
            Some(PrometheusAuth::BearerTokenFile(path)) => {
                format!("Bearer {}", read(path.clone()).await?)
            }
            Some(PrometheusAuth::Basic {
                username,
                password_file,
            }) => {
                let password = read(password_file.clone()).await?;
                format!(
                    "Basic {}",
                    base64(format!("{username}:{password}").as_bytes())
                )
            }
        };
        let mut header = HeaderValue::from_str(&value)
            .map_err(|_| MetricsError::Config("credentials are not a valid header value".into()))?;
        header.set_sensitive(true);
        Ok(Some(header))
    }

    fn transport_error(&self, e: &reqwest::Error) -> MetricsError {
        if e.is_timeout() {
            MetricsError::Timeout {
                url: self.url.clone(),
                after: self.options.query_timeout,
            }
        } else {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                source = s.source();
            }
            MetricsError::Unreachable {
                url: self.url.clone(),
                reason,
            }
        }
    }

    async fn query_once(&self, promql: &str, at_unix_secs: i64) -> Result<Data, MetricsError> {
        let mut request = self
            .client
            .query(promql)
            .at(at_unix_secs)
            .timeout(EVAL_TIMEOUT.min(self.options.query_timeout).as_millis() as i64);
        if let Some(auth) = self.auth_header().await? {
            request = request.header(AUTHORIZATION, auth);
        }
        self.queries_sent.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            at = at_unix_secs,
            query = promql,
            "prometheus instant query"
        );
        let response = request.post_raw().await.map_err(|e| match &e {
            prometheus_http_query::Error::Client(c) => match c.inner() {
                Some(inner) => self.transport_error(inner),
                None => MetricsError::Unreachable {
                    url: self.url.clone(),
                    reason: e.to_string(),
                },
            },
            other => MetricsError::Config(other.to_string()),
        })?;
        let status = response.status();
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        decode_response(status.as_u16(), is_json, &body)
    }
}

/// Turns one `/api/v1/query` HTTP answer into data or a typed error.
pub(crate) fn decode_response(
    status: u16,
    is_json: bool,
    body: &str,
) -> Result<Data, MetricsError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        status: String,
        data: Option<serde_json::Value>,
        #[serde(rename = "errorType")]
        error_type: Option<String>,
        error: Option<String>,
    }
    let envelope = if is_json {
        serde_json::from_str::<Envelope>(body).ok()
    } else {
        None
    };
    match envelope {
        Some(env) if env.status == "error" => Err(MetricsError::Prometheus {
            error_type: env.error_type.unwrap_or_else(|| "unknown".into()),
            message: env.error.unwrap_or_default(),
        }),
        _ if !(200..300).contains(&status) => Err(MetricsError::HttpStatus {
            status,
            body: body.chars().take(BODY_EXCERPT_CHARS).collect(),
        }),
        Some(env) if env.status == "success" => {
            let data = env
                .data
                .ok_or_else(|| MetricsError::BadResponse("success without data".into()))?;
            serde_json::from_value::<Data>(data)
                .map_err(|e| MetricsError::BadResponse(e.to_string()))
        }
        Some(env) => Err(MetricsError::BadResponse(format!(
            "status {:?}",
            env.status
        ))),
        None => Err(MetricsError::BadResponse(format!(
            "not a Prometheus JSON answer: {}",
            body.chars().take(BODY_EXCERPT_CHARS).collect::<String>()
        ))),
    }
}

/// Standard base64 with padding (for the basic-auth header).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl MetricSource for PrometheusSource {
    fn observe<'a>(
        &'a self,
        policy: &'a Policy,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<WindowObservation, MetricsError>> {
        Box::pin(async move {
            let baseline = Role::comparison(policy.baseline);
            let metrics = try_join_all(policy.analysis.metrics.iter().map(|spec| async move {
                let promql = batched_query(policy, spec, baseline, window.length);
                let data = self.query(&promql, window.end_unix_secs).await?;
                let (canary, baseline) = parse_batched(spec, baseline, &data);
                Ok::<_, MetricsError>(MetricWindow {
                    name: spec.name.clone(),
                    canary,
                    baseline,
                })
            }))
            .await?;
            Ok(WindowObservation {
                at_secs: window.at_secs,
                expected_canary_share: window.expected_canary_share,
                metrics,
            })
        })
    }

    fn is_online(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Ok(url) = self.client.base_url().join("-/ready") else {
                return false;
            };
            let mut request = self.client.inner().get(url).timeout(READY_TIMEOUT);
            match self.auth_header().await {
                Ok(Some(auth)) => request = request.header(AUTHORIZATION, auth),
                Ok(None) => {}
                Err(_) => return false,
            }
            matches!(request.send().await, Ok(r) if r.status().is_success())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn decodes_success_and_error_answers() {
        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}"#;
        assert!(matches!(decode_response(200, true, ok), Ok(Data::Vector(v)) if v.len() == 1));
        let err = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            decode_response(400, true, err).err(),
            Some(MetricsError::Prometheus {
                error_type: "bad_data".into(),
                message: "parse error".into()
            })
        );
        assert!(matches!(
            decode_response(502, false, "Bad Gateway"),
            Err(MetricsError::HttpStatus { status: 502, .. })
        ));
        assert!(matches!(
            decode_response(503, true, "{}"),
            Err(MetricsError::HttpStatus { status: 503, .. })
        ));
        assert!(matches!(
            decode_response(200, false, "<html>"),
            Err(MetricsError::BadResponse(_))
        ));
        assert!(matches!(
            decode_response(200, true, "{\"status\":\"success\"}"),
            Err(MetricsError::BadResponse(_))
        ));
        assert!(matches!(
            decode_response(200, true, "[1,2"),
            Err(MetricsError::BadResponse(_))
        ));
    }

    mod fake_server {
        use super::super::*;
        use crate::policy::PrometheusConfig;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use std::sync::{Arc, Mutex};

        #[derive(Default)]
        struct Seen {
            calls: u32,
            auth: Vec<Option<String>>,
            bodies: Vec<String>,
        }

        const OK: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;

        /// Serves canned answers: the first `failures` calls get `failure`.
        async fn serve(
            failures: u32,
            failure: (StatusCode, &'static str, &'static str),
            delay: Duration,
        ) -> (String, Arc<Mutex<Seen>>) {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let state = seen.clone();
            let app = axum::Router::new().route(
                "/api/v1/query",
                axum::routing::post(move |headers: HeaderMap, body: String| {
                    let state = state.clone();
                    async move {
                        let call = {
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            s.calls += 1;
                            s.auth.push(
                                headers
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(String::from),
                            );
                            s.bodies.push(body);
                            s.calls
                        };
                        tokio::time::sleep(delay).await;
                        if call <= failures {
                            let (status, ctype, body) = failure;
                            (status, [("content-type", ctype)], body).into_response()
                        } else {
                            (StatusCode::OK, [("content-type", "application/json")], OK)
                                .into_response()
                        }
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("bind: {e}"));
            let addr = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            (format!("http://{addr}"), seen)
        }

        fn fast() -> SourceOptions {
            SourceOptions {
                query_timeout: Duration::from_millis(300),
                connect_timeout: Duration::from_millis(300),
                max_attempts: 3,
                initial_backoff: Duration::from_millis(10),
            }
        }

        fn config(url: &str, auth: Option<PrometheusAuth>) -> PrometheusConfig {
            PrometheusConfig {
                url: url.into(),
                auth,
                ca_file: None,
            }
        }

        #[tokio::test]
        async fn retries_server_errors_then_succeeds_and_sends_time() {
            let (url, seen) = serve(
                2,
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "overloaded"),
                Duration::ZERO,
            )
            .await;
            let source = PrometheusSource::with_options(&config(&url, None), fast())
                .unwrap_or_else(|e| panic!("{e}"));
            let data = source.query("up", 1_700_000_000).await;
            assert!(matches!(data, Ok(Data::Vector(v)) if v.is_empty()));
            assert_eq!(source.queries_sent(), 3);
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            assert!(s.bodies[0].contains("time=1700000000"), "{}", s.bodies[0]);
            assert!(s.bodies[0].contains("query=up"), "{}", s.bodies[0]);
        }

        #[tokio::test]
        async fn gives_up_after_max_attempts_with_the_http_status() {
            let (url, seen) = serve(
                10,
                (StatusCode::BAD_GATEWAY, "text/plain", "no upstream"),
                Duration::ZERO,
            )
            .await;
            let source = PrometheusSource::with_options(&config(&url, None), fast())
                .unwrap_or_else(|e| panic!("{e}"));
            let err = source.query("up", 1).await.err();
            assert!(
                matches!(err, Some(MetricsError::HttpStatus { status: 502, .. })),
                "{err:?}"
            );
            assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).calls, 3);
        }

        #[tokio::test]
        async fn bad_data_is_not_retried() {
            let (url, seen) = serve(
                10,
                (
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#,
                ),
                Duration::ZERO,
            )
            .await;
            let source = PrometheusSource::with_options(&config(&url, None), fast())
                .unwrap_or_else(|e| panic!("{e}"));
            let err = source.query("up{", 1).await.err();
            assert!(
                matches!(&err, Some(MetricsError::Prometheus { error_type, .. }) if error_type == "bad_data"),
                "{err:?}"
            );
            assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).calls, 1);
        }

        #[tokio::test]
        async fn slow_answers_time_out() {
            let (url, _) = serve(0, (StatusCode::OK, "", ""), Duration::from_secs(2)).await;
            let source = PrometheusSource::with_options(&config(&url, None), fast())
                .unwrap_or_else(|e| panic!("{e}"));
            let err = source.query("up", 1).await.err();
            assert!(matches!(err, Some(MetricsError::Timeout { .. })), "{err:?}");
        }

        #[tokio::test]
        async fn closed_port_is_unreachable_and_offline() {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
            let addr = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"));
            drop(listener);
            let source =
                PrometheusSource::with_options(&config(&format!("http://{addr}"), None), fast())
                    .unwrap_or_else(|e| panic!("{e}"));
            let err = source.query("up", 1).await.err();
            assert!(
                matches!(err, Some(MetricsError::Unreachable { .. })),
                "{err:?}"
            );
            assert!(!source.is_online().await);
        }

        #[tokio::test]
        async fn sends_bearer_and_basic_credentials_from_files() {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let token = dir.path().join("token");
            std::fs::write(&token, "s3cret-token\n").unwrap_or_else(|e| panic!("{e}"));
            let password = dir.path().join("password");
            std::fs::write(&password, "pa55").unwrap_or_else(|e| panic!("{e}"));
            let (url, seen) = serve(0, (StatusCode::OK, "", ""), Duration::ZERO).await;
            let bearer = PrometheusSource::with_options(
                &config(&url, Some(PrometheusAuth::BearerTokenFile(token))),
                fast(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(bearer.query("up", 1).await.is_ok());
            let basic = PrometheusSource::with_options(
                &config(
                    &url,
                    Some(PrometheusAuth::Basic {
                        username: "alice".into(),
                        password_file: password,
                    }),
                ),
                fast(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(basic.query("up", 1).await.is_ok());
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            assert_eq!(s.auth[0].as_deref(), Some("Bearer s3cret-token"));
            assert_eq!(
                s.auth[1].as_deref(),
                Some(format!("Basic {}", base64(b"alice:pa55")).as_str())
            );
        }

        #[tokio::test]
        async fn missing_secret_and_bad_ca_are_config_errors() {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let source = PrometheusSource::with_options(
                &config(
                    "http://127.0.0.1:9",
                    Some(PrometheusAuth::BearerTokenFile(dir.path().join("absent"))),
                ),
                fast(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(
                source.query("up", 1).await,
                Err(MetricsError::Config(_))
            ));
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
            let mut cfg = config("https://127.0.0.1:9", None);
            cfg.ca_file = Some(ca);
            assert!(matches!(
                PrometheusSource::new(&cfg),
                Err(MetricsError::Config(_))
            ));
        }
    }
}
