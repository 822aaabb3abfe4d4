//! `canaryd run` as a child process against the real control plane, a real
//! Prometheus and demo-apps played for each pod (tests/support/pods.rs).
//!
//! Needs `CANARYD_KUBECONFIG` (`scripts/test` starts the sandbox) and the
//! `prometheus` binary. Each test has its own namespace (also holding its
//! Lease), Prometheus, pod player and daemon(s); policies use 5 s windows.

use crate::support::{cluster, daemon, pods, prom};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canaryd::k8s::router::httproute_resource;
use canaryd::k8s::target::{self, ROLE_LABEL};
use canaryd::rollout::Phase;
use cluster::{image, wait_until, TestNamespace};
use daemon::{state_of, tail, write_policies, Daemon, DaemonOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pods::{Behaviour, PodPlayer};
use serde_json::{json, Value};

const V1: &str = "registry.invalid/canaryd/web:v1";
pub(crate) const V2: &str = "registry.invalid/canaryd/web:v2";
pub(crate) const V3: &str = "registry.invalid/canaryd/web:v3";
const BAD: &str = "registry.invalid/canaryd/web:bad";
/// Requests per second each played pod receives.
const RPS: f64 = 40.0;
/// Requests per second over all pods when a router weight splits them.
const TOTAL_RPS: f64 = 160.0;
/// Longest a whole rollout may take in these tests.
pub(crate) const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(150);
pub(crate) const SHORT: Duration = Duration::from_secs(30);
pub(crate) const TOKEN: &str = "test-alert-token";

// ---- the daemon process ------------------------------------------------------

impl Daemon {
    pub(crate) async fn wait_ready(&mut self) {
        let url = format!("{}/readyz", self.url());
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("canaryd exited with {status}:\n{}", self.log_text());
            }
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                start.elapsed() < SHORT,
                "canaryd not ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---- the scene: namespace, Prometheus, pod player ------------------------------

fn behaviour(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Behaviour> {
    let image = pods::image_of(pod);
    let (version, error_rate) = match image.as_str() {
        V1 => ("v1", 0.0),
        V2 => ("v2", 0.0),
        V3 => ("v3", 0.0),
        BAD => ("bad", 0.5),
        _ => return None,
    };
    Some(Behaviour {
        version: version.to_string(),
        error_rate,
        latency_ms: 20,
    })
}

pub(crate) struct Scene {
    pub(crate) ns: TestNamespace,
    pub(crate) dir: tempfile::TempDir,
    prom: prom::Prom,
    _player: PodPlayer,
}

impl Scene {
    pub(crate) async fn new() -> Scene {
        Scene::with_behaviour(Arc::new(behaviour)).await
    }

    /// A scene whose pods are played by `behaviour` (`None`: not played).
    async fn with_behaviour(behaviour: Arc<pods::BehaviourFn>) -> Scene {
        let ns = TestNamespace::create().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("pods.json");
        let prom = pods::start_prometheus(&sd);
        let player = PodPlayer::start(ns.client(), ns.name(), &sd, RPS, behaviour);
        Scene {
            ns,
            dir,
            prom,
            _player: player,
        }
    }

    /// A scene whose load follows a router weight (percent to the canary).
    async fn weighted(weight: Arc<AtomicU32>) -> Scene {
        let ns = TestNamespace::create().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("pods.json");
        let prom = pods::start_prometheus(&sd);
        let player = PodPlayer::start_weighted(
            ns.client(),
            ns.name(),
            &sd,
            TOTAL_RPS,
            weight,
            Arc::new(behaviour),
        );
        Scene {
            ns,
            dir,
            prom,
            _player: player,
        }
    }

    fn client(&self) -> Client {
        self.ns.client()
    }

    fn name(&self) -> &str {
        self.ns.name()
    }

    /// Writes `policy` (with `{ns}` and `{prom}` filled in) to a fresh directory.
    pub(crate) fn policies(&self, policy: &str) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join(format!("policies-{}", rand::random::<u32>()));
        let text = policy
            .replace("{ns}", self.name())
            .replace("{prom}", &self.prom.url());
        write_policies(dir, "web.yaml", &text)
    }

    pub(crate) fn daemon(&self, policies: &Path, identity: &str) -> Daemon {
        self.daemon_with_env(policies, identity, &[])
    }

    fn daemon_with_env(&self, policies: &Path, identity: &str, env: &[(&str, &str)]) -> Daemon {
        let token = self.dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        Daemon::start_with_env(
            &DaemonOptions {
                policies,
                kubeconfig: cluster::kubeconfig_path(cluster::KUBECONFIG_ENV),
                lease_namespace: self.name(),
                lease_name: None,
                identity,
                token_file: Some(&token),
                json_log: true,
                log_dir: self.dir.path(),
            },
            env,
        )
    }

    pub(crate) fn deployments(&self) -> Api<Deployment> {
        self.ns.api()
    }

    pub(crate) async fn create_web(&self, replicas: i32) {
        self.deployments()
            .create(
                &PostParams::default(),
                &cluster::deployment("web", replicas, V1),
            )
            .await
            .expect("create web");
    }

    /// Like `kubectl set image` (and the version label for blue-green).
    pub(crate) async fn set_image(&self, image: &str, version: Option<&str>) -> Deployment {
        let mut template = json!({"spec": {"containers": [{"name": "app", "image": image}]}});
        if let Some(v) = version {
            template["metadata"] = json!({"labels": {"version": v}});
        }
        self.deployments()
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": template}})),
            )
            .await
            .expect("set image")
    }

    pub(crate) async fn web(&self) -> Deployment {
        self.deployments().get("web").await.expect("get web")
    }

    /// Waits until canaryd adopted `web` (paused, state written).
    pub(crate) async fn wait_adopted(&self, daemon: &Daemon) {
        wait_until(SHORT, "web adopted (paused, state annotation)", || async {
            let d = self.web().await;
            if target::is_paused(&d) && target::annotation(&d, target::STATE_ANNOTATION).is_some() {
                Ok(())
            } else {
                Err(format!(
                    "paused {}; log:\n{}",
                    target::is_paused(&d),
                    daemon.log_text()
                ))
            }
        })
        .await;
    }

    pub(crate) async fn wait_phase(
        &self,
        daemon: &Daemon,
        what: &str,
        want: impl Fn(&Phase) -> bool,
    ) -> Deployment {
        wait_until(ROLLOUT_TIMEOUT, what, || async {
            let d = self.web().await;
            let state = state_of(&d);
            if want(&state.phase) {
                Ok(d)
            } else {
                Err(format!(
                    "phase {:?}, last verdict {:?}; events {:?}; daemon log tail:\n{}",
                    state.phase,
                    state.last_verdict().map(|v| v.reason.clone()),
                    reasons(&self.events().await),
                    daemon.tail()
                ))
            }
        })
        .await
    }

    /// canaryd's Events on `web`, oldest first.
    pub(crate) async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = self.ns.api();
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.reporting_controller.as_deref() == Some("canaryd")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
            })
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
    }
}

