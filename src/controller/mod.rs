//! The daemon core: watches managed Deployments and runs one small reconcile
//! per change or due time: observe → decide (the pure engine) → act → record.
//!
//! - [`reconcile`]: the pass over one target (and the commit protocol).
//! - [`act`]: carries out the engine's actions through [`crate::target`] and
//!   [`crate::router`], and publishes Events.
//! - [`window`]: closes an observation window through the policy's metric source.
//! - [`record`]: the status board and canaryd's own metrics.
//! - [`schedule`]: when to look again and whether the target is paused (pure).

pub mod act;
pub mod reconcile;
pub mod record;
pub mod schedule;
pub mod window;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::lease::Leadership;
use crate::metrics::MetricSource;
use crate::policy::Policy;
use crate::server::ServerState;
use crate::target::ROLE_LABEL;
use crate::{Error, Result};

/// Pause before retrying a reconcile that failed.
pub const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Name canaryd reports Events under.
pub const REPORTER: &str = "canaryd";

/// `(namespace, deployment)` of a managed Deployment.
pub type TargetKey = (String, String);

/// Everything a reconcile needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Policies by target.
    pub policies: BTreeMap<TargetKey, Arc<Policy>>,
    /// Metric sources by target.
    pub sources: BTreeMap<TargetKey, Arc<dyn MetricSource>>,
    /// State shared with the HTTP server (alerts, board, metrics).
    pub server: Arc<ServerState>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Whether this instance leads.
    pub leader: watch::Receiver<Leadership>,
    /// Last phase per service, for the `canaryd_rollouts` gauge.
    phases: Mutex<BTreeMap<String, &'static str>>,
    /// Last reconcile error per service, for logs and the board.
    errors: Mutex<BTreeMap<String, String>>,
}

impl Context {
    /// A context for `policies`, reading metrics from `sources`.
    pub fn new(
        client: Client,
        policies: Vec<Policy>,
        sources: BTreeMap<TargetKey, Arc<dyn MetricSource>>,
        server: Arc<ServerState>,
        leader: watch::Receiver<Leadership>,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_string(),
            instance: Some(identity.to_string()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            policies: policies
                .into_iter()
                .map(|p| ((p.namespace.clone(), p.deployment.clone()), Arc::new(p)))
                .collect(),
            sources,
            server,
            leader,
            phases: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether this instance holds the Lease right now.
    pub fn is_leader(&self) -> bool {
        self.leader.borrow().unwrap_or(false)
    }

    /// Fails when leadership was lost, so a pass stops before its next write.
    pub fn ensure_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::Lease {
                name: String::from("(this instance)"),
                message: String::from("not the leader; not acting"),
            })
        }
    }

    /// The policy managing `d`, if any.
    pub fn policy_for(&self, d: &Deployment) -> Option<Arc<Policy>> {
        let key = (d.namespace().unwrap_or_default(), d.name_any());
        self.policies.get(&key).cloned()
    }

    /// Names of firing alerts that match the policy.
    pub fn alerts_for(&self, policy: &Policy) -> Vec<String> {
        if policy.alerts.matchers.is_empty() {
            return Vec::new();
        }
        match self.server.alerts.lock() {
            Ok(index) => index.matching(&policy.alerts),
            Err(poisoned) => poisoned.into_inner().matching(&policy.alerts),
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The Deployments API to watch: one namespace when every policy is in it,
/// else the whole cluster.
fn watched(ctx: &Context) -> Api<Deployment> {
    let mut namespaces = ctx.policies.keys().map(|(ns, _)| ns.clone());
    let first = namespaces.next();
    match first {
        Some(ns) if namespaces.all(|other| other == ns) => Api::namespaced(ctx.client.clone(), &ns),
        _ => Api::all(ctx.client.clone()),
    }
}

/// A stream that yields whenever `notify` fires.
fn notifications(server: Arc<ServerState>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(server, |s| async move {
        s.alerts_changed.notified().await;
        Some(((), s))
    })
}

/// A stream that yields each time this instance becomes the leader.
fn leadership_gained(rx: watch::Receiver<Leadership>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold((rx, false), |(mut rx, mut was)| async move {
        loop {
            rx.changed().await.ok()?;
            let now = rx.borrow_and_update().unwrap_or(false);
            let gained = now && !was;
            was = now;
            if gained {
                return Some(((), (rx, was)));
            }
        }
    })
}

/// Runs the controller until `shutdown` completes, then lets running
/// reconciles finish.
pub async fn run<F>(ctx: Arc<Context>, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let api = watched(&ctx);
    let arms = watcher::Config::default().labels(ROLE_LABEL);
    // Re-examine every target when leadership is gained or alerts change.
    let triggers = futures::stream::select(
        leadership_gained(ctx.leader.clone()),
        notifications(ctx.server.clone()),
    );
    Controller::new(api.clone(), watcher::Config::default())
        .owns(api, arms)
        .reconcile_all_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(object = %obj.name, "Reconciled."),
                Err(kube::runtime::controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::warn!(object = %obj.name, error = %e, "Reconcile failed.")
                }
                Err(e) => tracing::warn!(error = %e, "Controller error."),
            }
        })
        .await;
}
