//! Alerts end to end with real processes: a demo-app with a high error rate,
//! a real Prometheus whose alerting rule fires, a real Alertmanager posting
//! to canaryd's webhook (served in-process with a bearer token), and the
//! `ALERTS` polling fallback against the same Prometheus. Also bad input
//! through the real HTTP server and through Alertmanager, and the whole chain
//! into `canaryd run` on the real control plane: a blue-green release is
//! switched back when a real alert fires in its guard window (that test needs
//! `CANARYD_KUBECONFIG`, which `scripts/test` sets).

use crate::support::{alertmanager, cluster, daemon, pods, prom};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alertmanager::{AlertingProm, Alertmanager, Credentials, Rule};
use canaryd::alerts::poll::{AlertPoller, POLL_SOURCE};
use canaryd::daemon::server::{self, ServerState};
use canaryd::daemon::telemetry::Metrics;
use canaryd::daemon::token::TokenFile;
use canaryd::demo::{self, AppConfig, LoadConfig};
use canaryd::policy::{self, Policy, PrometheusConfig};
use daemon::{state_of, write_policies, Daemon, DaemonOptions};
use prom::Target;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "am-webhook-token-7f3a9c";
/// Longest the alert may take to fire and reach canaryd.
const FIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the alert may take to resolve and the resolution to reach canaryd.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause between checks of the index.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Demo-app error rate while the release is bad: far above the 2% rule.
const BAD_ERROR_RATE: f64 = 0.5;
/// Load on the demo-app, requests per second.
const LOAD_RPS: f64 = 40.0;
/// Upper bound on the load run; the test stops it earlier.
const LOAD_FOR: Duration = Duration::from_secs(300);
/// How long Alertmanager gets to (fail to) deliver in the wrong-token test.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A canaryd HTTP server on a loopback port; stops when dropped.
struct Canaryd {
    url: String,
    state: Arc<ServerState>,
    _stop: oneshot::Sender<()>,
}

