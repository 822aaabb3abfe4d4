//! The daemon core: watches managed Deployments and runs one small reconcile
//! per change or due time: observe → decide (the pure engine) → act → record.
//!
//! - [`reconcile`]: the pass over one target (and the commit protocol).
//! - [`act`]: carries out the engine's actions through [`crate::k8s::target`] and
//!   [`crate::k8s::router`], and publishes Events.
//! - [`plan`]: what the commit writes and leaves pending (pure).
//! - [`window`]: closes an observation window through the policy's metric source.
//! - [`record`]: the status board and canaryd's own metrics.
//! - [`schedule`]: when to look again and whether the target is paused (pure).
//!
//! Policies are hot-reloaded: the context reads the current
//! [`PolicySet`] from a watch channel on every lookup, a policy change
//! re-examines every target, and the watch is restarted when the set of
//! namespaces the policies name no longer fits the one being watched. A
//! removed policy stops canaryd acting on its Deployment; objects in flight
//! are left as they are (see [`orphaned`]).

pub mod act;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod pending;
pub mod plan;
pub mod reconcile;
pub mod record;
pub mod schedule;
pub mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::{controller, reflector, watcher, Controller, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::{watch, Semaphore};

use crate::daemon::reload::PolicySet;
use crate::daemon::server::ServerState;
use crate::k8s::lease::Leadership;
use crate::k8s::target::{CANARYD_PREFIX, REVISION_ANNOTATION, ROLE_LABEL};
use crate::metrics::{MetricSource, PrometheusSource};
use crate::policy::{Policy, PrometheusConfig};
use crate::rollout::RolloutState;
use crate::{Error, Result};

/// Pause before retrying a reconcile that failed.
pub const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Reconciles that may run at once (`--max-concurrent-reconciles`): a wave
/// of releases is worked through this many Deployments at a time instead of
/// all at once (each reconcile makes several API requests), while a slow
/// Prometheus query on one target does not hold up the others.
pub const MAX_CONCURRENT_RECONCILES: u16 = 16;
/// Name canaryd reports Events under.
pub const REPORTER: &str = "canaryd";

/// `(namespace, deployment)` of a managed Deployment.
pub type TargetKey = (String, String);

/// A metric source per distinct Prometheus endpoint, or why it cannot be built.
type SourceCache = Vec<(PrometheusConfig, Result<Arc<dyn MetricSource>, String>)>;

/// Everything a reconcile needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The policies in force, following hot reloads.
    pub policies: watch::Receiver<Arc<PolicySet>>,
    /// Metric sources, built on first use per distinct Prometheus endpoint.
    sources: Mutex<SourceCache>,
    /// State shared with the HTTP server (alerts, board, metrics).
    pub server: Arc<ServerState>,
    /// This instance's identity, reported on its Events.
    pub identity: String,
    /// Whether this instance leads.
    pub leader: watch::Receiver<Leadership>,
    /// Last phase per service, for the `canaryd_rollouts` gauge.
    phases: Mutex<BTreeMap<String, &'static str>>,
    /// Last reconcile error per service, for logs and the board.
    errors: Mutex<BTreeMap<String, String>>,
}

fn build_source(config: &PrometheusConfig) -> Result<Arc<dyn MetricSource>, String> {
    PrometheusSource::new(config)
        .map(|s| Arc::new(s) as Arc<dyn MetricSource>)
        .map_err(|e| format!("analysis.prometheus {}: {e}", config.url))
}

impl Context {
    /// A context following `policies`; metric sources are built from them.
    pub fn new(
        client: Client,
        policies: watch::Receiver<Arc<PolicySet>>,
        server: Arc<ServerState>,
        leader: watch::Receiver<Leadership>,
        identity: &str,
    ) -> Self {
        Context {
            identity: identity.to_string(),
            client,
            policies,
            sources: Mutex::new(Vec::new()),
            server,
            leader,
            phases: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether this instance holds the Lease right now.
    pub fn is_leader(&self) -> bool {
        self.leader.borrow().is_leader()
    }

    /// Fails when leadership was lost, so a pass stops before its next write.
    pub fn ensure_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// The policy managing `d` now, if any.
    pub fn policy_for(&self, d: &Deployment) -> Option<Arc<Policy>> {
        let namespace = d.namespace().unwrap_or_default();
        self.policies
            .borrow()
            .get(&namespace, &d.name_any())
            .cloned()
    }

    /// The metric source for `policy`'s Prometheus, built on first use and
    /// shared by every policy naming the same endpoint.
    pub fn source_for(&self, policy: &Policy) -> Result<Arc<dyn MetricSource>, String> {
        let config = &policy.analysis.prometheus;
        let mut cache = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, source)) = cache.iter().find(|(c, _)| c == config) {
            return source.clone();
        }
        let source = build_source(config);
        cache.push((config.clone(), source.clone()));
        source
    }

