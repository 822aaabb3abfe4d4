//! The Prometheus metric source against a real Prometheus scraping real
//! demo-app instances (in-process), and the judge fed by it.

#[path = "support/prom.rs"]
mod prom;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canaryd::demo::{self, AppConfig, LoadConfig, LoadReport};
use canaryd::judge::{self, Decision, Evidence};
use canaryd::metrics::{
    pod_regex, MetricSource, MetricsError, PrometheusSource, Role, SourceOptions, Window,
};
use canaryd::observation::{ArmValue, Histogram, Sample, WindowObservation};
use canaryd::policy::*;
use prom::{Prom, Target};

const NAMESPACE: &str = "prod";
const DEPLOYMENT: &str = "web";
const CANARY_POD: &str = "web-canary-7d9f8b6c5d-x2k4p";
const BASELINE_POD: &str = "web-baseline-5c8d7f9b4-qwzrt";
const STABLE_POD: &str = "web-6b7c9d8f5-lmn2p";
/// How long a test waits for Prometheus to have scraped every target.
const SCRAPED_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the last scrape after a window closes (scrape interval is 1 s).
const SCRAPE_SLACK: Duration = Duration::from_secs(2);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn policy(url: &str, baseline: BaselineMode, interval: Duration) -> Policy {
    Policy {
        source: "tests/prometheus.rs".into(),
        service: DEPLOYMENT.into(),
        namespace: NAMESPACE.into(),
        deployment: DEPLOYMENT.into(),
        strategy: Strategy::Canary(CanaryStrategy {
            steps: vec![Step {
                size: Some(CanarySize::Replicas(1)),
                weight: None,
                observe: Duration::from_secs(600),
                gate: false,
            }],
        }),
        traffic: Traffic::Replicas,
        baseline,
        progress_deadline: Duration::from_secs(600),
        analysis: Analysis {
            prometheus: PrometheusConfig {
                url: url.into(),
                auth: None,
                ca_file: None,
            },
            interval,
            max_duration: Duration::from_secs(3600),
            alpha: 0.05,
            on_no_data: OnNoData::Hold,
            mode: JudgeMode::Sequential,
            metrics: default_metrics(),
        },
        alerts: AlertPolicy {
            matchers: vec![],
            guard_window: Duration::from_secs(0),
        },
        notifications: vec![],
    }
}

/// A demo-app instance served in-process until the sender is dropped.
struct App {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl App {
    async fn start(version: &str, role: Role, pod: &str, error_rate: f64, latency_ms: u64) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        assert!(
            regex::Regex::new(&format!("^(?:{})$", pod_regex(DEPLOYMENT, role)))
                .is_ok_and(|r| r.is_match(pod)),
            "{pod} must match the {role} regex"
        );
        let config = AppConfig {
            version: version.into(),
            role: role.as_str().into(),
            pod: pod.into(),
            error_rate,
            latency_median: Duration::from_millis(latency_ms),
            latency_sigma: demo::DEFAULT_LATENCY_SIGMA,
            sleep: true,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(demo::serve_app(listener, config, async {
            let _ = stopped.await;
        }));
        App { addr, _stop: stop }
    }

