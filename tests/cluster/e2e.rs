//! The end-to-end proof: `canaryd run` (a child process) on the real control
//! plane, with a real Prometheus scraping demo-apps that play the pods
//! (`canaryd::demo::pods`), and a real alerting Prometheus and Alertmanager.
//!
//! One story on the seed's Deployment `test/myapp-deploy` (3 replicas, image
//! `myapp:v1`), in order, with one daemon that is never restarted:
//!
//! (a) v1 → v2, healthy: the four steps (1 pod, 10%, 50%, 100%) are walked
//!     and v2 is promoted; canary and baseline are gone.
//! (b) an invalid policy edit shows in `/v1/rollouts` policyErrors while the
//!     old version stays in force: v3 with 5× the errors is rolled back in
//!     the first step; the Deployment stays on v2; the Event has the numbers.
//! (c) a valid edit (two steps instead of four) takes effect without restart:
//!     v4 walks two steps and is promoted; a real alert then fires through
//!     Alertmanager in the guard window and canaryd rolls back to v2.
//!
//! Also measured (printed with `bench:`, recorded in docs/bench-e2e.md): the
//! time from the close of v3's first window to the rollback being visible in
//! the API, and canaryd's peak RSS and CPU time. Needs `CANARYD_KUBECONFIG`
//! (`scripts/test`), `prometheus` and `alertmanager`.
//!
//! The namespace `test` is created when absent (and then deleted at the end);
//! leftovers of an earlier run are removed first, so the test can be re-run.

use crate::support::{alertmanager, cluster, daemon, pods, prom};

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alertmanager::{AlertingProm, Alertmanager, Credentials, Rule};
use canaryd::demo::{self, AppConfig, LoadConfig};
use canaryd::judge::Decision;
use canaryd::k8s::target;
use canaryd::rollout::Phase;
use cluster::wait_until;
use daemon::{state_of, write_policies, Daemon, DaemonOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use pods::{Behaviour, PodPlayer};
use serde_json::{json, Value};

const NAMESPACE: &str = "test";
const NAME: &str = "myapp-deploy";
const CANARY: &str = "myapp-deploy-canary";
const BASELINE: &str = "myapp-deploy-baseline";
const LEASE: &str = "canaryd-e2e";
const REPLICAS: i32 = 3;
/// Requests per second each played pod receives.
const POD_RPS: f64 = 40.0;
/// Error ratio of the healthy releases.
const BASE_ERRORS: f64 = 0.02;
/// The bad release: five times the errors.
const BAD_ERRORS: f64 = 5.0 * BASE_ERRORS;
/// Longest a whole rollout may take.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest a reaction (adoption, reload, rollback after the verdict) may take.
const SHORT: Duration = Duration::from_secs(45);
/// Longest a terminating namespace `test` may take to go away.
const NAMESPACE_GONE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the alert may take to fire, reach canaryd and be acted on.
const ALERT_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests per second on the failing probe once the alert should fire.
const PROBE_RPS: f64 = 40.0;
/// How often the canary size is sampled during (a).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const TOKEN: &str = "e2e-alert-token-0123";

fn policy(prom: &str, steps: &str) -> String {
    format!(
        r#"service: myapp
namespace: {NAMESPACE}
deployment: {NAME}
progressDeadline: 60s
baseline: fresh
traffic: {{type: replicas}}
strategy:
  canary:
    steps:
{steps}
analysis:
  prometheus:
    url: {prom}
  interval: 5s
  maxDuration: 5m
alerts:
  matchers: ['service="myapp"', 'severity="critical"']
  guardWindow: 2m
"#
    )
}

const FOUR_STEPS: &str = "      - {size: 1, observe: 20s}
      - {size: 10%, observe: 10s}
      - {size: 50%, observe: 10s}
      - {size: 100%, observe: 10s}";
const TWO_STEPS: &str = "      - {size: 1, observe: 10s}
      - {size: 100%, observe: 10s}";
/// An edit that does not validate (alpha must be below 0.5).
const INVALID_EDIT: &str = "  alpha: 2\n";

fn image_for(tag: &str) -> String {
    format!("myapp:{tag}")
}

fn behaviour(pod: &Pod) -> Option<Behaviour> {
    let image = pods::image_of(pod);
    let tag = canaryd::demo::pods::image_tag(&image);
    let error_rate = match tag {
        "v1" | "v2" | "v4" => BASE_ERRORS,
        "v3" => BAD_ERRORS,
        _ => return None,
    };
    Some(Behaviour {
        version: tag.to_string(),
        error_rate,
        latency_ms: 20,
    })
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

// ---- the daemon ------------------------------------------------------------------

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Peak RSS (kB) and CPU time (user + system) so far, from /proc.
    fn usage(&self) -> (u64, Duration) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses: utime and
        // stime are fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields[11] + fields[12];
        let hz: u64 = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100);
        (hwm, Duration::from_millis(ticks * 1000 / hz))
    }
}