    /// Drops the sources no policy in `set` uses any more.
    fn prune_sources(&self, set: &PolicySet) {
        let mut cache = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(c, _)| set.iter().any(|p| p.analysis.prometheus == *c));
    }

    /// Names of firing alerts that match the policy.
    pub fn alerts_for(&self, policy: &Policy) -> Vec<String> {
        if policy.alerts.matchers.is_empty() {
            return Vec::new();
        }
        match self.server.alerts.lock() {
            Ok(mut index) => index.matching(&policy.alerts, now_ms() as i64),
            Err(poisoned) => poisoned
                .into_inner()
                .matching(&policy.alerts, now_ms() as i64),
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

/// The namespaces the policies name: one watch each, so canaryd needs no
/// cluster-wide list/watch (the namespaced RBAC mode grants none).
fn scope(set: &PolicySet) -> BTreeSet<String> {
    set.iter().map(|p| p.namespace.clone()).collect()
}

/// A stream that yields whenever the policy set changes.
fn policy_changes(
    ctx: Arc<Context>,
    rx: watch::Receiver<Arc<PolicySet>>,
    namespace: String,
) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold((ctx, rx, namespace), |(ctx, mut rx, ns)| async move {
        rx.changed().await.ok()?;
        let set = rx.borrow_and_update().clone();
        ctx.prune_sources(&set);
        tracing::info!(
            policies = set.len(),
            namespace = %ns,
            "Policies changed; re-examining every target."
        );
        Some(((), (ctx, rx, ns)))
    })
}

/// Resolves once the policies need a different watch scope than `current`.
async fn rescoped(mut rx: watch::Receiver<Arc<PolicySet>>, current: BTreeSet<String>) {
    loop {
        if rx.changed().await.is_err() {
            // The store is gone: the set no longer changes.
            return std::future::pending().await;
        }
        if scope(&rx.borrow_and_update()) != current {
            return;
        }
    }
}

/// Handles policies that disappear: a target whose rollout is in flight is
/// left exactly as it is (canary, baseline, paused template), canaryd stops
/// acting on it and says so in a log line and a Warning Event. Restoring the
/// policy resumes the rollout from its state annotation.
async fn watch_removals<F>(ctx: Arc<Context>, shutdown: F)
where
    F: Future<Output = ()>,
{
    let mut rx = ctx.policies.clone();
    let mut before = rx.borrow_and_update().by_target();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = rx.borrow_and_update().by_target();
                for (key, policy) in &before {
                    if !now.contains_key(key) {
                        orphaned(&ctx, policy).await;
                    }
                }
                before = now;
            }
        }
    }
}

/// What canaryd does when `policy` was removed (see [`watch_removals`]).
pub async fn orphaned(ctx: &Context, policy: &Policy) {
    record::forget(ctx, policy);
    record::clear_error(ctx, policy);
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &policy.namespace);
    let d = match api.get_opt(&policy.deployment).await {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(service = %policy.service, error = %e, "Policy removed; cannot read its Deployment.");
            return;
        }
    };
    let state = crate::k8s::target::annotation(&d, crate::k8s::target::STATE_ANNOTATION)
        .and_then(|t| RolloutState::from_json(t).ok())
        .unwrap_or_default();
    if state.phase.is_resting() {
        release(ctx, policy, &d, &state).await;
        return;
    }
    let phase = state.phase.label(crate::rollout::step_count(policy));
    let message = format!(
        "policy for {}/{} was removed during {phase}; canaryd stopped acting and left the \
         Deployment, canary and baseline as they are (restore the policy to resume)",
        policy.namespace, policy.deployment
    );
    tracing::warn!(service = %policy.service, phase = %phase, "{message}");
    if ctx.is_leader() {
        act::publish(
            ctx,
            &d,
            crate::rollout::EventKind::Warning,
            crate::rollout::Reason::PolicyRemoved,
            &message,
        )
        .await;
    }
}