    fn target(&self, pod: &str) -> Target {
        Target {
            addr: self.addr,
            namespace: NAMESPACE.into(),
            pod: pod.into(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

fn fast_options() -> SourceOptions {
    SourceOptions {
        query_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(100),
    }
}

/// Waits until Prometheus has scraped `n` healthy demo targets.
async fn wait_scraped(source: &PrometheusSource, n: usize) {
    let deadline = tokio::time::Instant::now() + SCRAPED_TIMEOUT;
    loop {
        if let Ok(prometheus_http_query::response::Data::Vector(v)) =
            source.query(r#"up{job="demo"} == 1"#, now_secs()).await
        {
            if v.len() == n {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus did not scrape {n} targets within {SCRAPED_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn counts(v: &ArmValue) -> (f64, f64) {
    match v {
        ArmValue::Sample(Sample::Counts { errors, total }) => (*errors, *total),
        other => panic!("expected counts, got {other:?}"),
    }
}

fn buckets(v: &ArmValue) -> &Histogram {
    match v {
        ArmValue::Sample(Sample::Buckets(h)) => h,
        other => panic!("expected buckets, got {other:?}"),
    }
}

/// Share of observations at or below `le` (which must be a bucket bound).
fn share_below(h: &Histogram, le: f64) -> f64 {
    let i =
        h.le.iter()
            .position(|b| (*b - le).abs() < 1e-9)
            .unwrap_or_else(|| panic!("no bucket {le} in {:?}", h.le));
    h.counts[i] / h.counts[h.counts.len() - 1]
}

/// `got` is within the tolerance of Prometheus's `increase` of `sent`.
///
/// `increase` extrapolates the average rate over the samples it sees to the
/// window's edges: at most one scrape interval (×1.1) at each end, so it may
/// overshoot by up to `2.2 × scrape interval / span` of the true count, where
/// `span` is how long the series was sampled inside the window. Plus 3 for
/// requests still in flight at a scrape.
fn assert_close(what: &str, got: f64, sent: u64, span_secs: i64) {
    let sent = sent as f64;
    let edge = 2.2 * prom::SCRAPE_INTERVAL_SECS;
    let tolerance = sent * edge / (span_secs as f64 - edge).max(1.0) + 3.0;
    assert!(
        (got - sent).abs() <= tolerance,
        "{what}: prometheus says {got:.1}, load generator saw {sent} (tolerance {tolerance:.1} for a {span_secs}s span)"
    );
}

/// Baseline v1 (0.5% errors, 50 ms) vs canary v2 (5% errors, 120 ms) under
/// ~45 s of load, with a bad stable pod as a trap for the pod regexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_counts_buckets_and_judge_flags_the_canary() {
    let baseline = App::start("v1", Role::Baseline, BASELINE_POD, 0.005, 50).await;
    let canary = App::start("v2", Role::Canary, CANARY_POD, 0.05, 120).await;
    let stable = App::start("v1", Role::Stable, STABLE_POD, 0.5, 50).await;
    let prom = Prom::start(&[
        baseline.target(BASELINE_POD),
        canary.target(CANARY_POD),
        stable.target(STABLE_POD),
    ]);
    let interval = Duration::from_secs(10);
    let policy = policy(&prom.url(), BaselineMode::Fresh, interval);
    let source = PrometheusSource::new(&policy.analysis.prometheus)
        .unwrap_or_else(|e| panic!("source: {e}"));
    wait_scraped(&source, 3).await;
    assert!(source.is_online().await);
    let scraped_from = now_secs();

    let load = tokio::spawn({
        let targets = vec![baseline.url(), canary.url(), stable.url()];
        async move {
            demo::run_load(&LoadConfig {
                rps: 120.0,
                duration: Duration::from_secs(45),
                targets,
            })
            .await
        }
    });

    // Window by window, as the daemon does.
    let started = now_secs();
    let mut evidence = Evidence::default();
    let mut timeline: Vec<(WindowObservation, Decision, String)> = Vec::new();
    let mut k = 1;
    while !load.is_finished() {
        let end = started + k * interval.as_secs() as i64;
        let wake = Duration::from_secs((end - now_secs()).max(0) as u64) + SCRAPE_SLACK;
        tokio::time::sleep(wake).await;
        let window = Window {
            end_unix_secs: end,
            length: interval,
            at_secs: (end - started) as f64,
            expected_canary_share: Some(0.5),
        };
        let before = source.queries_sent();
        let took = std::time::Instant::now();
        let obs = source
            .observe(&policy, &window)
            .await
            .unwrap_or_else(|e| panic!("window {k}: {e}"));
        eprintln!(
            "bench: observe of window {k} ({} metrics) took {:.1} ms",
            policy.analysis.metrics.len(),
            took.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(
            source.queries_sent() - before,
            policy.analysis.metrics.len() as u64,
            "one query per metric per window"
        );
        evidence.record(&obs);
        let verdict = judge::evaluate(&policy.analysis, &evidence);
        eprintln!(
            "window {k} at {}s: {:?} — {}",
            obs.at_secs, verdict.decision, verdict.reason
        );
        timeline.push((obs, verdict.decision, verdict.reason));
        k += 1;
    }
    let report: LoadReport = load
        .await
        .unwrap_or_else(|e| panic!("load task: {e}"))
        .unwrap_or_else(|e| panic!("load: {e}"));
    eprintln!("load: {report:?}");
    for t in &report.targets {
        assert_eq!(t.failed + t.skipped + t.other_status, 0, "{t:?}");
    }

    // Every in-load window had data for both arms.
    for (obs, _, _) in &timeline {
        for m in &obs.metrics {
            assert!(
                matches!(m.canary, ArmValue::Sample(_))
                    && matches!(m.baseline, ArmValue::Sample(_)),
                "window at {}s: {m:?}",
                obs.at_secs
            );
        }
    }

    // One window over the whole run: counts match what was sent.
    tokio::time::sleep(SCRAPE_SLACK).await;
    let end = now_secs();
    let whole = Window {
        end_unix_secs: end,
        length: Duration::from_secs((end - scraped_from + 2) as u64),
        at_secs: (end - started) as f64,
        expected_canary_share: None,
    };
    let span = end - scraped_from;
    let obs = source
        .observe(&policy, &whole)
        .await
        .unwrap_or_else(|e| panic!("whole run: {e}"));
    let [b, c, s] = [&report.targets[0], &report.targets[1], &report.targets[2]];
    let (c_err, c_total) = counts(&obs.metrics[0].canary);
    let (b_err, b_total) = counts(&obs.metrics[0].baseline);
    assert_close("canary total", c_total, c.sent, span);
    assert_close("canary errors", c_err, c.server_errors, span);
    assert_close("baseline total", b_total, b.sent, span);
    assert_close("baseline errors", b_err, b.server_errors, span);
    eprintln!(
        "bench: whole run ({span}s span): canary total {c_total:.1} vs sent {}, errors {c_err:.1} vs {}; baseline total {b_total:.1} vs sent {}, errors {b_err:.1} vs {}",
        c.sent, c.server_errors, b.sent, b.server_errors
    );
    let ch = buckets(&obs.metrics[1].canary);
    let bh = buckets(&obs.metrics[1].baseline);
    assert_eq!(ch.le.len(), prometheus::DEFAULT_BUCKETS.len() + 1);
    assert_close(
        "canary +Inf bucket",
        ch.counts[ch.counts.len() - 1],
        c.sent,
        span,
    );
    assert_close(
        "baseline +Inf bucket",
        bh.counts[bh.counts.len() - 1],
        b.sent,
        span,
    );
    // Lognormal(median 120 ms, σ 0.5): P(<=100 ms) ≈ 0.36; median 50 ms: ≈ 0.92.
    let (c_fast, b_fast) = (share_below(ch, 0.1), share_below(bh, 0.1));
    assert!(
        (0.2..=0.5).contains(&c_fast),
        "canary share <= 100ms: {c_fast}"
    );
    assert!(b_fast >= 0.8, "baseline share <= 100ms: {b_fast}");

    // The stable pod (50% errors) is reachable with role `stable` and never
    // leaked into canary or baseline above.
    let stable_policy = policy_with_baseline(&policy, BaselineMode::Stable);
    let obs = source
        .observe(&stable_policy, &whole)
        .await
        .unwrap_or_else(|e| panic!("stable: {e}"));
    let (s_err, s_total) = counts(&obs.metrics[0].baseline);
    assert_close("stable total", s_total, s.sent, span);
    assert_close("stable errors", s_err, s.server_errors, span);

    // The judge, fed window by window by the real source, flags the canary.
    let decisions: Vec<_> = timeline.iter().map(|(_, d, r)| (*d, r.clone())).collect();
    assert!(
        decisions.iter().any(|(d, _)| *d == Decision::Rollback),
        "judge never rolled back: {decisions:?}"
    );
    drop(prom);
}

fn policy_with_baseline(policy: &Policy, baseline: BaselineMode) -> Policy {
    let mut p = policy.clone();
    p.baseline = baseline;
    p
}

/// Prometheus killed mid-test: typed error and offline; after a restart on
/// the same storage and port, the source recovers and old data is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_gives_a_typed_error_and_the_source_recovers() {
    let baseline = App::start("v1", Role::Baseline, BASELINE_POD, 0.0, 5).await;
    let canary = App::start("v2", Role::Canary, CANARY_POD, 0.0, 5).await;
    let mut prom = Prom::start(&[baseline.target(BASELINE_POD), canary.target(CANARY_POD)]);
    let interval = Duration::from_secs(10);
    let policy = policy(&prom.url(), BaselineMode::Fresh, interval);
    let source = PrometheusSource::with_options(&policy.analysis.prometheus, fast_options())
        .unwrap_or_else(|e| panic!("source: {e}"));
    wait_scraped(&source, 2).await;
    let scraped_from = now_secs();
    let report = demo::run_load(&LoadConfig {
        rps: 40.0,
        duration: Duration::from_secs(5),
        targets: vec![baseline.url(), canary.url()],
    })
    .await
    .unwrap_or_else(|e| panic!("load: {e}"));
    tokio::time::sleep(SCRAPE_SLACK).await;
    let end = now_secs();
    let window = Window {
        end_unix_secs: end,
        length: Duration::from_secs(20),
        at_secs: 20.0,
        expected_canary_share: None,
    };
    let before = source
        .observe(&policy, &window)
        .await
        .unwrap_or_else(|e| panic!("before the outage: {e}"));
    let (_, canary_total) = counts(&before.metrics[0].canary);
    assert_close(
        "canary total",
        canary_total,
        report.targets[1].sent,
        end - scraped_from,
    );

    prom.kill();
    let took = std::time::Instant::now();
    let err = source.observe(&policy, &window).await.err();
    eprintln!(
        "bench: observe against a killed prometheus failed after {:.1} ms ({} attempts per query)",
        took.elapsed().as_secs_f64() * 1000.0,
        fast_options().max_attempts
    );
    assert!(
        matches!(&err, Some(MetricsError::Unreachable { .. })),
        "expected unreachable, got {err:?}"
    );
    assert!(err.is_some_and(|e| e.is_source_failure()));
    assert!(!source.is_online().await);

    let took = std::time::Instant::now();
    prom.restart();
    eprintln!(
        "bench: prometheus restart to ready took {:.1} ms",
        took.elapsed().as_secs_f64() * 1000.0
    );
    assert!(source.is_online().await);
    let after = source
        .observe(&policy, &window)
        .await
        .unwrap_or_else(|e| panic!("after the restart: {e}\n{}", prom.log_text()));
    assert_eq!(
        after.metrics[0], before.metrics[0],
        "data written before the outage survives the restart"
    );
    // And new windows are read again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = Window {
        end_unix_secs: now_secs(),
        ..window
    };
    let obs = source
        .observe(&policy, &fresh)
        .await
        .unwrap_or_else(|e| panic!("fresh window: {e}"));
    assert!(matches!(obs.metrics[0].canary, ArmValue::Sample(_)));
}

/// A broken template is a typed Prometheus error, not a panic or bogus data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_promql_is_a_typed_prometheus_error() {
    let prom = Prom::start(&[]);
    let mut policy = policy(&prom.url(), BaselineMode::Fresh, Duration::from_secs(60));
    policy.analysis.metrics[1].kind = MetricKind::Gauge {
        query: Template("sum(rate(x[{{window}}]".into()),
    };
    let source = PrometheusSource::with_options(&policy.analysis.prometheus, fast_options())
        .unwrap_or_else(|e| panic!("source: {e}"));
    let window = Window {
        end_unix_secs: now_secs(),
        length: Duration::from_secs(60),
        at_secs: 60.0,
        expected_canary_share: None,
    };
    let err = source.observe(&policy, &window).await.err();
    assert!(
        matches!(&err, Some(MetricsError::Prometheus { error_type, .. }) if error_type == "bad_data"),
        "{err:?}"
    );
    // A valid query over pods that do not exist: no data, with the reason.
    policy.analysis.metrics.truncate(1);
    let obs = source
        .observe(&policy, &window)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&obs.metrics[0].canary, ArmValue::NoData(r) if r.contains("no series")),
        "{:?}",
        obs.metrics[0]
    );
}

/// bcrypt (cost 4) of [`TEST_PASSWORD`], for Prometheus's `basic_auth_users`.
const TEST_PASSWORD_BCRYPT: &str = "$2b$04$zXLOsVUr8ET505YPoKfo1.6wPD5twMHU7SoYdOpc.cF0RDWAS4cZq";
/// Password of user `alice` on the TLS Prometheus.
const TEST_PASSWORD: &str = "canaryd-test-password";

/// HTTPS with a private CA and basic auth against a real Prometheus
/// (`--web.config.file`): the right credentials and CA work; a wrong
/// password is HTTP 401; without the CA the TLS handshake fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_custom_ca_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (ca, cert, key) = prom::make_test_pki(dir.path());
    let web = serde_json::json!({
        "tls_server_config": {"cert_file": cert, "key_file": key},
        "basic_auth_users": {"alice": TEST_PASSWORD_BCRYPT},
    });
    let prom = Prom::start_with_web_config(&[], &web.to_string());
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{TEST_PASSWORD}\n")).unwrap_or_else(|e| panic!("{e}"));
    let config =
        |password_file: &std::path::Path, ca_file: Option<&std::path::Path>| PrometheusConfig {
            url: prom.https_url(),
            auth: Some(PrometheusAuth::Basic {
                username: "alice".into(),
                password_file: password_file.to_path_buf(),
            }),
            ca_file: ca_file.map(|p| p.to_path_buf()),
        };
    let source = PrometheusSource::with_options(&config(&password, Some(&ca)), fast_options())
        .unwrap_or_else(|e| panic!("source: {e}"));
    let deadline = tokio::time::Instant::now() + SCRAPED_TIMEOUT;
    while !source.is_online().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "TLS prometheus never ready:\n{}",
            prom.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = source
        .query("vector(42)", now_secs())
        .await
        .unwrap_or_else(|e| panic!("query over https: {e}"));
    assert!(
        matches!(&data, prometheus_http_query::response::Data::Vector(v)
            if v.len() == 1 && v[0].sample().value() == 42.0),
        "{data:?}"
    );

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap_or_else(|e| panic!("{e}"));
    let source = PrometheusSource::with_options(&config(&wrong, Some(&ca)), fast_options())
        .unwrap_or_else(|e| panic!("source: {e}"));
    let err = source.query("vector(1)", now_secs()).await.err();
    assert!(
        matches!(err, Some(MetricsError::HttpStatus { status: 401, .. })),
        "{err:?}"
    );
    assert!(!source.is_online().await);

    let source = PrometheusSource::with_options(&config(&password, None), fast_options())
        .unwrap_or_else(|e| panic!("source: {e}"));
    let err = source.query("vector(1)", now_secs()).await.err();
    assert!(
        matches!(err, Some(MetricsError::Unreachable { .. })),
        "untrusted certificate must fail: {err:?}"
    );
}