// ---- the cluster side ------------------------------------------------------------

struct Cluster {
    client: Client,
    created_namespace: bool,
    since: k8s_openapi::jiff::Timestamp,
}

impl Cluster {
    /// Makes sure `test` exists and holds nothing of an earlier run.
    async fn prepare() -> Cluster {
        let client = cluster::client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        // A namespace being deleted (e.g. by `scripts/demo down`) must be gone first.
        let existing = wait_until(
            NAMESPACE_GONE_TIMEOUT,
            "namespace test not terminating",
            || async {
                match namespaces.get_opt(NAMESPACE).await {
                    Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_some() => {
                        Err(String::from("terminating"))
                    }
                    Ok(found) => Ok(found),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
        let created_namespace = match existing {
            Some(_) => false,
            None => {
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
                namespaces
                    .create(&PostParams::default(), &ns)
                    .await
                    .unwrap();
                true
            }
        };
        let this = Cluster {
            client,
            created_namespace,
            since: k8s_openapi::jiff::Timestamp::now(),
        };
        this.delete_objects().await;
        wait_until(SHORT, "default ServiceAccount and no leftovers", || async {
            let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(this.client.clone(), NAMESPACE);
            let left = this.leftovers().await;
            match sa.get_opt("default").await {
                Ok(Some(_)) if left.is_empty() => Ok(()),
                other => Err(format!(
                    "sa {:?}, leftovers {left:?}",
                    other.map(|o| o.is_some())
                )),
            }
        })
        .await;
        this
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for name in [NAME, CANARY, BASELINE] {
            if let Ok(Some(_)) = self.deployments().get_opt(name).await {
                left.push(name.to_string());
            }
        }
        left
    }

    async fn delete_objects(&self) {
        let dp = DeleteParams::foreground();
        for name in [CANARY, BASELINE, NAME] {
            let _ = self.deployments().delete(name, &dp).await;
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NAMESPACE);
        let _ = leases.delete(LEASE, &DeleteParams::default()).await;
    }

    async fn cleanup(self) {
        self.delete_objects().await;
        if self.created_namespace {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
        }
    }

    async fn create_seed(&self) {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": NAME, "labels": {"app": "myapp"}},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": {"app": "myapp"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "myapp"}},
                    "spec": {"containers": [{"name": "myapp", "image": image_for("v1")}]}
                }
            }
        }))
        .unwrap();
        cluster::place_on_fake_nodes(d.spec.as_mut().unwrap().template.spec.as_mut().unwrap());
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .expect("create myapp-deploy");
    }

    /// Like `kubectl set image deployment/myapp-deploy myapp=myapp:<tag>`.
    async fn set_image(&self, tag: &str) -> Deployment {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "myapp", "image": image_for(tag)}
        ]}}}});
        self.deployments()
            .patch(NAME, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .expect("set image")
    }

    async fn get(&self) -> Deployment {
        self.deployments()
            .get(NAME)
            .await
            .expect("get myapp-deploy")
    }

    async fn exists(&self, name: &str) -> bool {
        matches!(self.deployments().get_opt(name).await, Ok(Some(_)))
    }

    /// canaryd's Events on myapp-deploy from this run, oldest first.
    async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.reporting_controller.as_deref() == Some("canaryd")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NAME)
                    && e.event_time.as_ref().is_some_and(|t| t.0 >= self.since)
            })
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }

    /// Waits until the rollout of the current template is over on `tag`:
    /// template, phase, no arms, all pods on it.
    async fn wait_settled(&self, daemon: &Daemon, tag: &str, phases: &[Phase]) -> Deployment {
        wait_until(ROLLOUT_TIMEOUT, &format!("settled on {tag}"), || async {
            let d = self.get().await;
            let state = state_of(&d);
            let st = d.status.clone().unwrap_or_default();
            let done = image(&d) == image_for(tag)
                && phases.contains(&state.phase)
                && !self.exists(CANARY).await
                && !self.exists(BASELINE).await
                && st.observed_generation >= d.metadata.generation
                && st.updated_replicas == Some(REPLICAS)
                && st.available_replicas == Some(REPLICAS)
                && st.replicas == Some(REPLICAS);
            if done {
                Ok(d)
            } else {
                Err(format!(
                    "image {}, phase {:?}, last verdict {:?}, status {st:?}; events {:?}; log:\n{}",
                    image(&d),
                    state.phase,
                    state.last_verdict().map(|v| v.reason.clone()),
                    reasons(&self.events().await),
                    daemon.tail()
                ))
            }
        })
        .await
    }
}

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn reasons(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

fn notes(events: &[Event], reason: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note.clone())
        .collect()
}