/// `elapsed_ms` of every successful reconcile pass in a JSON daemon log.
fn reconcile_millis(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "Reconciled.")
        .filter_map(|v| v["fields"]["elapsed_ms"].as_u64())
        .collect()
}

pub(crate) fn reasons(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

fn count(events: &[Event], reason: &str) -> usize {
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .count()
}

fn note(events: &[Event], reason: &str) -> String {
    events
        .iter()
        .find(|e| e.reason.as_deref() == Some(reason))
        .and_then(|e| e.note.clone())
        .unwrap_or_else(|| panic!("no {reason} event in {:?}", reasons(events)))
}

pub(crate) const CANARY_POLICY: &str = r#"
service: web
namespace: {ns}
deployment: web
progressDeadline: 60s
baseline: fresh
traffic: {type: replicas}
strategy:
  canary:
    steps:
      - size: 1
        observe: 10s
      - size: 2
        observe: 10s
analysis:
  prometheus:
    url: {prom}
  interval: 5s
  maxDuration: 5m
alerts:
  matchers: ['service="web"']
  guardWindow: 5s
"#;

/// Waits until the arms are gone and `web` runs `image` everywhere, paused.
pub(crate) async fn wait_settled_on(
    scene: &Scene,
    daemon: &Daemon,
    image_want: &str,
) -> Deployment {
    wait_until(
        ROLLOUT_TIMEOUT,
        &format!("web settled on {image_want}"),
        || async {
            let d = scene.web().await;
            let canary = scene
                .deployments()
                .get_opt("web-canary")
                .await
                .map_err(|e| e.to_string())?;
            let baseline = scene
                .deployments()
                .get_opt("web-baseline")
                .await
                .map_err(|e| e.to_string())?;
            let st = d.status.clone().unwrap_or_default();
            // The rollout is over for this template (not a stale status from before it).
            let state = state_of(&d);
            let hash = target::desired_hash(&d);
            let over = match state.phase {
                Phase::Promoted => state.revision.as_deref() == Some(hash.as_str()),
                Phase::Idle => state.stable_hash.as_deref() == Some(hash.as_str()),
                _ => false,
            };
            let done = image(&d) == image_want
                && over
                && st.observed_generation >= d.metadata.generation
                && canary.is_none()
                && baseline.is_none()
                && target::is_paused(&d)
                && st.updated_replicas == Some(2)
                && st.available_replicas == Some(2)
                && st.replicas == Some(2);
            if done {
                Ok(d)
            } else {
                Err(format!(
                "image {}, canary {}, baseline {}, paused {}, status {st:?}, phase {:?}; log:\n{}",
                image(&d),
                canary.is_some(),
                baseline.is_some(),
                target::is_paused(&d),
                state_of(&d).phase,
                daemon.tail()
            ))
            }
        },
    )
    .await
}

// ---- tests --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotes_a_good_release() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(CANARY_POLICY);
    let mut daemon = scene.daemon(&policies, "solo");
    daemon.wait_ready().await;
    scene.wait_adopted(&daemon).await;

    let changed = Instant::now();
    let new = target::desired_hash(&scene.set_image(V2, None).await);
    let canary = wait_until(SHORT, "canary created", || async {
        match scene.deployments().get_opt("web-canary").await {
            Ok(Some(c)) => Ok(c),
            other => Err(format!("{:?}", other.map(|o| o.is_some()))),
        }
    })
    .await;
    let reaction = changed.elapsed();
    assert_eq!(
        target::annotation(&canary, target::TEMPLATE_HASH_ANNOTATION),
        Some(new.as_str())
    );
    assert_eq!(
        canary.labels().get(ROLE_LABEL).map(String::as_str),
        Some("canary")
    );
    assert_eq!(image(&canary), V2);
    // The baseline is created right after the canary, in the same pass.
    let baseline = wait_until(SHORT, "baseline created", || async {
        match scene.deployments().get_opt("web-baseline").await {
            Ok(Some(b)) => Ok(b),
            other => Err(format!("{:?}", other.map(|o| o.is_some()))),
        }
    })
    .await;
    assert_eq!(image(&baseline), V1);
    assert!(
        target::is_paused(&scene.web().await),
        "the new template does not roll by itself"
    );

    let d = wait_settled_on(&scene, &daemon, V2).await;
    let total = changed.elapsed();
    let state = state_of(&d);
    assert!(
        matches!(state.phase, Phase::Promoted | Phase::Idle),
        "{:?}",
        state.phase
    );
    let events = scene.events().await;
    let r = reasons(&events);
    for want in [
        "CanaryStarted",
        "AnalysisStarted",
        "StepAdvanced",
        "AnalysisPassed",
        "Promoted",
    ] {
        assert_eq!(count(&events, want), 1, "{want} once in {r:?}");
    }
    assert!(
        note(&events, "StepAdvanced").contains("step 2/2"),
        "{}",
        note(&events, "StepAdvanced")
    );
    assert_eq!(count(&events, "AnalysisFailed"), 0, "{r:?}");

    // The board and `canaryd status`.
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["status", "--url", &daemon.url()])
        .output()
        .expect("canaryd status");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}");
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains(&format!("{}/web", scene.name())), "{table}");
    let metrics = reqwest::get(format!("{}/metrics", daemon.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("canaryd_decisions_total{outcome="),
        "{metrics}"
    );
    eprintln!("figure: image change to canary Deployment created: {reaction:?}");
    eprintln!("figure: image change to promoted and settled: {total:?}");
    let mut passes = reconcile_millis(&daemon.log_text());
    passes.sort_unstable();
    assert!(!passes.is_empty(), "no reconcile timings logged");
    eprintln!(
        "figure: {} reconcile passes, p50 {} ms, p90 {} ms, max {} ms",
        passes.len(),
        passes[passes.len() / 2],
        passes[passes.len() * 9 / 10],
        passes[passes.len() - 1]
    );
    assert_eq!(daemon.terminate().code(), Some(0), "clean exit on SIGTERM");
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_back_a_bad_release() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(CANARY_POLICY);
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    let bad = target::desired_hash(&scene.set_image(BAD, None).await);

    let d = scene
        .wait_phase(&daemon, "rolled back", |p| *p == Phase::RolledBack)
        .await;
    assert_eq!(image(&d), V1, "stable template restored");
    assert_eq!(
        target::annotation(&d, target::FAILED_REVISION_ANNOTATION),
        Some(bad.as_str())
    );
    assert_eq!(state_of(&d).failed_revision.as_deref(), Some(bad.as_str()));
    assert!(scene
        .deployments()
        .get_opt("web-canary")
        .await
        .unwrap()
        .is_none());
    assert!(scene
        .deployments()
        .get_opt("web-baseline")
        .await
        .unwrap()
        .is_none());
    let events = scene.events().await;
    let failed = note(&events, "AnalysisFailed");
    assert!(
        failed.chars().any(|c| c.is_ascii_digit()),
        "numbers in {failed}"
    );
    let rolled = note(&events, "RolledBack");
    assert!(
        rolled.contains(&bad) && rolled.contains("not retried"),
        "{rolled}"
    );
    let warning = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("AnalysisFailed"))
        .unwrap();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    eprintln!("AnalysisFailed: {failed}");
    scene.ns.cleanup().await;
}