/// A removed policy with no rollout in flight: canaryd keeps an idle target
/// paused between releases, so unpause it (or the Deployment's own rolling
/// updates would never run again) and say so in a `Released` Event.
async fn release(ctx: &Context, policy: &Policy, d: &Deployment, state: &RolloutState) {
    if !ctx.is_leader() || !crate::k8s::target::is_paused(d) {
        tracing::info!(service = %policy.service, "Policy removed; no rollout in flight.");
        return;
    }
    let unpaused = crate::k8s::target::modify_target(
        &ctx.client,
        &policy.namespace,
        &policy.deployment,
        |d| Ok(crate::k8s::target::set_paused(d, false)),
    )
    .await;
    if let Err(e) = unpaused {
        tracing::warn!(service = %policy.service, error = %e, "Policy removed; could not unpause its Deployment.");
        return;
    }
    let desired = crate::k8s::target::desired_hash(d);
    let rolls = if state.stable_hash.as_deref().is_some_and(|s| s != desired) {
        format!("; its template {desired} now rolls out with the Deployment's own strategy, without canary analysis")
    } else {
        String::new()
    };
    let message = format!(
        "policy for {}/{} was removed; canaryd unpaused the Deployment (spec.paused: false) and no longer manages it{rolls}",
        policy.namespace, policy.deployment
    );
    tracing::info!(service = %policy.service, "{message}");
    let (kind, reason) = (
        crate::rollout::EventKind::Normal,
        crate::rollout::Reason::Released,
    );
    act::publish(ctx, d, kind, reason, &message).await;
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
            let now = rx.borrow_and_update().is_leader();
            let gained = now && !was;
            was = now;
            if gained {
                return Some(((), (rx, was)));
            }
        }
    })
}

/// Strips a watched Deployment down to what the controller's cache needs.
///
/// A reconcile uses the cached object only to name its target
/// ([`Context::policy_for`]) and re-reads the target with a GET
/// ([`crate::k8s::target::observe`]) before deciding anything, so what the
/// cache holds for each of thousands of Deployments is dropped where it is
/// large and never read from the cache: `metadata.managedFields`, other
/// tools' annotations (kubectl's last-applied-configuration alone repeats
/// the spec) and the status. Kept: identity and labels, canaryd's
/// annotations and the revision, and the spec (the pod-template hash is
/// computed from it), so a future reader of the cache finds what it needs.
pub fn strip_cached(d: &mut Deployment) {
    d.metadata.managed_fields = None;
    if let Some(annotations) = d.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(CANARYD_PREFIX) || key == REVISION_ANNOTATION);
    }
    d.status = None;
}

/// The watched targets as the controller sees them: each one stripped
/// ([`strip_cached`]) before `writer` caches it.
fn cached_targets<S>(
    events: S,
    writer: reflector::store::Writer<Deployment>,
) -> impl futures::Stream<Item = Result<Deployment, watcher::Error>> + Send
where
    S: futures::Stream<Item = Result<watcher::Event<Deployment>, watcher::Error>> + Send,
{
    events
        .modify(strip_cached)
        .reflect(writer)
        .applied_objects()
}

/// Runs the controller until `shutdown` completes, then lets running
/// reconciles finish; at most `concurrency` reconciles run at once, across
/// all the namespaces watched (one controller each). The watch is restarted
/// (running reconciles finish first) whenever a policy change needs another
/// namespace scope.
pub async fn run<F>(ctx: Arc<Context>, concurrency: u16, shutdown: F)
where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let shutdown = shutdown.shared();
    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    tokio::spawn(watch_removals(ctx.clone(), shutdown.clone()));
    loop {
        let mut rx = ctx.policies.clone();
        let current = scope(&rx.borrow_and_update());
        let names: Vec<&str> = current.iter().map(String::as_str).collect();
        tracing::info!(namespaces = %names.join(","), "Watching Deployments.");
        let stop = futures::future::select(
            shutdown.clone(),
            Box::pin(rescoped(rx.clone(), current.clone())),
        )
        .map(|_| ())
        .shared();
        let watches = current.iter().map(|ns| {
            run_scoped(
                ctx.clone(),
                ns,
                rx.clone(),
                (concurrency, permits.clone()),
                stop.clone(),
            )
        });
        // No policy, nothing to watch: wait for one (or for shutdown).
        futures::future::join(futures::future::join_all(watches), stop.clone()).await;
        if shutdown.clone().now_or_never().is_some() {
            return;
        }
    }
}

