//! Plays the pods of a namespace for demos and tests.
//!
//! KWOK pods run no containers, so the metrics canaryd judges come from here:
//! a [`PodPlayer`] watches pods and, for every Ready pod its behaviour
//! function accepts, serves an in-process demo-app (on a loopback port)
//! labelled with that pod's name, version and role, sends it steady load, and
//! lists it in a Prometheus file_sd file; pods that go away stop being served
//! and listed. `canaryd demo-pods` and the integration tests both use it.
//!
//! Load is either equal per pod (traffic follows pod counts, as behind one
//! Service) or weighted like a router: `weight`% of the total to the canary
//! pods, the rest spread over the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use crate::demo::{self, AppConfig};

/// Pause of a pod's load loop while its rate is zero.
const IDLE_POLL: Duration = Duration::from_millis(100);

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

/// The tag of an image reference (`registry/app:v2` → `v2`), or `latest`.
pub fn image_tag(image: &str) -> &str {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split('@').next().unwrap_or(name);
    match name.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
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
    sd_file: PathBuf,
    traffic: Arc<Traffic>,
    played: BTreeMap<PodKey, Played>,
}

/// Serves a demo-app per accepted Ready pod until dropped.
pub struct PodPlayer {
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

/// Replaces `path` in one step, so Prometheus never reads half a file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
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
        let api: Api<Pod> = Api::namespaced(client, namespace);
        Self::watch(api, "", sd_file, rps, None, behaviour)
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
        let api: Api<Pod> = Api::namespaced(client, namespace);
        Self::watch(api, "", sd_file, total_rps, Some(weight), behaviour)
    }

    /// Watches the pods `api` and `selector` (a label selector, may be empty)
    /// cover and plays those `behaviour` accepts, listing them in `sd_file`.
    /// Without `weight` each pod gets `rps` requests per second; with it,
    /// `rps` is the total, `weight`% of it to the canary pods.
    pub fn watch(
        api: Api<Pod>,
        selector: &str,
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
            sd_file: sd_file.to_path_buf(),
            traffic,
            played: BTreeMap::new(),
        }));
        let mut config = watcher::Config::default();
        if !selector.is_empty() {
            config = config.labels(selector);
        }
        let (reader, writer) = reflector::store();
        let stream = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let state = inner.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "Pod watch error; retrying.");
                    continue;
                }
                sync(&state, &reader.state(), behaviour.as_ref()).await;
            }
        });
        PodPlayer { inner, task }
    }

    /// Names of the pods being played.
    pub fn pods(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| i.played.keys().map(|(_, name)| name.clone()).collect())
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

/// `(namespace, name)` of a pod.
type PodKey = (String, String);

async fn sync(state: &Arc<Mutex<Inner>>, pods: &[Arc<Pod>], behaviour: &BehaviourFn) {
    let wanted: BTreeMap<PodKey, Behaviour> = pods
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| {
            behaviour(p).map(|b| ((p.namespace().unwrap_or_default(), p.name_any()), b))
        })
        .collect();
    let (to_start, traffic) = {
        let Ok(mut inner) = state.lock() else { return };
        inner
            .played
            .retain(|key, played| wanted.get(key) == Some(&played.behaviour));
        let missing: Vec<(PodKey, Behaviour)> = wanted
            .iter()
            .filter(|(key, _)| !inner.played.contains_key(*key))
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect();
        (missing, inner.traffic.clone())
    };
    let canaries = wanted
        .keys()
        .filter(|(_, name)| role_of(name) == "canary")
        .count();
    traffic.canary_pods.store(canaries, Ordering::Relaxed);
    traffic
        .other_pods
        .store(wanted.len() - canaries, Ordering::Relaxed);
    let mut started = Vec::new();
    for (key, b) in to_start {
        match play(&key.1, &b, traffic.clone()).await {
            Ok(played) => started.push((key, played)),
            Err(e) => tracing::warn!(pod = %key.1, error = %e, "Cannot play pod."),
        }
    }
    let Ok(mut inner) = state.lock() else { return };
    for (key, played) in started {
        tracing::info!(
            namespace = %key.0,
            pod = %key.1,
            version = %played.behaviour.version,
            error_rate = played.behaviour.error_rate,
            addr = %played.addr,
            "Playing pod."
        );
        inner.played.insert(key, played);
    }
    let groups: Vec<serde_json::Value> = inner
        .played
        .iter()
        .map(|((namespace, pod), p)| {
            serde_json::json!({
                "targets": [p.addr.to_string()],
                "labels": {"namespace": namespace, "pod": pod},
            })
        })
        .collect();
    // The owner may be tearing down (its directory gone); nothing to list then.
    if let Err(e) = write_atomically(
        &inner.sd_file,
        &serde_json::Value::Array(groups).to_string(),
    ) {
        tracing::debug!(file = %inner.sd_file.display(), error = %e, "Cannot write file_sd.");
    }
}

async fn play(pod: &str, b: &Behaviour, traffic: Arc<Traffic>) -> std::io::Result<Played> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
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
    let name = pod.to_string();
    tokio::spawn(async move {
        let served = demo::serve_app(listener, config, async {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = served {
            tracing::warn!(pod = %name, error = %e, "Demo app failed.");
        }
    });
    let url = format!("http://{addr}/");
    let role = role_of(pod);
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            // The rate is read per request: weights and pod counts change.
            let rate = traffic.rate(role);
            if rate <= 0.0 {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
            let _ = client.get(&url).send().await;
        }
    });
    Ok(Played {
        addr,
        behaviour: b.clone(),
        _stop: stop,
        load,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_roles_are_read_from_names() {
        assert_eq!(image_tag("myapp:v2"), "v2");
        assert_eq!(image_tag("registry.local:5000/team/myapp:v3"), "v3");
        assert_eq!(image_tag("registry.local:5000/myapp"), "latest");
        assert_eq!(image_tag("myapp:v1@sha256:abc"), "v1");
        assert_eq!(role_of("myapp-deploy-canary-5f7d9-abcde"), "canary");
        assert_eq!(role_of("myapp-deploy-baseline-5f7d9-abcde"), "baseline");
        assert_eq!(role_of("myapp-deploy-5f7d9-abcde"), "stable");
    }

    #[test]
    fn weighted_traffic_splits_by_role_and_pod_count() {
        let traffic = Traffic {
            rps: 100.0,
            weight: Some(Arc::new(AtomicU32::new(10))),
            canary_pods: AtomicUsize::new(1),
            other_pods: AtomicUsize::new(3),
        };
        assert!((traffic.rate("canary") - 10.0).abs() < 1e-9);
        assert!((traffic.rate("stable") - 30.0).abs() < 1e-9);
        traffic.canary_pods.store(0, Ordering::Relaxed);
        assert_eq!(traffic.rate("canary"), 0.0);
    }
}
