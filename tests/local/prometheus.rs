//! The Prometheus metric source against a real Prometheus scraping real
//! demo-app instances (in-process), and the judge fed by it.

use crate::support::prom;

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
        source: "tests/local/prometheus.rs".into(),
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
            min_requests_per_step: 0,
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
    task: tokio::task::JoinHandle<Result<(), demo::DemoError>>,
}

impl App {
    async fn start(version: &str, role: Role, pod: &str, error_rate: f64, latency_ms: u64) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        App::serve(listener, version, role, pod, error_rate, latency_ms)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        version: &str,
        role: Role,
        pod: &str,
        error_rate: f64,
        latency_ms: u64,
    ) -> App {
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
        let task = tokio::spawn(demo::serve_app(listener, config, async {
            let _ = stopped.await;
        }));
        App {
            addr,
            _stop: stop,
            task,
        }
    }

    /// Stops this instance and starts a fresh one (counters at zero) on the
    /// same address: to Prometheus the same series, reset, as when a
    /// container restarts inside its pod.
    async fn restart(self, version: &str, role: Role, pod: &str, error_rate: f64) -> App {
        let App {
            addr, _stop, task, ..
        } = self;
        drop(_stop);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("demo app on {addr} did not stop"))
            .unwrap_or_else(|e| panic!("demo app task: {e}"))
            .unwrap_or_else(|e| panic!("demo app: {e}"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "rebinding {addr}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        App::serve(listener, version, role, pod, error_rate, 5)
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

/// `got` is exactly `sent`. `window_increase` counts each scraped request
/// once, with no extrapolation; these windows reach back before the load
/// started and end after a scrape that followed its last answer, so nothing
/// the app served falls outside them.
fn assert_exact(what: &str, got: f64, sent: u64) {
    assert!(
        got == sent as f64,
        "{what}: prometheus says {got}, load generator saw {sent}"
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
    let took = std::time::Instant::now();
    let obs = source
        .observe(&policy, &whole)
        .await
        .unwrap_or_else(|e| panic!("whole run: {e}"));
    eprintln!(
        "bench: observe of one {}s window (2 metrics, 3 pods scraped) took {:.1} ms",
        whole.length.as_secs(),
        took.elapsed().as_secs_f64() * 1000.0
    );
    let [b, c, s] = [&report.targets[0], &report.targets[1], &report.targets[2]];
    let (c_err, c_total) = counts(&obs.metrics[0].canary);
    let (b_err, b_total) = counts(&obs.metrics[0].baseline);
    assert_exact("canary total", c_total, c.sent);
    assert_exact("canary errors", c_err, c.server_errors);
    assert_exact("baseline total", b_total, b.sent);
    assert_exact("baseline errors", b_err, b.server_errors);
    eprintln!(
        "bench: whole run ({span}s span): canary total {c_total:.1} vs sent {}, errors {c_err:.1} vs {}; baseline total {b_total:.1} vs sent {}, errors {b_err:.1} vs {}",
        c.sent, c.server_errors, b.sent, b.server_errors
    );
    let ch = buckets(&obs.metrics[1].canary);
    let bh = buckets(&obs.metrics[1].baseline);
    assert_eq!(ch.le.len(), prometheus::DEFAULT_BUCKETS.len() + 1);
    assert_exact("canary +Inf bucket", ch.counts[ch.counts.len() - 1], c.sent);
    assert_exact(
        "baseline +Inf bucket",
        bh.counts[bh.counts.len() - 1],
        b.sent,
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
    assert_exact("stable total", s_total, s.sent);
    assert_exact("stable errors", s_err, s.server_errors);

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
    assert!(
        end - 20 < scraped_from,
        "the window must reach back before the load"
    );
    let before = source
        .observe(&policy, &window)
        .await
        .unwrap_or_else(|e| panic!("before the outage: {e}"));
    let (_, canary_total) = counts(&before.metrics[0].canary);
    assert_exact("canary total", canary_total, report.targets[1].sent);

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

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn sleep_until_unix(t: f64) {
    let d = t - now_f64();
    if d > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
    }
}

async fn load(rps: f64, secs: f64, targets: &[&App]) -> LoadReport {
    let report = demo::run_load(&LoadConfig {
        rps,
        duration: Duration::from_secs_f64(secs),
        targets: targets.iter().map(|a| a.url()).collect(),
    })
    .await
    .unwrap_or_else(|e| panic!("load: {e}"));
    for t in &report.targets {
        assert_eq!(t.failed + t.skipped + t.other_status, 0, "{t:?}");
    }
    report
}

/// `t` with every `window_increase(SEL)` written as `increase(SEL[{{window}}])`:
/// the templates canaryd shipped before.
fn with_increase(t: &Template) -> Template {
    let calls = window_increase_calls(&t.0).unwrap_or_else(|e| panic!("{e}"));
    assert!(!calls.is_empty(), "{} has no window_increase", t.0);
    let mut out = String::new();
    let mut done = 0;
    for c in calls {
        out.push_str(&t.0[done..c.call.start]);
        out.push_str(&format!("increase({}[{{{{window}}}}])", &t.0[c.selector]));
        done = c.call.end;
    }
    out.push_str(&t.0[done..]);
    Template(out)
}

/// `policy` with its metrics read through Prometheus' `increase`.
fn increase_policy(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    for spec in &mut p.analysis.metrics {
        match &mut spec.kind {
            MetricKind::Errors { errors, total } => {
                *errors = with_increase(errors);
                *total = with_increase(total);
            }
            MetricKind::Latency { buckets } => *buckets = with_increase(buckets),
            MetricKind::Gauge { query } => *query = with_increase(query),
        }
    }
    p
}

/// What the windows of one arm added up to.
#[derive(Debug, Default)]
struct Tally {
    errors: f64,
    total: f64,
    /// Per `le` bound (as Prometheus writes it), summed bucket counts.
    buckets: std::collections::BTreeMap<String, f64>,
    /// The total of every window, in order.
    per_window: Vec<f64>,
    /// Counts that were not whole numbers.
    fractions: usize,
}

impl Tally {
    fn add(&mut self, errors: &ArmValue, latency: &ArmValue) {
        let (e, t) = counts(errors);
        let h = buckets(latency);
        self.fractions += [e, t]
            .iter()
            .chain(&h.counts)
            .filter(|v| v.fract() != 0.0)
            .count();
        self.errors += e;
        self.total += t;
        self.per_window.push(t);
        for (le, c) in h.le.iter().zip(&h.counts) {
            let key = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            *self.buckets.entry(key).or_default() += c;
        }
    }
}

/// Observes the windows `(t0 + (k-1)·w, t0 + k·w]` for `k` in `1..=n`.
async fn observe_grid(
    source: &PrometheusSource,
    policy: &Policy,
    t0: i64,
    n: i64,
) -> (Tally, Tally) {
    let w = policy.analysis.interval;
    let (mut canary, mut baseline) = (Tally::default(), Tally::default());
    for k in 1..=n {
        let end = t0 + k * w.as_secs() as i64;
        let obs = source
            .observe(
                policy,
                &Window {
                    end_unix_secs: end,
                    length: w,
                    at_secs: (end - t0) as f64,
                    expected_canary_share: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("window ending {end}: {e}"));
        canary.add(&obs.metrics[0].canary, &obs.metrics[1].canary);
        baseline.add(&obs.metrics[0].baseline, &obs.metrics[1].baseline);
    }
    (canary, baseline)
}

/// A PromQL query's vector answer at `at`, by the value of `label`.
async fn by_label(
    source: &PrometheusSource,
    promql: &str,
    at: i64,
    label: &str,
) -> std::collections::BTreeMap<String, f64> {
    match source.query(promql, at).await {
        Ok(prometheus_http_query::response::Data::Vector(v)) => v
            .iter()
            .map(|s| {
                (
                    s.metric().get(label).cloned().unwrap_or_default(),
                    s.sample().value(),
                )
            })
            .collect(),
        other => panic!("{promql}: {other:?}"),
    }
}

/// One number from a PromQL query at `at`.
async fn scalar_at(source: &PrometheusSource, promql: &str, at: i64) -> f64 {
    let v = by_label(source, promql, at, "__name__").await;
    assert_eq!(v.len(), 1, "{promql}: {v:?}");
    v.into_values().next().unwrap_or(f64::NAN)
}

/// Short windows (5 s with 1 s scrapes, where `increase` stretches every
/// count by 5/4): the default metrics count exactly what the apps served,
/// window by window, and a burst inside one window shows the old stretch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_windows_count_exactly_what_was_served() {
    const W: i64 = 5;
    const RPS: f64 = 60.0; // round-robin: 30 per arm
    const LOAD_SECS: f64 = 20.0;
    let baseline = App::start("v1", Role::Baseline, BASELINE_POD, 0.02, 5).await;
    let canary = App::start("v2", Role::Canary, CANARY_POD, 0.1, 5).await;
    let prom = Prom::start(&[baseline.target(BASELINE_POD), canary.target(CANARY_POD)]);
    let policy = policy(
        &prom.url(),
        BaselineMode::Fresh,
        Duration::from_secs(W as u64),
    );
    let source = PrometheusSource::new(&policy.analysis.prometheus)
        .unwrap_or_else(|e| panic!("source: {e}"));
    wait_scraped(&source, 2).await;

    // The window grid starts before any load.
    let t0 = now_secs() + 1;
    sleep_until_unix(t0 as f64 + 0.3).await;
    let load_start = now_f64();
    let report = load(RPS, LOAD_SECS, &[&baseline, &canary]).await;
    let (b, c) = (&report.targets[0], &report.targets[1]);
    // Enough windows to end after a scrape that followed the last answer.
    let n = ((now_f64() + SCRAPE_SLACK.as_secs_f64() - t0 as f64) / W as f64).ceil() as i64;
    let t_end = t0 + n * W;
    sleep_until_unix(t_end as f64 + 1.0).await;
    let took = std::time::Instant::now();
    let (ct, bt) = observe_grid(&source, &policy, t0, n).await;
    eprintln!(
        "bench: {n} windows of {W}s observed in {:.1} ms",
        took.elapsed().as_secs_f64() * 1000.0
    );
    let (old_c, old_b) = observe_grid(&source, &increase_policy(&policy), t0, n).await;
    eprintln!(
        "bench: {n} windows of {W}s: canary {}/{} errors/requests (sent {}/{}), baseline {}/{} (sent {}/{}); \
         with increase: canary {:.2}/{:.2}, baseline {:.2}/{:.2}\n  canary per window {:?}\n  increase per window {:?}",
        ct.errors, ct.total, c.server_errors, c.sent, bt.errors, bt.total, b.server_errors, b.sent,
        old_c.errors, old_c.total, old_b.errors, old_b.total, ct.per_window, old_c.per_window
    );

    // Whole numbers, and the windows tile the run: their sums are the exact
    // totals. (`increase` gives multiples of 1.25 instead.)
    assert_eq!((ct.fractions, bt.fractions), (0, 0), "{ct:?} {bt:?}");
    assert!(old_c.fractions + old_b.fractions > 0, "{old_c:?}");
    assert_exact("canary total, summed", ct.total, c.sent);
    assert_exact("canary errors, summed", ct.errors, c.server_errors);
    assert_exact("baseline total, summed", bt.total, b.sent);
    assert_exact("baseline errors, summed", bt.errors, b.server_errors);
    for (tally, role) in [(&ct, Role::Canary), (&bt, Role::Baseline)] {
        let want = by_label(
            &source,
            &format!(
                r#"sum by (le) (http_request_duration_seconds_bucket{{pod=~"{}"}})"#,
                pod_regex(DEPLOYMENT, role)
            ),
            t_end,
            "le",
        )
        .await;
        let want: std::collections::BTreeMap<String, f64> = want
            .into_iter()
            .map(|(le, v)| match le.parse::<f64>() {
                Ok(x) if x.is_finite() => (x.to_string(), v),
                _ => (le, v),
            })
            .collect();
        assert_eq!(
            tally.buckets, want,
            "{role}: summed buckets vs final counters"
        );
    }
    assert_exact("canary +Inf, summed", ct.buckets["+Inf"], c.sent);

    // A window wholly inside the load holds 5 s of one arm's sends (150):
    // its edges are the last scrapes at or before its bounds, exactly 5 s
    // apart (±ms of scrape jitter), so only requests whose answer crossed a
    // scrape move between neighbours. 5 requests of slack allow ~170 ms of
    // load-generator scheduling delay; a window that overlapped or left a gap
    // by one scrape would be 30 off.
    let per_arm = RPS / 2.0 * W as f64;
    for (k, (cw, bw)) in ct.per_window.iter().zip(&bt.per_window).enumerate() {
        let end = (t0 + (k as i64 + 1) * W) as f64;
        if end - W as f64 - 1.0 >= load_start && end <= load_start + LOAD_SECS {
            for got in [cw, bw] {
                assert!(
                    (got - per_arm).abs() <= 5.0,
                    "window {} ending {end}: {got} requests, sent {per_arm} in 5 s: {:?}",
                    k + 1,
                    ct.per_window
                );
            }
        }
    }

    // A burst wholly inside one window (after its first scrape, before its
    // last): `increase` sees it all, over the 4 s between the window's first
    // and last of five samples, and stretches it to 5 s: ×1.25.
    let b0 = t0 + ((now_f64() + 0.5 - t0 as f64) / W as f64).ceil() as i64 * W;
    sleep_until_unix(b0 as f64 + 1.5).await;
    let burst = load(RPS, 1.5, &[&baseline, &canary]).await;
    assert!(
        now_f64() < b0 as f64 + 3.5,
        "the burst ran late; it must end a scrape before the window's last"
    );
    sleep_until_unix((b0 + W) as f64 + 1.0).await;
    let (nc, nb) = observe_grid(&source, &policy, b0, 1).await;
    let (oc, ob) = observe_grid(&source, &increase_policy(&policy), b0, 1).await;
    eprintln!(
        "bench: burst in one {W}s window: canary {} requests (sent {}), increase says {:.2}; baseline {} (sent {}), increase says {:.2}",
        nc.total, burst.targets[1].sent, oc.total, nb.total, burst.targets[0].sent, ob.total
    );
    assert_exact("canary burst", nc.total, burst.targets[1].sent);
    assert_exact("baseline burst", nb.total, burst.targets[0].sent);
    assert_exact(
        "canary burst +Inf",
        nc.buckets["+Inf"],
        burst.targets[1].sent,
    );
    for (what, old, new) in [
        ("canary total", oc.total, nc.total),
        ("baseline total", ob.total, nb.total),
        ("canary +Inf", oc.buckets["+Inf"], nc.buckets["+Inf"]),
    ] {
        // 5 s / 4 s; scrape timestamps jitter by milliseconds. (Were a scrape
        // to land exactly on the window start, Prometheus would see six
        // samples spanning 5 s and not stretch: a 1-in-1000 coincidence.)
        assert!(
            new > 0.0 && (old / new - 1.25).abs() <= 0.01,
            "{what}: increase {old} vs exact {new}: expected ×1.25"
        );
    }
    drop(prom);
}

/// A demo app restarted on the same address mid-window (a container restart:
/// same series, counter back to zero): the windows still add up exactly,
/// where the plain `x - x offset` form would lose what was scraped before
/// the restart in that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_reset_mid_window_is_counted_exactly() {
    const W: i64 = 5;
    const RPS: f64 = 60.0;
    let baseline = App::start("v1", Role::Baseline, BASELINE_POD, 0.02, 5).await;
    let canary = App::start("v2", Role::Canary, CANARY_POD, 0.1, 5).await;
    let prom = Prom::start(&[baseline.target(BASELINE_POD), canary.target(CANARY_POD)]);
    let policy = policy(
        &prom.url(),
        BaselineMode::Fresh,
        Duration::from_secs(W as u64),
    );
    let source = PrometheusSource::new(&policy.analysis.prometheus)
        .unwrap_or_else(|e| panic!("source: {e}"));
    wait_scraped(&source, 2).await;

    // Windows (t0, t0+5], (t0+5, t0+10], …: the first load ends 2.2 s into
    // the second window, the restart follows a scrape later, and the second
    // load starts right after it, inside the same window.
    let t0 = now_secs() + 1;
    sleep_until_unix(t0 as f64 + 0.2).await;
    let first = load(RPS, 7.0, &[&baseline, &canary]).await;
    sleep_until_unix(t0 as f64 + 8.4).await;
    let canary = canary.restart("v2", Role::Canary, CANARY_POD, 0.1).await;
    let restarted = now_f64() - t0 as f64;
    let second = load(RPS, 6.0, &[&baseline, &canary]).await;
    assert!(
        restarted < 9.5,
        "the restart ran late ({restarted:.1}s): it must fall inside the second window"
    );
    let n = ((now_f64() + SCRAPE_SLACK.as_secs_f64() - t0 as f64) / W as f64).ceil() as i64;
    let t_end = t0 + n * W;
    sleep_until_unix(t_end as f64 + 1.0).await;

    let (ct, bt) = observe_grid(&source, &policy, t0, n).await;
    let sent = |i: usize| first.targets[i].sent + second.targets[i].sent;
    let errors = |i: usize| first.targets[i].server_errors + second.targets[i].server_errors;
    eprintln!(
        "bench: restart at t0+{restarted:.2}s: canary per window {:?} = {} (sent {} + {})",
        ct.per_window, ct.total, first.targets[1].sent, second.targets[1].sent
    );
    assert_exact("canary total across the restart", ct.total, sent(1));
    assert_exact("canary errors across the restart", ct.errors, errors(1));
    assert_exact(
        "canary +Inf across the restart",
        ct.buckets["+Inf"],
        sent(1),
    );
    assert_exact("baseline total", bt.total, sent(0));
    assert_exact("baseline errors", bt.errors, errors(0));

    // It really was one series that reset, not a new one.
    let range = format!("{}s", n * W + 5);
    let ok_series = format!(r#"http_requests_total{{pod="{CANARY_POD}",code="200"}}"#);
    let series = scalar_at(
        &source,
        &format!("count(count_over_time({ok_series}[{range}]))"),
        t_end,
    )
    .await;
    let resets = scalar_at(&source, &format!("resets({ok_series}[{range}])"), t_end).await;
    assert_eq!((series, resets), (1.0, 1.0), "one series, reset once");

    // The endpoint form `(x - x offset 5s) >= 0 or x` counts only the value
    // after a reset: the requests scraped between the window's start and the
    // restart are lost.
    let canary_total = format!(r#"http_requests_total{{pod="{CANARY_POD}"}}"#);
    let mut endpoint = 0.0;
    for k in 1..=n {
        endpoint += scalar_at(
            &source,
            &format!("sum((({canary_total} - {canary_total} offset {W}s) >= 0) or {canary_total})"),
            t0 + k * W,
        )
        .await;
    }
    eprintln!(
        "bench: restart: endpoint form sums to {endpoint}, window_increase to {} (sent {})",
        ct.total,
        sent(1)
    );
    assert!(
        endpoint < sent(1) as f64,
        "the endpoint form should have lost the pre-restart requests of the restart window: {endpoint} vs {}",
        sent(1)
    );
    drop(prom);
}

/// `window_increase` on hand-made series, evaluated by Prometheus' own
/// engine (`promtool test rules`, samples every 1 s from t=0): a steady
/// counter, a reset, a scrape gap with staleness markers, a series that
/// first appears at t=6 with value 4, and one that vanishes after t=12.
/// Two window grids (3 s and 5 s) tile (0, 30] and give these exact counts.
#[test]
fn window_increase_counts_hand_made_series_exactly() {
    const SERIES: &str = r#"
      - series: 'c{s="steady"}'
        values: '10+1x30'
      - series: 'c{s="reset"}'
        values: '10+1x11 0+3x18'
      - series: 'c{s="gap"}'
        values: '100+1x7 stale stale 110+1x20'
      - series: 'c{s="new"}'
        values: '_x6 4+1x23'
      - series: 'c{s="gone"}'
        values: '0+2x12 stale'
"#;
    // (window, end, counts by series): `reset` counts 21-20 and 20-19 plus
    // the 0 after its reset; `gap` bridges its stale samples (107 → 110 is 3);
    // `new` counts nothing for its first sample; `gone` keeps its last 24.
    // (`gone` at 15 is 0, not absent: Prometheus 2 ranges include their start.)
    type Row = (u64, u64, &'static [(&'static str, u32)]);
    let steady3: &[(&str, u32)] = &[("new", 3), ("reset", 9), ("gap", 3), ("steady", 3)];
    let rows: &[Row] = &[
        (
            3,
            3,
            &[("gone", 6), ("reset", 3), ("gap", 3), ("steady", 3)],
        ),
        (
            3,
            6,
            &[("gone", 6), ("reset", 3), ("gap", 3), ("steady", 3)],
        ),
        (
            3,
            9,
            &[
                ("gone", 6),
                ("new", 3),
                ("reset", 3),
                ("gap", 1),
                ("steady", 3),
            ],
        ),
        (
            3,
            12,
            &[
                ("gone", 6),
                ("new", 3),
                ("reset", 2),
                ("gap", 5),
                ("steady", 3),
            ],
        ),
        (
            3,
            15,
            &[
                ("gone", 0),
                ("new", 3),
                ("reset", 9),
                ("gap", 3),
                ("steady", 3),
            ],
        ),
        (3, 18, steady3),
        (3, 21, steady3),
        (3, 24, steady3),
        (3, 27, steady3),
        (
            3,
            30,
            &[("new", 2), ("reset", 9), ("gap", 3), ("steady", 3)],
        ),
        (
            5,
            5,
            &[("gone", 10), ("reset", 5), ("gap", 5), ("steady", 5)],
        ),
        (
            5,
            10,
            &[
                ("gone", 10),
                ("new", 4),
                ("reset", 5),
                ("gap", 5),
                ("steady", 5),
            ],
        ),
        (
            5,
            15,
            &[
                ("gone", 4),
                ("new", 5),
                ("reset", 10),
                ("gap", 5),
                ("steady", 5),
            ],
        ),
        (
            5,
            20,
            &[("new", 5), ("reset", 15), ("gap", 5), ("steady", 5)],
        ),
        (
            5,
            25,
            &[("new", 5), ("reset", 15), ("gap", 5), ("steady", 5)],
        ),
        (
            5,
            30,
            &[("new", 4), ("reset", 15), ("gap", 5), ("steady", 5)],
        ),
    ];
    // Both grids tile (0, 30]: each series' windows add up to the same total.
    let totals = |w: u64| {
        let mut t = std::collections::BTreeMap::<&str, u32>::new();
        for (_, _, counts) in rows.iter().filter(|r| r.0 == w) {
            for (s, v) in counts.iter() {
                *t.entry(*s).or_default() += v;
            }
        }
        t
    };
    assert_eq!(totals(3), totals(5));
    assert_eq!(totals(3)["steady"], 30);
    assert_eq!(totals(3)["reset"], 11 + 54);
    assert_eq!(totals(3)["gone"], 24);

    let mut tests = String::new();
    for (w, end, counts) in rows {
        let expr = format!(
            "sum by (s) ({})",
            canaryd::metrics::window_increase("c", Duration::from_secs(*w))
        );
        let samples: String = counts
            .iter()
            .map(|(s, v)| format!("          - labels: '{{s=\"{s}\"}}'\n            value: {v}\n"))
            .collect();
        tests.push_str(&format!(
            "      - expr: '{expr}'\n        eval_time: {end}s\n        exp_samples:\n{samples}"
        ));
    }
    let file = format!(
        "rule_files: []\nevaluation_interval: 1s\ntests:\n  - interval: 1s\n    input_series:{SERIES}    promql_expr_test:\n{tests}"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("window_increase.yml");
    std::fs::write(&path, &file).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(prom::promtool_binary())
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool: {}{}\n{file}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