fn weighted_policy(traffic: &str) -> String {
    format!(
        r#"
service: web
namespace: {{ns}}
deployment: web
progressDeadline: 60s
baseline: fresh
traffic: {traffic}
strategy:
  canary:
    steps:
      - size: 1
        weight: 10
        observe: 10s
      - size: 2
        weight: 50
        observe: 10s
analysis:
  prometheus:
    url: {{prom}}
  interval: 5s
  maxDuration: 5m
"#
    )
}

/// Samples `probe` every 100 ms in the background; the distinct values seen, in order.
fn sampler<F, Fut>(probe: F) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Some(v) = probe().await {
                let mut s = out.lock().unwrap();
                if s.last() != Some(&v) {
                    s.push(v);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_weights_follow_the_steps() {
    let weight = Arc::new(AtomicU32::new(0));
    let scene = Scene::weighted(weight.clone()).await;
    scene.create_web(2).await;
    scene.ns.create_service("web", json!({"app": "web"})).await;
    let primary: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]}
    }))
    .unwrap();
    let ingresses: Api<Ingress> = scene.ns.api();
    ingresses
        .create(&PostParams::default(), &primary)
        .await
        .unwrap();
    let policies = scene.policies(&weighted_policy("{type: ingress-nginx, ingress: web}"));
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    let api = ingresses.clone();
    // The sampler also plays the router: load follows the weight it reads.
    let (seen, task) = sampler(move || {
        let api = api.clone();
        let weight = weight.clone();
        async move {
            let canary = api.get_opt("web-canary").await.ok()?;
            let value = match canary {
                None => String::from("absent"),
                Some(i) => i
                    .annotations()
                    .get(canaryd::k8s::router::NGINX_CANARY_WEIGHT)
                    .cloned()
                    .unwrap_or_default(),
            };
            weight.store(value.parse().unwrap_or(0), Ordering::Relaxed);
            Some(value)
        }
    });
    scene.set_image(V2, None).await;
    wait_settled_on(&scene, &daemon, V2).await;
    // The routing objects go in the same pass as canary and baseline; wait for
    // the sampler to see that rather than racing its polling.
    wait_until(SHORT, "canary Ingress removed after promotion", || async {
        match seen.lock().unwrap().last().map(String::as_str) {
            Some("absent") => Ok(()),
            other => Err(format!("last sample {other:?}")),
        }
    })
    .await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first().map(String::as_str), Some("absent"), "{seen:?}");
    let weights: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "absent")
        .collect();
    // The final 0 lasts only until the canary Ingress is deleted; a 100 ms
    // sampler may or may not see it.
    let expected = [vec!["0", "10", "50"], vec!["0", "10", "50", "0"]];
    assert!(expected.contains(&weights), "{seen:?}");
    assert!(scene
        .ns
        .api::<Service>()
        .get_opt("web-canary")
        .await
        .unwrap()
        .is_none());
    scene.ns.cleanup().await;
}

