//! Test support: plays the pods of a namespace.
//!
//! Include it (with `cluster.rs` and `prom.rs`) from a test file with
//!
//! ```ignore
//! #[path = "support/pods.rs"]
//! mod pods;
//! ```
//!
//! KWOK pods run no containers, so metrics for canary-vs-baseline analysis
//! come from here: [`PodPlayer`] watches the pods of a namespace and, for
//! every Ready pod the test's `behaviour` function accepts, serves a demo-app
//! (in-process, on a loopback port) labelled with that pod's name, sends it
//! steady load, and lists it in a Prometheus file_sd file; pods that go away
//! stop being served and listed. [`start_prometheus`] starts a real Prometheus
//! (the `prom.rs` harness) that scrapes whatever that file lists.
//!
//! Load is either equal per pod (traffic follows pod counts, as behind one
//! Service) or weighted like a router: `weight`% of the total to the canary
//! pods, the rest spread over the others.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canaryd::demo::{self, AppConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use super::prom::Prom;

/// How a played pod answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// `version` label of its metrics.
    pub version: String,
    /// Share of requests answered with HTTP 500.
    pub error_rate: f64,
    /// Median latency in milliseconds (recorded, not slept).
    pub latency_ms: u64,
}

/// Decides whether and how a pod is played.
pub type BehaviourFn = dyn Fn(&Pod) -> Option<Behaviour> + Send + Sync;

/// Role of a pod by its name, as canaryd's pod regexes see it.
pub fn role_of(pod: &str) -> &'static str {
    if pod.contains("-canary-") {
        "canary"
    } else if pod.contains("-baseline-") {
        "baseline"
    } else {
        "stable"
    }
}

/// The first container's image of a pod.
pub fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

struct Played {
    addr: SocketAddr,
    behaviour: Behaviour,
    _stop: tokio::sync::oneshot::Sender<()>,
    load: tokio::task::JoinHandle<()>,
}

impl Drop for Played {
    fn drop(&mut self) {
        self.load.abort();
    }
}

/// How load is spread over the played pods.
struct Traffic {
    /// Requests per second per pod (equal mode) or in total (weighted mode).
    rps: f64,
    /// Percent of the total sent to canary pods; `None`: equal per pod.
    weight: Option<Arc<AtomicU32>>,
    canary_pods: AtomicUsize,
    other_pods: AtomicUsize,
}

impl Traffic {
    /// Current requests per second for one pod of `role`.
    fn rate(&self, role: &str) -> f64 {
        let Some(weight) = &self.weight else {
            return self.rps;
        };
        let w = f64::from(weight.load(Ordering::Relaxed).min(100)) / 100.0;
        let (share, pods) = if role == "canary" {
            (w, self.canary_pods.load(Ordering::Relaxed))
        } else {
            (1.0 - w, self.other_pods.load(Ordering::Relaxed))
        };
        if pods == 0 {
            0.0
        } else {
            self.rps * share / pods as f64
        }
    }
}

struct Inner {
    namespace: String,
    sd_file: PathBuf,
    traffic: Arc<Traffic>,
    played: BTreeMap<String, Played>,
}

/// Serves a demo-app per accepted Ready pod until dropped.
pub struct PodPlayer {
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts Prometheus scraping the targets listed in `sd_file` (file_sd, 1 s
/// refresh). `sd_file` is created empty if missing.
pub fn start_prometheus(sd_file: &Path) -> Prom {
    if !sd_file.exists() {
        write_atomically(sd_file, "[]");
    }
    // The harness writes a static config; replace it with a file_sd one and
    // restart on the same port and (still empty) storage.
    let mut prom = Prom::start(&[]);
    let config = prom
        .storage()
        .parent()
        .map(|d| d.join("prometheus.yml"))
        .unwrap_or_else(|| panic!("prometheus storage has no parent"));
    let text = serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "pods",
            "honor_labels": true,
            "file_sd_configs": [{"files": [sd_file.display().to_string()], "refresh_interval": "1s"}],
        }],
    });
    std::fs::write(&config, text.to_string()).unwrap_or_else(|e| panic!("writing config: {e}"));
    prom.restart();
    prom
}