/// A reconcile that waits for one of the permits shared by every watched
/// namespace's controller.
async fn limited(
    permits: Arc<Semaphore>,
    obj: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action> {
    // Never closed; were it, running unbounded beats not running.
    let _permit = permits.acquire().await.ok();
    reconcile::reconcile(obj, ctx).await
}

async fn run_scoped<F>(
    ctx: Arc<Context>,
    namespace: &str,
    policies: watch::Receiver<Arc<PolicySet>>,
    (concurrency, permits): (u16, Arc<Semaphore>),
    stop: F,
) where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let (cache, writer) = reflector::store();
    let events = watcher(api.clone(), crate::k8s::client::watch_config());
    let arms = crate::k8s::client::watch_config().labels(ROLE_LABEL);
    // Re-examine every target when leadership is gained, alerts or policies change.
    let triggers = futures::stream::select(
        futures::stream::select(
            leadership_gained(ctx.leader.clone()),
            notifications(ctx.server.clone()),
        ),
        policy_changes(ctx.clone(), policies, namespace.to_string()),
    );
    Controller::for_stream(cached_targets(events, writer), cache)
        .owns(api, arms)
        // Also bounded per controller: none starts more than could run.
        .with_config(controller::Config::default().concurrency(concurrency))
        .reconcile_all_on(triggers)
        .graceful_shutdown_on(stop)
        .run(
            move |obj, ctx| limited(permits.clone(), obj, ctx),
            reconcile::error_policy,
            ctx,
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::target::{self, APPROVE_ANNOTATION, STATE_ANNOTATION};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

    /// The fixture target as the API server sends it: managed fields, and
    /// annotations of canaryd, the Deployment controller and kubectl.
    fn as_watched() -> Deployment {
        let mut d = fixtures::deployment("v2", true);
        d.metadata.resource_version = Some(String::from("42"));
        d.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(String::from("kubectl")),
            ..ManagedFieldsEntry::default()
        }]);
        for (key, value) in [
            (STATE_ANNOTATION, "{}"),
            (APPROVE_ANNOTATION, "true"),
            (REVISION_ANNOTATION, "7"),
            (LAST_APPLIED, "{\"spec\":{}}"),
            ("example.com/owner", "team-a"),
        ] {
            target::set_annotation(&mut d, key, Some(value.to_string()));
        }
        d
    }

    #[test]
    fn strip_drops_managed_fields_foreign_annotations_and_status() {
        let mut d = as_watched();
        strip_cached(&mut d);
        assert_eq!(d.metadata.managed_fields, None);
        assert_eq!(d.status, None);
        let kept: Vec<&str> = d.annotations().keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [APPROVE_ANNOTATION, STATE_ANNOTATION, REVISION_ANNOTATION]
        );
    }

    #[tokio::test]
    async fn watched_targets_reach_the_controller_and_its_cache_stripped() {
        let (cache, writer) = reflector::store();
        let events = futures::stream::iter([
            watcher::Event::Init,
            watcher::Event::InitApply(as_watched()),
            watcher::Event::InitDone,
            watcher::Event::Apply(as_watched()),
        ])
        .map(Ok);
        let seen: Vec<Deployment> = cached_targets(events, writer)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(seen.len(), 2, "every watch event triggers a reconcile");
        let cached = cache.state();
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].name_any(), fixtures::NAME);
        assert_eq!(cached[0].metadata.managed_fields, None);
        assert_eq!(target::annotation(cached[0].as_ref(), LAST_APPLIED), None);
    }

    #[test]
    fn strip_keeps_identity_labels_canaryd_annotations_and_the_template() {
        let before = as_watched();
        let mut d = before.clone();
        strip_cached(&mut d);
        assert_eq!(d.name_any(), before.name_any());
        assert_eq!(d.namespace(), before.namespace());
        assert_eq!(d.uid(), before.uid());
        assert_eq!(d.resource_version(), before.resource_version());
        assert_eq!(d.labels(), before.labels());
        assert_eq!(d.spec, before.spec);
        assert_eq!(target::desired_hash(&d), target::desired_hash(&before));
        assert_eq!(
            target::annotation(&d, STATE_ANNOTATION),
            target::annotation(&before, STATE_ANNOTATION)
        );
        assert_eq!(
            target::annotation(&d, APPROVE_ANNOTATION),
            Some("true"),
            "a human's approval is canaryd's to read"
        );
    }
}