/// Creates the HTTPRoute `web` (one backend, Service `web`); its Api.
async fn create_web_route(scene: &Scene) -> Api<DynamicObject> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(scene.client(), scene.name(), &httproute_resource());
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    }))
    .unwrap();
    routes.create(&PostParams::default(), &route).await.unwrap();
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_weights_follow_the_steps() {
    let weight = Arc::new(AtomicU32::new(0));
    let scene = Scene::weighted(weight.clone()).await;
    cluster::install_httproute_crd(&scene.client(), SHORT).await;
    scene.create_web(2).await;
    scene.ns.create_service("web", json!({"app": "web"})).await;
    let routes = create_web_route(&scene).await;
    let policies = scene.policies(&weighted_policy("{type: gateway-api, httpRoute: web}"));
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    let api = routes.clone();
    let (seen, task) = sampler(move || {
        let api = api.clone();
        let weight = weight.clone();
        async move {
            let r = api.get("web").await.ok()?;
            let refs = r.data["spec"]["rules"][0]["backendRefs"]
                .as_array()?
                .clone();
            let canary = refs
                .iter()
                .find(|b| b["name"] == "web-canary")
                .and_then(|b| b["weight"].as_u64())
                .unwrap_or(0);
            weight.store(canary as u32, Ordering::Relaxed);
            Some(
                refs.iter()
                    .map(|b| format!("{}={}", b["name"].as_str().unwrap_or("?"), b["weight"]))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }
    });
    scene.set_image(V2, None).await;
    wait_settled_on(&scene, &daemon, V2).await;
    // As with the Ingress: the route is restored in the same pass that
    // removes the arms; wait for the sampler to see it.
    wait_until(
        SHORT,
        "canary backendRef removed after promotion",
        || async {
            match seen.lock().unwrap().last().map(String::as_str) {
                Some("web=100") => Ok(()),
                other => Err(format!("last sample {other:?}")),
            }
        },
    )
    .await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    let mut seen = seen;
    // The final 0 lasts only until the canary backendRef is removed; a
    // 100 ms sampler may or may not see it.
    let zero = "web=100,web-canary=0";
    if let Some(last) = seen.iter().rposition(|s| s == zero).filter(|&i| i > 1) {
        seen.remove(last);
    }
    assert_eq!(
        seen,
        vec![
            "web=null",
            "web=100,web-canary=0",
            "web=90,web-canary=10",
            "web=50,web-canary=50",
            "web=100",
        ],
        "{seen:?}"
    );
    scene.ns.cleanup().await;
}

/// Posts a firing `WebDown` alert for service `web` to the daemon's webhook.
async fn fire_web_down(daemon: &Daemon, fingerprint: &str) {
    let alert = json!({"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "labels": {"alertname": "WebDown", "service": "web", "severity": "critical"},
        "fingerprint": fingerprint
    }]});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/alerts", daemon.url()))
        .bearer_auth(TOKEN)
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Blue-green policy with `{ns}` and `{prom}` to fill in.
const BLUE_GREEN_POLICY: &str = include_str!("../fixtures/daemon/blue-green.yaml");