/// Replaces `path` in one step, so Prometheus never reads half a file.
fn try_write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn write_atomically(path: &Path, text: &str) {
    try_write_atomically(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl PodPlayer {
    /// Watches pods in `namespace` and plays those `behaviour` accepts, each
    /// with `rps` requests per second, listing them in `sd_file`.
    pub fn start(
        client: Client,
        namespace: &str,
        sd_file: &Path,
        rps: f64,
        behaviour: Arc<BehaviourFn>,
    ) -> PodPlayer {
        Self::start_with(client, namespace, sd_file, rps, None, behaviour)
    }

    /// Like [`PodPlayer::start`], but `total_rps` is spread like a weighted
    /// router: `weight`% to the canary pods, the rest over the others.
    pub fn start_weighted(
        client: Client,
        namespace: &str,
        sd_file: &Path,
        total_rps: f64,
        weight: Arc<AtomicU32>,
        behaviour: Arc<BehaviourFn>,
    ) -> PodPlayer {
        Self::start_with(
            client,
            namespace,
            sd_file,
            total_rps,
            Some(weight),
            behaviour,
        )
    }

    fn start_with(
        client: Client,
        namespace: &str,
        sd_file: &Path,
        rps: f64,
        weight: Option<Arc<AtomicU32>>,
        behaviour: Arc<BehaviourFn>,
    ) -> PodPlayer {
        let traffic = Arc::new(Traffic {
            rps,
            weight,
            canary_pods: AtomicUsize::new(0),
            other_pods: AtomicUsize::new(0),
        });
        let inner = Arc::new(Mutex::new(Inner {
            namespace: namespace.to_string(),
            sd_file: sd_file.to_path_buf(),
            traffic,
            played: BTreeMap::new(),
        }));
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let (reader, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let state = inner.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {
                let pods = reader.state();
                sync(&state, &pods, behaviour.as_ref()).await;
            }
        });
        PodPlayer { inner, task }
    }

    /// Names of the pods being played.
    pub fn pods(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| i.played.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for PodPlayer {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut inner) = self.inner.lock() {
            inner.played.clear();
        }
    }
}

async fn sync(state: &Arc<Mutex<Inner>>, pods: &[Arc<Pod>], behaviour: &BehaviourFn) {
    let wanted: BTreeMap<String, Behaviour> = pods
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| behaviour(p).map(|b| (p.name_any(), b)))
        .collect();
    let (to_start, namespace, traffic) = {
        let Ok(mut inner) = state.lock() else { return };
        inner
            .played
            .retain(|name, played| wanted.get(name) == Some(&played.behaviour));
        let missing: Vec<(String, Behaviour)> = wanted
            .iter()
            .filter(|(name, _)| !inner.played.contains_key(*name))
            .map(|(n, b)| (n.clone(), b.clone()))
            .collect();
        (missing, inner.namespace.clone(), inner.traffic.clone())
    };
    let canaries = wanted.keys().filter(|n| role_of(n) == "canary").count();
    traffic.canary_pods.store(canaries, Ordering::Relaxed);
    traffic
        .other_pods
        .store(wanted.len() - canaries, Ordering::Relaxed);
    for (name, b) in to_start {
        let played = play(&name, &b, traffic.clone()).await;
        if let Ok(mut inner) = state.lock() {
            inner.played.insert(name, played);
        }
    }
    let Ok(inner) = state.lock() else { return };
    let groups: Vec<serde_json::Value> = inner
        .played
        .iter()
        .map(|(pod, p)| {
            serde_json::json!({
                "targets": [p.addr.to_string()],
                "labels": {"namespace": namespace, "pod": pod},
            })
        })
        .collect();
    // The test may be tearing down (its directory gone); nothing to list then.
    let _ = try_write_atomically(
        &inner.sd_file,
        &serde_json::Value::Array(groups).to_string(),
    );
}

async fn play(pod: &str, b: &Behaviour, traffic: Arc<Traffic>) -> Played {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let config = AppConfig {
        version: b.version.clone(),
        role: role_of(pod).to_string(),
        pod: pod.to_string(),
        error_rate: b.error_rate,
        latency_median: Duration::from_millis(b.latency_ms),
        latency_sigma: demo::DEFAULT_LATENCY_SIGMA,
        sleep: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(demo::serve_app(listener, config, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/");
    let role = role_of(pod);
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            // The rate is read per request: weights and pod counts change.
            let rate = traffic.rate(role);
            if rate <= 0.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
            let _ = client.get(&url).send().await;
        }
    });
    Played {
        addr,
        behaviour: b.clone(),
        _stop: stop,
        load,
    }
}