async fn canaryd(token: Option<&str>) -> Canaryd {
    let state = Arc::new(ServerState::new(
        Metrics::new().unwrap(),
        token.map(|t| TokenFile::fixed(t.as_bytes())),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    Canaryd {
        url,
        state,
        _stop: tx,
    }
}

fn policy_for(service: &str, prometheus_url: &str) -> Policy {
    let yaml = format!(
        "service: {service}
namespace: test
deployment: {service}
strategy:
  canary:
    steps:
      - size: 1
        observe: 1m
analysis:
  prometheus:
    url: {prometheus_url}
alerts:
  matchers: ['service=\"{service}\"', 'severity=~\"critical|page\"']
  guardWindow: 10m
"
    );
    policy::parse_str(&yaml, Path::new(&format!("{service}.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn matching(state: &ServerState, policy: &Policy) -> Vec<String> {
    let now_ms = canaryd::controller::now_ms() as i64;
    state
        .alerts
        .lock()
        .unwrap()
        .matching(&policy.alerts, now_ms)
}

fn received(state: &ServerState, source: &str) -> u64 {
    state
        .metrics
        .alerts_received
        .with_label_values(&[source])
        .get()
}

/// A demo-app serving on `addr` until the sender is dropped or fired.
struct DemoApp {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn demo_app(listener: tokio::net::TcpListener, error_rate: f64) -> DemoApp {
    let config = AppConfig {
        version: "v2".into(),
        role: "canary".into(),
        pod: "myapp-canary-7c9d2f1e4b-bcdfg".into(),
        error_rate,
        latency_median: Duration::from_millis(5),
        latency_sigma: demo::DEFAULT_LATENCY_SIGMA,
        sleep: false,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        demo::serve_app(listener, config, async {
            let _ = rx.await;
        })
        .await
        .unwrap_or_else(|e| panic!("demo app: {e}"));
    });
    DemoApp {
        stop: Some(tx),
        task,
    }
}

impl DemoApp {
    /// Shuts down gracefully and waits until the port is released.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Polls `check` until it holds or `timeout` passes; the message names what
/// was awaited and shows `context()` (process logs).
async fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}\n{}", context());
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alert_fires_through_alertmanager_and_resolves_and_polling_sees_it_too() {
    // canaryd's webhook, with the token Alertmanager reads from a file.
    let hooked = canaryd(Some(TOKEN)).await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("canaryd-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let am = Alertmanager::start(
        &format!("{}/v1/alerts", hooked.url),
        &Credentials::File(token_file),
    );

    // The bad release: a demo-app answering half its requests with 500.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr: SocketAddr = listener.local_addr().unwrap();
    let app = demo_app(listener, BAD_ERROR_RATE).await;
    let rule = Rule {
        name: "HighErrorRate".into(),
        expr: r#"sum(rate(http_requests_total{code=~"5.."}[10s])) / sum(rate(http_requests_total[10s])) > 0.02"#.into(),
        for_: "0s".into(),
        labels: vec![
            ("service".into(), "myapp".into()),
            ("severity".into(), "critical".into()),
        ],
    };
    let prom = AlertingProm::start(
        &[Target {
            addr: app_addr,
            namespace: "test".into(),
            pod: "myapp-canary-7c9d2f1e4b-bcdfg".into(),
        }],
        &[rule],
        &am.addr(),
    );
    let load = tokio::spawn(async move {
        demo::run_load(&LoadConfig {
            rps: LOAD_RPS,
            duration: LOAD_FOR,
            targets: vec![format!("http://{app_addr}/")],
        })
        .await
    });

    let myapp = policy_for("myapp", &prom.url());
    let other = policy_for("checkout", &prom.url());
    let logs = || {
        format!(
            "alertmanager:\n{}\nprometheus:\n{}",
            am.log_text(),
            prom.log_text()
        )
    };

    // Prometheus → Alertmanager → webhook: the index names the alert for myapp only.
    eventually(
        "HighErrorRate reaches canaryd through Alertmanager",
        FIRE_TIMEOUT,
        || matching(&hooked.state, &myapp) == ["HighErrorRate"],
        logs,
    )
    .await;
    assert!(matching(&hooked.state, &other).is_empty());
    assert!(received(&hooked.state, "webhook") >= 1);
    assert_eq!(received(&hooked.state, POLL_SOURCE), 0);

    // The polling fallback, with no webhook at all, finds the same alert.
    let polled = canaryd(None).await;
    let mut poller = AlertPoller::new(&[PrometheusConfig {
        url: prom.url(),
        auth: None,
        ca_file: None,
    }]);
    let outcome = poller.poll_once(&polled.state).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.changes.started.len(), 1, "{outcome:?}");
    assert_eq!(matching(&polled.state, &myapp), ["HighErrorRate"]);
    assert!(matching(&polled.state, &other).is_empty());
    assert_eq!(received(&polled.state, POLL_SOURCE), 1);
    // A repeated poll is a duplicate, not a new alert.
    let again = poller.poll_once(&polled.state).await;
    assert!(again.changes.started.is_empty() && again.changes.resolved.is_empty());
    assert_eq!(again.changes.duplicates, 1);

    // The errors stop: the good release takes the same port.
    app.stop().await;
    let listener = tokio::net::TcpListener::bind(app_addr).await.unwrap();
    let app = demo_app(listener, 0.0).await;

    // Alertmanager's resolved notification clears the webhook's entry.
    eventually(
        "the resolved notification clears HighErrorRate",
        RESOLVE_TIMEOUT,
        || hooked.state.alerts.lock().unwrap().is_empty(),
        logs,
    )
    .await;
    assert!(matching(&hooked.state, &myapp).is_empty());

    // And the poll, which saw it before, resolves it too.
    let deadline = tokio::time::Instant::now() + RESOLVE_TIMEOUT;
    loop {
        let outcome = poller.poll_once(&polled.state).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        if polled.state.alerts.lock().unwrap().is_empty() {
            assert_eq!(outcome.changes.resolved.len(), 1, "{outcome:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poll still sees HighErrorRate after {RESOLVE_TIMEOUT:?}"
        );
        tokio::time::sleep(CHECK_EVERY).await;
    }

    load.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_with_the_wrong_token_gets_401_and_changes_nothing() {
    let hooked = canaryd(Some(TOKEN)).await;
    let am = Alertmanager::start(
        &format!("{}/v1/alerts", hooked.url),
        &Credentials::Inline("not-the-token".into()),
    );
    am.post_alerts(&[serde_json::json!({
        "labels": {"alertname": "HighErrorRate", "service": "myapp", "severity": "critical"},
    })])
    .await;
    // Alertmanager tries and is refused: a 4xx is not retried.
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while am
        .counter(
            "alertmanager_notifications_failed_total",
            "integration=\"webhook\"",
        )
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alertmanager never failed a delivery:\n{}",
            am.log_text()
        );
        tokio::time::sleep(CHECK_EVERY).await;
    }
    assert!(am.log_text().contains("401"), "{}", am.log_text());
    assert!(hooked.state.alerts.lock().unwrap().is_empty());
    assert_eq!(received(&hooked.state, "webhook"), 0);

    // The same request by hand: 401 with a Bearer challenge.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/alerts", hooked.url))
        .bearer_auth("not-the-token")
        .body(r#"{"version":"4","status":"firing","alerts":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_alerts_arrive_through_alertmanager_and_an_oversized_body_is_refused() {
    let hooked = canaryd(Some(TOKEN)).await;
    let am = Alertmanager::start(
        &format!("{}/v1/alerts", hooked.url),
        &Credentials::Inline(TOKEN.into()),
    );
    // One group (same alertname and service), so one notification carries all.
    let alerts: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "labels": {"alertname": "PodCrashLooping", "service": "myapp",
                           "severity": "critical", "pod": format!("myapp-{i}")},
                "annotations": {"summary": format!("pod myapp-{i} restarts")},
            })
        })
        .collect();
    am.post_alerts(&alerts).await;
    let myapp = policy_for("myapp", "http://prometheus:9090");
    eventually(
        "1,000 alerts reach canaryd",
        FIRE_TIMEOUT,
        || hooked.state.alerts.lock().unwrap().len() == 1000,
        || am.log_text(),
    )
    .await;
    // One alert name, deduplicated for the engine.
    assert_eq!(matching(&hooked.state, &myapp), ["PodCrashLooping"]);
    assert!(received(&hooked.state, "webhook") >= 1000);

    // The 10 MB → 413 case is covered by server.rs' unit test over TCP: the
    // server answers before the body is sent, which an HTTP client can see as a
    // broken pipe, so it needs a raw socket there.

    // A malformed payload gets 400 naming the JSON path (as docs/alerts.md shows).
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/alerts", hooked.url))
        .bearer_auth(TOKEN)
        .body(r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":7}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        "alerts[0].labels: invalid type: integer `7`, expected a map (line 1, column 72)\n"
    );
    assert_eq!(hooked.state.alerts.lock().unwrap().len(), 1000);
}

// ---- the whole chain into `canaryd run` ---------------------------------------

const V1: &str = "registry.invalid/canaryd/web:v1";
const V2: &str = "registry.invalid/canaryd/web:v2";
/// Requests per second each played pod receives.
const POD_RPS: f64 = 40.0;
/// Longest the blue-green release may take to switch the Service.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest `canaryd run` may take to become ready or adopt the Deployment.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Blue-green policy with `{ns}` and `{prom}` to fill in.
const BLUE_GREEN_POLICY: &str = include_str!("../fixtures/daemon/blue-green.yaml");

fn play(pod: &k8s_openapi::api::core::v1::Pod) -> Option<pods::Behaviour> {
    let version = match pods::image_of(pod).as_str() {
        V1 => "v1",
        V2 => "v2",
        _ => return None,
    };
    Some(pods::Behaviour {
        version: version.into(),
        error_rate: 0.0,
        latency_ms: 20,
    })
}

async fn selector_version(services: &kube::Api<k8s_openapi::api::core::v1::Service>) -> String {
    services
        .get("web")
        .await
        .ok()
        .and_then(|s| s.spec)
        .and_then(|s| s.selector)
        .and_then(|s| s.get("version").cloned())
        .unwrap_or_default()
}

async fn canaryd_events(ns: &cluster::TestNamespace) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut events: Vec<_> = api
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("canaryd"))
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaryd_run_switches_blue_green_back_when_a_real_alert_fires() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams, PostParams};

    let ns = cluster::TestNamespace::create().await;
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("pods.json");
    let analysis = pods::start_prometheus(&sd);
    let _player = pods::PodPlayer::start(ns.client(), ns.name(), &sd, POD_RPS, Arc::new(play));

    let deployments: kube::Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &cluster::deployment("web", 2, V1))
        .await
        .expect("create web");
    let services: kube::Api<Service> = ns.api();
    ns.create_service("web", serde_json::json!({"app": "web", "version": "v1"}))
        .await;

    let policies = write_policies(
        dir.path().join("policies"),
        "web.yaml",
        &BLUE_GREEN_POLICY
            .replace("{ns}", ns.name())
            .replace("{prom}", &analysis.url()),
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let daemon = Daemon::start(&DaemonOptions {
        policies: &policies,
        kubeconfig: cluster::kubeconfig_path(cluster::KUBECONFIG_ENV),
        lease_namespace: ns.name(),
        lease_name: None,
        identity: "alerts-e2e",
        token_file: Some(&token_file),
        json_log: false,
        log_dir: dir.path(),
    });
    cluster::wait_until(DAEMON_TIMEOUT, "web adopted", || async {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        if canaryd::k8s::target::is_paused(&d)
            && canaryd::k8s::target::annotation(&d, canaryd::k8s::target::STATE_ANNOTATION)
                .is_some()
        {
            Ok(())
        } else {
            Err(daemon.tail())
        }
    })
    .await;

    // The alerting chain: a synthetic probe of the service, scraped by a
    // Prometheus whose rule fires on its errors, sending to an Alertmanager
    // that posts to the daemon with the token from the same file.
    let am = Alertmanager::start(
        &format!("{}/v1/alerts", daemon.url()),
        &Credentials::File(token_file.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_addr = listener.local_addr().unwrap();
    let probe = demo_app(listener, 1.0).await;
    let alerting = AlertingProm::start(
        &[Target {
            addr: probe_addr,
            namespace: ns.name().into(),
            pod: "web-probe".into(),
        }],
        &[Rule {
            name: "HighErrorRate".into(),
            expr: r#"sum(rate(http_requests_total{code=~"5.."}[10s])) / sum(rate(http_requests_total[10s])) > 0.02"#.into(),
            for_: "0s".into(),
            labels: vec![
                ("service".into(), "web".into()),
                ("severity".into(), "critical".into()),
            ],
        }],
        &am.addr(),
    );

    // Release v2; it passes analysis and the Service switches to it.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"spec": {"template": {
                "metadata": {"labels": {"version": "v2"}},
                "spec": {"containers": [{"name": "app", "image": V2}]}
            }}})),
        )
        .await
        .expect("set image");
    cluster::wait_until(ROLLOUT_TIMEOUT, "Service switched to v2", || async {
        match selector_version(&services).await.as_str() {
            "v2" => Ok(()),
            v => Err(format!("selector {v}; daemon log:\n{}", daemon.tail())),
        }
    })
    .await;

    // In the guard window the probe starts failing: the rule fires and the
    // notification rolls the release back through Alertmanager.
    let load = tokio::spawn(async move {
        demo::run_load(&LoadConfig {
            rps: LOAD_RPS,
            duration: LOAD_FOR,
            targets: vec![format!("http://{probe_addr}/")],
        })
        .await
    });
    let started = std::time::Instant::now();
    cluster::wait_until(FIRE_TIMEOUT, "Service switched back to v1", || async {
        match selector_version(&services).await.as_str() {
            "v1" => Ok(()),
            v => Err(format!(
                "selector {v}; alertmanager:\n{}\nprometheus:\n{}\ndaemon:\n{}",
                am.log_text(),
                alerting.log_text(),
                daemon.tail()
            )),
        }
    })
    .await;
    eprintln!(
        "figure: probe errors start to Service switched back: {:?}",
        started.elapsed()
    );
    let d = cluster::wait_until(DAEMON_TIMEOUT, "phase RolledBack", || async {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        match state_of(&d).phase {
            canaryd::rollout::Phase::RolledBack => Ok(d),
            p => Err(format!("{p:?}")),
        }
    })
    .await;
    let image = d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some(V1));
    let events = canaryd_events(&ns).await;
    let rollback = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("AlertRollback"))
        .unwrap_or_else(|| {
            panic!(
                "no AlertRollback event in {:?}",
                events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
            )
        });
    let note = rollback.note.clone().unwrap_or_default();
    assert!(note.contains("HighErrorRate"), "{note}");
    let rollouts = daemon.board().await;
    assert_eq!(rollouts["policyErrors"], serde_json::json!([]));

    load.abort();
    probe.stop().await;
    ns.cleanup().await;
}