fn selector_version(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| s.get("version"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_and_switches_back_on_alert() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    scene
        .ns
        .create_service("web", json!({"app": "web", "version": "v1"}))
        .await;
    let policies = scene.policies(BLUE_GREEN_POLICY);
    let mut daemon = scene.daemon(&policies, "solo");
    daemon.wait_ready().await;
    scene.wait_adopted(&daemon).await;
    scene.set_image(V2, Some("v2")).await;

    let services: Api<Service> = scene.ns.api();
    wait_until(ROLLOUT_TIMEOUT, "active Service switched to v2", || async {
        let svc = services.get("web").await.map_err(|e| e.to_string())?;
        let v = selector_version(&svc);
        if v == "v2" {
            Ok(())
        } else {
            let d = scene.web().await;
            Err(format!(
                "selector {v}, phase {:?}, last verdict {:?}; log:\n{}",
                state_of(&d).phase,
                state_of(&d).last_verdict().map(|v| v.reason.clone()),
                tail(&daemon.log_text(), 10)
            ))
        }
    })
    .await;
    let canary = scene.deployments().get("web-canary").await.unwrap();
    assert_eq!(
        canary.spec.as_ref().unwrap().replicas,
        Some(2),
        "full size beside the old"
    );
    assert_eq!(
        image(&scene.web().await),
        V2,
        "template kept during keepOldFor"
    );
    assert!(target::is_paused(&scene.web().await));

    fire_web_down(&daemon, "f-webdown").await;
    let sent = Instant::now();
    wait_until(SHORT, "switched back to v1", || async {
        let svc = services.get("web").await.map_err(|e| e.to_string())?;
        let v = selector_version(&svc);
        if v == "v1" {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await;
    let reaction = sent.elapsed();
    let d = scene
        .wait_phase(&daemon, "rolled back", |p| *p == Phase::RolledBack)
        .await;
    assert_eq!(image(&d), V1);
    assert!(scene
        .deployments()
        .get_opt("web-canary")
        .await
        .unwrap()
        .is_none());
    let events = scene.events().await;
    for want in [
        "SwitchedTraffic",
        "AlertRollback",
        "SwitchedBack",
        "RolledBack",
    ] {
        assert_eq!(count(&events, want), 1, "{want} in {:?}", reasons(&events));
    }
    assert!(note(&events, "AlertRollback").contains("WebDown"));
    eprintln!("figure: alert webhook to Service switched back: {reaction:?}");
    scene.ns.cleanup().await;
}

pub(crate) const SLOW_STEP_POLICY: &str = r#"
service: web
namespace: {ns}
deployment: web
progressDeadline: 60s
baseline: fresh
traffic: {type: replicas}
strategy:
  canary:
    steps:
      - size: 1
        observe: 10s
      - size: 2
        observe: 30s
analysis:
  prometheus:
    url: {prom}
  interval: 5s
  maxDuration: 5m
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_at_step_2_after_sigkill() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(SLOW_STEP_POLICY);
    let mut first = scene.daemon(&policies, "canaryd-0");
    scene.wait_adopted(&first).await;
    scene.set_image(V2, None).await;
    scene
        .wait_phase(&first, "step 2", |p| *p == Phase::Progressing { step: 1 })
        .await;
    // Step 2's actions (canary, then baseline, to 2 pods) are all carried out
    // before the kill, so the restart must change neither object.
    let mut scaled = Vec::new();
    for name in ["web-canary", "web-baseline"] {
        let d = wait_until(SHORT, name, || async {
            let d = scene
                .deployments()
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            if d.spec.as_ref().and_then(|s| s.replicas) == Some(2) {
                Ok(d)
            } else {
                Err("not scaled to 2 yet".into())
            }
        })
        .await;
        scaled.push(d);
    }
    let (canary, baseline) = (scaled[0].clone(), scaled[1].clone());
    let before = scene.events().await;
    first.kill();

    let second = scene.daemon(&policies, "canaryd-0");
    // It decides again: a new verdict within step 2 proves it resumed there.
    let verdicts = state_of(&scene.web().await).verdicts.len();
    let d = wait_until(ROLLOUT_TIMEOUT, "a new verdict in step 2", || async {
        let d = scene.web().await;
        let s = state_of(&d);
        if s.verdicts.len() > verdicts || !s.phase.is_analysing() {
            Ok(d)
        } else {
            Err(format!(
                "{:?}; log:\n{}",
                s.phase,
                tail(&second.log_text(), 10)
            ))
        }
    })
    .await;
    let s = state_of(&d);
    assert_eq!(s.phase, Phase::Progressing { step: 1 }, "resumed at step 2");
    assert_eq!(s.last_verdict().map(|v| v.step), Some(1));
    for (old, name) in [(&canary, "web-canary"), (&baseline, "web-baseline")] {
        let now = scene.deployments().get(name).await.unwrap();
        assert_eq!(now.metadata.uid, old.metadata.uid, "{name} not recreated");
        assert_eq!(
            now.metadata.generation, old.metadata.generation,
            "{name} not rescaled"
        );
    }
    wait_settled_on(&scene, &second, V2).await;
    let after = scene.events().await;
    for once in [
        "CanaryStarted",
        "AnalysisStarted",
        "StepAdvanced",
        "AnalysisPassed",
        "Promoted",
    ] {
        assert_eq!(
            count(&after, once),
            1,
            "{once} once in {:?}",
            reasons(&after)
        );
    }
    assert!(after.len() > before.len());
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(CANARY_POLICY);
    let mut a = scene.daemon(&policies, "instance-a");
    let mut b = scene.daemon(&policies, "instance-b");
    a.wait_ready().await;
    b.wait_ready().await;
    let leases: Api<Lease> = scene.ns.api();
    let holder = || async {
        leases
            .get("canaryd")
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let leader = holder().await;
    assert!(
        leader == "instance-a" || leader == "instance-b",
        "{leader:?}"
    );
    scene.wait_adopted(&a).await;
    scene.set_image(V2, None).await;
    scene
        .wait_phase(&a, "analysis under the first leader", |p| p.is_analysing())
        .await;
    let events = scene.events().await;
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(
            e.reporting_instance.as_deref(),
            Some(leader.as_str()),
            "{:?}",
            e.reason
        );
    }

    // The leader stops on SIGTERM and releases the Lease; the other takes over.
    let (stopping, staying) = if leader == "instance-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(stopping.terminate().code(), Some(0));
    let released = Instant::now();
    let next = staying.identity.clone();
    wait_until(SHORT, "the other instance to take over", || async {
        let h = holder().await;
        if h == next {
            Ok(())
        } else {
            Err(h)
        }
    })
    .await;
    let takeover = released.elapsed();
    wait_settled_on(&scene, staying, V2).await;
    let events = scene.events().await;
    assert!(events
        .iter()
        .any(|e| e.reporting_instance.as_deref() == Some(next.as_str())));
    eprintln!("figure: Lease released on SIGTERM to taken over: {takeover:?}");
    scene.ns.cleanup().await;
}

// ---- RBAC ---------------------------------------------------------------------

/// deploy/rbac.yaml with its namespace and cluster-wide names made unique to `ns`.
fn rbac_documents(ns: &str) -> Vec<Value> {
    let text = std::fs::read_to_string("deploy/rbac.yaml").unwrap();
    text.split("\n---\n")
        .map(|doc| {
            let mut v: Value = serde_saphyr::from_str(doc).unwrap();
            if v["metadata"]["namespace"].is_string() {
                v["metadata"]["namespace"] = json!(ns);
            }
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            if kind == "ClusterRole" || kind == "ClusterRoleBinding" {
                v["metadata"]["name"] = json!(format!("canaryd-{ns}"));
            }
            if kind == "ClusterRoleBinding" {
                v["roleRef"]["name"] = json!(format!("canaryd-{ns}"));
            }
            for s in v["subjects"].as_array_mut().into_iter().flatten() {
                s["namespace"] = json!(ns);
            }
            v
        })
        .collect()
}

async fn apply_rbac(client: &Client, ns: &str) {
    for doc in rbac_documents(ns) {
        let c = client.clone();
        match doc["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => create(Api::<ServiceAccount>::namespaced(c, ns), doc).await,
            "ClusterRole" => create(Api::<ClusterRole>::all(c), doc).await,
            "ClusterRoleBinding" => create(Api::<ClusterRoleBinding>::all(c), doc).await,
            "Role" => create(Api::<Role>::namespaced(c, ns), doc).await,
            "RoleBinding" => create(Api::<RoleBinding>::namespaced(c, ns), doc).await,
            other => panic!("unexpected kind {other} in deploy/rbac.yaml"),
        }
    }
}

/// Creates `doc` as a `K` through `api`.
async fn create<K>(api: Api<K>, doc: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(doc).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

async fn delete_cluster_rbac(client: &Client, ns: &str) {
    let name = format!("canaryd-{ns}");
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

/// A kubeconfig for ServiceAccount `canaryd` in `ns`: the admin one's cluster
/// with a fresh bound token.
async fn service_account_kubeconfig(client: &Client, ns: &str, dir: &Path) -> PathBuf {
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request("canaryd", &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token")
        .token;
    let admin = std::fs::read_to_string(cluster::kubeconfig_path(cluster::KUBECONFIG_ENV)).unwrap();
    let mut config: Value = serde_saphyr::from_str(&admin).unwrap();
    config["users"] = json!([{"name": "canaryd-sa", "user": {"token": token}}]);
    let cluster_name = config["clusters"][0]["name"].clone();
    config["contexts"] =
        json!([{"name": "canaryd-sa", "context": {"cluster": cluster_name, "user": "canaryd-sa"}}]);
    config["current-context"] = json!("canaryd-sa");
    let path = dir.join("sa.kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

const ONE_STEP_POLICY: &str = r#"
service: web
namespace: {ns}
deployment: web
progressDeadline: 60s
baseline: fresh
strategy:
  canary:
    steps:
      - size: 1
        observe: 10s
analysis:
  prometheus:
    url: {prom}
  interval: 5s
  maxDuration: 5m
alerts:
  matchers: ['service="web"']
  guardWindow: 5s
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_the_least_privilege_of_deploy_rbac() {
    let scene = Scene::new().await;
    let admin = scene.client();
    apply_rbac(&admin, scene.name()).await;
    let kubeconfig = service_account_kubeconfig(&admin, scene.name(), scene.dir.path()).await;
    let sa = cluster::client_for(&kubeconfig).await;

    // That identity cannot read Secrets (the authorizer may lag a moment).
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), scene.name());
    wait_until(SHORT, "RBAC in effect for the ServiceAccount", || async {
        Api::<Deployment>::namespaced(sa.clone(), scene.name())
            .list(&ListParams::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!(
            "listing Secrets as canaryd: {:?}",
            other.map(|l| l.items.len())
        ),
    }
    match secrets.get("anything").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!(
            "getting a Secret as canaryd: {:?}",
            other.map(|s| s.name_any())
        ),
    }

    scene.create_web(2).await;
    let policies = scene.policies(ONE_STEP_POLICY);

    // A Lease the identity may not use ends the process (nothing acts).
    let mut outside = Daemon::start(&DaemonOptions {
        policies: &policies,
        kubeconfig: kubeconfig.clone(),
        lease_namespace: "default",
        lease_name: None,
        identity: "rbac-outside",
        token_file: None,
        json_log: true,
        log_dir: scene.dir.path(),
    });
    let mut child = outside.child.take().expect("running");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < SHORT,
            "canaryd did not exit on a forbidden Lease:\n{}",
            outside.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(2), "{}", outside.log_text());
    assert!(
        outside.log_text().contains("forbidden"),
        "{}",
        outside.log_text()
    );
    assert!(!target::is_paused(&scene.web().await), "it never acted");

    let daemon = Daemon::start(&DaemonOptions {
        policies: &policies,
        kubeconfig,
        lease_namespace: scene.name(),
        lease_name: None,
        identity: "rbac",
        token_file: None,
        json_log: true,
        log_dir: scene.dir.path(),
    });
    scene.wait_adopted(&daemon).await;
    scene.set_image(V2, None).await;
    wait_settled_on(&scene, &daemon, V2).await;
    let events = scene.events().await;
    assert_eq!(count(&events, "Promoted"), 1, "{:?}", reasons(&events));
    let log = daemon.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "no Forbidden errors:\n{log}"
    );
    delete_cluster_rbac(&admin, scene.name()).await;
    scene.ns.cleanup().await;
}

// ---- faults: fresh evidence, bounded failures, kill -9 ---------------------------

/// Three steps of 10 s at 5 s windows; `{deadline}` and `{max}` to fill in.
const FAULT_POLICY: &str = r#"
service: web
namespace: {ns}
deployment: web
progressDeadline: {deadline}
baseline: fresh
traffic: {traffic}
strategy:
  canary:
    steps:
      - size: 1
        {weight}observe: 10s
      - size: 2
        observe: 10s
analysis:
  prometheus:
    url: {prom}
  interval: 5s
  maxDuration: {max}
alerts:
  matchers: ['service="web"']
  guardWindow: 5s
"#;

fn fault_policy(deadline: &str, max: &str, traffic: &str, weight: Option<u8>) -> String {
    FAULT_POLICY
        .replace("{deadline}", deadline)
        .replace("{max}", max)
        .replace("{traffic}", traffic)
        .replace(
            "{weight}",
            &weight.map_or(String::new(), |w| format!("weight: {w}\n        ")),
        )
}

/// Step-transition Events seen so far.
async fn advanced(scene: &Scene) -> usize {
    let events = scene.events().await;
    count(&events, "StepAdvanced") + count(&events, "AnalysisPassed")
}

/// Waits for the first Event of `reason`.
async fn wait_event(scene: &Scene, daemon: &Daemon, reason: &str, within: Duration) -> Event {
    wait_until(within, &format!("a {reason} Event"), || async {
        let events = scene.events().await;
        match events.iter().find(|e| e.reason.as_deref() == Some(reason)) {
            Some(e) => Ok(e.clone()),
            None => Err(format!(
                "events {:?}; log:\n{}",
                reasons(&events),
                daemon.tail()
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_holds_the_step_then_the_rollout_resumes() {
    let mut scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(&fault_policy("60s", "5m", "{type: replicas}", None));
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    scene.set_image(V2, None).await;
    scene
        .wait_phase(&daemon, "analysing step 2", |p| {
            *p == Phase::Progressing { step: 1 }
        })
        .await;
    // A fresh canary's first window may already have held (its pod not yet
    // scraped): count only the holds from the outage on.
    let earlier = count(&scene.events().await, "NoData");
    scene.prom.kill();
    let held = wait_until(SHORT, "a NoData Event for the outage", || async {
        let events = scene.events().await;
        let holds: Vec<&Event> = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("NoData"))
            .collect();
        match holds.get(earlier) {
            Some(e) => Ok((*e).clone()),
            None => Err(format!(
                "events {:?}; log:\n{}",
                reasons(&events),
                daemon.tail()
            )),
        }
    })
    .await;
    let before = advanced(&scene).await;
    // Longer than the step's observe time, twice over: still in the same step.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let d = scene.web().await;
    assert!(
        state_of(&d).phase.is_analysing(),
        "{:?}",
        state_of(&d).phase
    );
    assert_eq!(
        advanced(&scene).await,
        before,
        "no step left while Prometheus is down"
    );
    let events = scene.events().await;
    assert_eq!(
        count(&events, "NoData"),
        earlier + 1,
        "one hold Event for the outage: {:?}",
        reasons(&events)
    );
    assert!(
        held.note
            .as_deref()
            .unwrap_or_default()
            .contains("metric source failed"),
        "{:?}",
        held.note
    );
    scene.prom.restart();
    wait_settled_on(&scene, &daemon, V2).await;
    let events = scene.events().await;
    assert!(count(&events, "HoldEnded") >= 1, "{:?}", reasons(&events));
    assert_eq!(count(&events, "Promoted"), 1, "{:?}", reasons(&events));
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_past_max_duration_is_a_no_data_rollback() {
    let mut scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(&fault_policy("60s", "25s", "{type: replicas}", None));
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    scene.prom.kill();
    scene.set_image(V2, None).await;
    let d = scene
        .wait_phase(&daemon, "rolled back", |p| *p == Phase::RolledBack)
        .await;
    assert_eq!(image(&d), V1);
    let events = scene.events().await;
    assert_eq!(
        count(&events, "NoDataRollback"),
        1,
        "{:?}",
        reasons(&events)
    );
    assert_eq!(advanced(&scene).await, 0, "{:?}", reasons(&events));
    assert!(note(&events, "NoDataRollback").contains("maxDuration 25s"));
    scene.ns.cleanup().await;
}

/// A Prometheus that answers 200 with garbage, cycling through invalid JSON,
/// NaN samples and series without the canary/baseline split.
async fn garbage_prometheus() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let n = Arc::new(AtomicU32::new(0));
    let app = axum::Router::new().fallback(move || {
        let n = n.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match n.fetch_add(1, Ordering::Relaxed) % 3 {
                0 => String::from("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[{"),
                1 => format!("{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{{\"metric\":{{}},\"value\":[{now},\"NaN\"]}}]}}}}"),
                _ => String::from("{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[]}}"),
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answering_garbage_never_passes_a_step() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let (url, server) = garbage_prometheus().await;
    let text = fault_policy("60s", "5m", "{type: replicas}", None).replace("{prom}", &url);
    let policies = scene.policies(&text);
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    scene.set_image(V2, None).await;
    wait_event(&scene, &daemon, "NoData", SHORT).await;
    // Both steps' observe time, twice over.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let s = state_of(&scene.web().await);
    assert_eq!(s.phase, Phase::Progressing { step: 0 }, "{:?}", s.phase);
    assert_eq!(advanced(&scene).await, 0);
    assert!(
        s.verdicts
            .iter()
            .all(|v| v.decision != canaryd::judge::Decision::Promote),
        "{:?}",
        s.verdicts
    );
    assert!(!s.verdicts.is_empty(), "windows were judged");
    server.abort();
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_pods_that_serve_nothing_hold_the_step() {
    // The new release's pods are never played: no requests, no series.
    let stable_only = Arc::new(|pod: &k8s_openapi::api::core::v1::Pod| {
        behaviour(pod).filter(|b| b.version == "v1")
    });
    let scene = Scene::with_behaviour(stable_only).await;
    scene.create_web(2).await;
    let policies = scene.policies(&fault_policy("60s", "5m", "{type: replicas}", None));
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    scene.set_image(V2, None).await;
    let held = wait_event(&scene, &daemon, "NoData", SHORT).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(
        state_of(&scene.web().await).phase,
        Phase::Progressing { step: 0 }
    );
    assert_eq!(advanced(&scene).await, 0);
    assert!(
        held.note.as_deref().unwrap_or_default().contains("canary"),
        "{:?}",
        held.note
    );
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_that_keeps_failing_backs_off_an_alert_still_rolls_back_then_failed() {
    let scene = Scene::new().await;
    cluster::install_httproute_crd(&scene.client(), SHORT).await;
    scene.create_web(2).await;
    scene.ns.create_service("web", json!({"app": "web"})).await;
    let routes = create_web_route(&scene).await;
    let text = fault_policy("20s", "5m", "{type: gateway-api, httpRoute: web}", Some(10));
    let policies = scene.policies(&text);
    let daemon = scene.daemon(&policies, "solo");
    scene.wait_adopted(&daemon).await;
    // The route goes away: every weight change (forward and back) fails.
    routes
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    scene.set_image(V2, None).await;
    let failed = wait_event(&scene, &daemon, "ActionFailed", SHORT).await;
    let message = failed.note.clone().unwrap_or_default();
    assert!(message.contains("SetWeight 0%"), "{message}");
    assert!(
        message.contains("not found"),
        "the API's message: {message}"
    );
    // Backoff: the failure record counts attempts.
    let pending = wait_until(SHORT, "a second attempt", || async {
        let d = scene.web().await;
        let text = target::annotation(&d, target::PENDING_ANNOTATION)
            .unwrap_or_default()
            .to_string();
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        match v["failure"]["attempts"].as_u64() {
            Some(n) if n >= 2 => Ok(v),
            other => Err(format!("attempts {other:?} in {text}")),
        }
    })
    .await;
    assert!(
        pending["failure"]["retryAt"].as_u64().is_some(),
        "{pending}"
    );
    let events = scene.events().await;
    assert_eq!(
        count(&events, "ActionFailed"),
        1,
        "news only: {:?}",
        reasons(&events)
    );
    fire_web_down(&daemon, "f-webdown-fault").await;
    wait_event(&scene, &daemon, "AlertRollback", SHORT).await;
    // The rollback cannot remove the canary's route weight either: Failed at
    // its progressDeadline, with the reason on the board.
    let d = scene
        .wait_phase(&daemon, "failed", |p| *p == Phase::Failed)
        .await;
    assert_eq!(image(&d), V1, "the template was restored");
    let events = scene.events().await;
    assert!(note(&events, "RollbackFailed").contains("cannot be carried out"));
    let board: Value = reqwest::get(format!("{}/v1/rollouts", daemon.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let web = &board["rollouts"][0];
    assert_eq!(web["phase"], "Failed", "{board}");
    assert!(
        web["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{board}"
    );
    scene.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_commit_and_actions_carries_each_out_once_on_restart() {
    let scene = Scene::new().await;
    scene.create_web(2).await;
    let policies = scene.policies(&fault_policy("60s", "5m", "{type: replicas}", None));
    let target_key = format!("{}/web", scene.name());
    let mut first = scene.daemon_with_env(
        &policies,
        "canaryd-0",
        &[("CANARYD_FAULT_ABORT_AFTER_COMMIT", target_key.as_str())],
    );
    scene.wait_adopted(&first).await;
    scene.set_image(V2, None).await;
    let started = Instant::now();
    let status = loop {
        if let Some(Ok(Some(status))) = first.child.as_mut().map(|c| c.try_wait()) {
            break status;
        }
        assert!(
            started.elapsed() < SHORT,
            "no abort; log:\n{}",
            first.tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status}");
    let d = scene.web().await;
    assert!(
        target::annotation(&d, target::PENDING_ANNOTATION).is_some(),
        "committed with actions pending"
    );
    assert_eq!(state_of(&d).phase, Phase::Initializing);
    assert!(scene
        .deployments()
        .get_opt("web-canary")
        .await
        .unwrap()
        .is_none());
    assert!(scene.events().await.is_empty(), "no action carried out");
    let second = scene.daemon(&policies, "canaryd-0");
    wait_settled_on(&scene, &second, V2).await;
    let events = scene.events().await;
    for once in [
        "CanaryStarted",
        "AnalysisStarted",
        "AnalysisPassed",
        "Promoted",
    ] {
        assert_eq!(
            count(&events, once),
            1,
            "{once} once in {:?}",
            reasons(&events)
        );
    }
    assert!(target::annotation(&scene.web().await, target::PENDING_ANNOTATION).is_none());
    scene.ns.cleanup().await;
}