/// Events after the first `n`.
fn after(events: Vec<Event>, n: usize) -> Vec<Event> {
    events.into_iter().skip(n).collect()
}

/// A demo-app that answers every request with an error (the alert's source).
async fn failing_probe() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AppConfig {
        version: "v4".into(),
        role: "stable".into(),
        pod: "myapp-probe".into(),
        error_rate: 1.0,
        latency_median: Duration::from_millis(5),
        latency_sigma: demo::DEFAULT_LATENCY_SIGMA,
        sleep: false,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(demo::serve_app(listener, config, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_promotes_rolls_back_and_reacts_to_a_real_alert() {
    let run_started = Instant::now();
    let cluster = Cluster::prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("pods.json");
    let analysis = pods::start_prometheus(&sd);
    let _player = PodPlayer::start(
        cluster.client.clone(),
        NAMESPACE,
        &sd,
        POD_RPS,
        Arc::new(behaviour),
    );
    cluster.create_seed().await;

    let four = policy(&analysis.url(), FOUR_STEPS);
    let policies = write_policies(dir.path().join("policies"), "myapp.yaml", &four);
    let policy_file = policies.join("myapp.yaml");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut daemon = Daemon::start(&DaemonOptions {
        policies: &policies,
        kubeconfig: cluster::kubeconfig_path(cluster::KUBECONFIG_ENV),
        lease_namespace: NAMESPACE,
        lease_name: Some(LEASE),
        identity: "e2e",
        token_file: Some(&token_file),
        json_log: true,
        log_dir: dir.path(),
    });
    wait_until(SHORT, "myapp-deploy adopted", || async {
        let d = cluster.get().await;
        let st = d.status.clone().unwrap_or_default();
        if target::is_paused(&d)
            && target::annotation(&d, target::STATE_ANNOTATION).is_some()
            && st.available_replicas == Some(REPLICAS)
        {
            Ok(())
        } else {
            Err(daemon.tail())
        }
    })
    .await;

    // ---- (a) a healthy release walks the four steps and is promoted.
    let sizes = Arc::new(Mutex::new(Vec::<i32>::new()));
    let sampler = {
        let (sizes, api) = (sizes.clone(), cluster.deployments());
        tokio::spawn(async move {
            loop {
                if let Ok(Some(c)) = api.get_opt(CANARY).await {
                    let n = c.spec.and_then(|s| s.replicas).unwrap_or(0);
                    let mut s = sizes.lock().unwrap();
                    if s.last() != Some(&n) {
                        s.push(n);
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };
    let a_started = Instant::now();
    cluster.set_image("v2").await;
    cluster
        .wait_settled(&daemon, "v2", &[Phase::Promoted, Phase::Idle])
        .await;
    let a_took = a_started.elapsed();
    sampler.abort();
    let sizes = sizes.lock().unwrap().clone();
    let events = cluster.events().await;
    let advanced = notes(&events, "StepAdvanced");
    assert_eq!(advanced.len(), 3, "{:?}", reasons(&events));
    for (i, note) in advanced.iter().enumerate() {
        assert!(note.contains(&format!("step {}/4", i + 2)), "{note}");
    }
    assert_eq!(sizes.first(), Some(&1), "first step is one pod: {sizes:?}");
    assert_eq!(
        sizes.iter().max(),
        Some(&REPLICAS),
        "last step is 100%: {sizes:?}"
    );
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert_eq!(
        notes(&events, "Promoted").len(),
        1,
        "{:?}",
        reasons(&events)
    );
    assert!(notes(&events, "AnalysisFailed").is_empty());
    eprintln!("e2e (a): v2 promoted in {a_took:?}; canary sizes seen {sizes:?}");

    // ---- an invalid edit is reported, and the previous version stays in force.
    let invalid = four.replace(
        "  interval: 5s\n",
        &format!("  interval: 5s\n{INVALID_EDIT}"),
    );
    std::fs::write(&policy_file, &invalid).unwrap();
    wait_until(SHORT, "policyErrors on /v1/rollouts", || async {
        let board = daemon.board().await;
        let errors = board["policyErrors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if errors.iter().any(|e| {
            let e = e.as_str().unwrap_or_default();
            e.contains("myapp.yaml") && e.contains("alpha")
        }) {
            Ok(())
        } else {
            Err(board.to_string())
        }
    })
    .await;

    // ---- (b) a release with 5x the errors is rolled back in the first step.
    let seen_before = cluster.events().await.len();
    let v2_template = cluster.get().await.spec.unwrap().template;
    let bad = target::desired_hash(&cluster.set_image("v3").await);
    let visible_at = wait_until(ROLLOUT_TIMEOUT, "v3 rolled back (visible)", || async {
        let d = cluster.get().await;
        let restored = d.spec.as_ref().map(|s| &s.template) == Some(&v2_template);
        if restored && !cluster.exists(CANARY).await {
            Ok(unix_ms())
        } else {
            let state = state_of(&d);
            Err(format!(
                "phase {:?}, image {}; log:\n{}",
                state.phase,
                image(&d),
                daemon.tail()
            ))
        }
    })
    .await;
    let d = cluster
        .wait_settled(&daemon, "v2", &[Phase::RolledBack])
        .await;
    let state = state_of(&d);
    assert_eq!(state.failed_revision.as_deref(), Some(bad.as_str()));
    let rollback = state
        .verdicts
        .iter()
        .find(|v| v.decision == Decision::Rollback)
        .unwrap_or_else(|| panic!("no rollback verdict in {:?}", state.verdicts));
    assert_eq!(
        rollback.step, 0,
        "rolled back in the first step: {rollback:?}"
    );
    // The verdicts of this rollout: those of the failed step 0 up to the rollback.
    let first_close = state
        .verdicts
        .iter()
        .filter(|v| v.step == 0 && v.at <= rollback.at)
        .map(|v| v.at)
        .min()
        .unwrap();
    let events = after(cluster.events().await, seen_before);
    let failed = notes(&events, "AnalysisFailed");
    assert_eq!(failed.len(), 1, "{:?}", reasons(&events));
    let why = &failed[0];
    assert!(why.contains("step 1/4") && why.contains("e="), "{why}");
    assert!(
        why.contains("canary ") && why.contains(" vs baseline ") && why.contains('/'),
        "counts in {why}"
    );
    assert_eq!(
        notes(&events, "RolledBack").len(),
        1,
        "{:?}",
        reasons(&events)
    );
    let first_to_visible = visible_at.saturating_sub(u128::from(first_close) * 1000);
    let decided_to_visible = visible_at.saturating_sub(u128::from(rollback.at) * 1000);
    eprintln!("e2e (b): AnalysisFailed: {why}");
    for v in state
        .verdicts
        .iter()
        .filter(|v| v.step == 0 && v.at >= first_close)
    {
        eprintln!("e2e (b): verdict at {}: {}", v.at, v.reason);
    }

    // ---- a valid edit takes effect without a restart: two steps from now on.
    let two = policy(&analysis.url(), TWO_STEPS);
    std::fs::write(&policy_file, &two).unwrap();
    wait_until(SHORT, "policyErrors cleared", || async {
        let board = daemon.board().await;
        if board["policyErrors"] == json!([]) {
            Ok(())
        } else {
            Err(board.to_string())
        }
    })
    .await;

    // ---- (c) v4 is promoted under the new policy; a real alert in its guard
    // window rolls it back to v2.
    let am = Alertmanager::start(
        &format!("{}/v1/alerts", daemon.url()),
        &Credentials::File(token_file.clone()),
    );
    let (probe_addr, stop_probe) = failing_probe().await;
    let alerting = AlertingProm::start(
        &[prom::Target {
            addr: probe_addr,
            namespace: NAMESPACE.into(),
            pod: "myapp-probe".into(),
        }],
        &[Rule {
            name: "MyappErrors".into(),
            expr: r#"sum(rate(http_requests_total{code=~"5.."}[10s])) > 1"#.into(),
            for_: "0s".into(),
            labels: vec![
                ("service".into(), "myapp".into()),
                ("severity".into(), "critical".into()),
            ],
        }],
        &am.addr(),
    );
    let seen_before = cluster.events().await.len();
    let v4_started = Instant::now();
    cluster.set_image("v4").await;
    cluster
        .wait_settled(&daemon, "v4", &[Phase::Promoted])
        .await;
    let v4_took = v4_started.elapsed();
    let events = after(cluster.events().await, seen_before);
    let advanced = notes(&events, "StepAdvanced");
    assert_eq!(advanced.len(), 1, "{:?}", reasons(&events));
    assert!(
        advanced[0].contains("step 2/2"),
        "the edited policy: {}",
        advanced[0]
    );

    let load = tokio::spawn(async move {
        demo::run_load(&LoadConfig {
            rps: PROBE_RPS,
            duration: ALERT_TIMEOUT,
            targets: vec![format!("http://{probe_addr}/")],
        })
        .await
    });
    let probe_started = Instant::now();
    let d = wait_until(ALERT_TIMEOUT, "alert rollback to v2", || async {
        let d = cluster.get().await;
        let state = state_of(&d);
        if state.phase == Phase::RolledBack && image(&d) == image_for("v2") {
            Ok(d)
        } else {
            Err(format!(
                "phase {:?}, image {}; alertmanager:\n{}\nprometheus:\n{}\ndaemon:\n{}",
                state.phase,
                image(&d),
                am.log_text(),
                alerting.log_text(),
                daemon.tail()
            ))
        }
    })
    .await;
    let alert_took = probe_started.elapsed();
    assert_eq!(
        d.spec.as_ref().map(|s| &s.template),
        Some(&v2_template),
        "the previous template"
    );
    let events = after(cluster.events().await, seen_before);
    let alert = notes(&events, "AlertRollback");
    assert_eq!(alert.len(), 1, "{:?}", reasons(&events));
    assert!(alert[0].contains("MyappErrors"), "{}", alert[0]);
    load.abort();
    let _ = stop_probe.send(());

    // ---- figures, then a clean stop that releases the Lease.
    let (rss_kb, cpu) = daemon.usage();
    let ran_for = run_started.elapsed();
    assert_eq!(daemon.terminate().code(), Some(0), "clean exit on SIGTERM");
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let lease = leases.get(LEASE).await.unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "released on SIGTERM"
    );
    let log = daemon.log_text();
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["fields"]["reason"] == "AlertRollback" && v["fields"]["service"] == "myapp"),
        "structured log fields for the rollback"
    );
    eprintln!(
        "bench: v3 first window closed -> rollback visible in the API: {first_to_visible} ms"
    );
    eprintln!(
        "bench: v3 deciding window closed -> rollback visible in the API: {decided_to_visible} ms"
    );
    eprintln!(
        "bench: v2 image set -> promoted and settled (4 steps, 50 s of observation): {a_took:?}"
    );
    eprintln!(
        "bench: v4 image set -> promoted and settled (2 steps, 20 s of observation): {v4_took:?}"
    );
    eprintln!("bench: probe errors start -> AlertRollback back on v2: {alert_took:?}");
    eprintln!(
        "bench: canaryd run peak RSS (VmHWM) {} MiB, CPU time {:.2} s over {:.0} s",
        rss_kb as f64 / 1024.0,
        cpu.as_secs_f64(),
        ran_for.as_secs_f64()
    );
    cluster.cleanup().await;
}
