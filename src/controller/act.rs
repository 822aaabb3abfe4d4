//! Carrying out the engine's actions.
//!
//! Actions on the target itself are folded into the commit (one update with
//! the state); the others (canary, baseline, routing, Events) run after it,
//! in the engine's order, and are idempotent so a restarted daemon can
//! repeat them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

use super::pending::Pending;
use super::plan::{self, CommitNote, CommitPlan};
use super::{Context, REPORTER};
use crate::k8s::router;
use crate::k8s::target::{self, Arm, Observed};
use crate::policy::{Policy, Strategy};
use crate::rollout::{Action, EventKind, Reason, RolloutState};
use crate::{Error, Result};

/// Longest Event note the API accepts (1 kB).
pub const MAX_EVENT_NOTE: usize = 1024;

/// Writes the next state, the target-side actions, the pause flag and the
/// pending list in one update preconditioned on the observed resourceVersion
/// (planned by [`plan::plan_commit`], which says what `failing` does).
/// Returns the new list to carry out, if there is one.
pub async fn commit(
    ctx: &Context,
    policy: &Policy,
    observed: &Observed,
    next: &RolloutState,
    actions: &[Action],
    failing: Option<&Pending>,
) -> Result<Option<Pending>> {
    let plan = plan::plan_commit(observed, next, actions, failing);
    log_plan(policy, observed, &plan);
    execute(&ctx.client, &observed.deployment, plan).await
}

/// Logs what the plan could not do and the pause flag it sets.
fn log_plan(policy: &Policy, observed: &Observed, plan: &CommitPlan) {
    for note in &plan.notes {
        match note {
            CommitNote::MissingTemplate { hash } => {
                let err = Error::MissingTemplate {
                    name: target::full_name(&observed.deployment),
                    hash: hash.clone(),
                };
                tracing::warn!(service = %policy.service, error = %err, "Cannot restore.");
            }
        }
    }
    if let Some(paused) = plan.write.as_ref().and_then(|w| w.paused) {
        tracing::info!(service = %policy.service, paused, "Setting spec.paused.");
    }
}

/// Performs `plan`'s write on `observed` (if it has one) and returns its
/// pending list; a 409 is [`Error::Conflict`] and nothing is acted on.
pub async fn execute(
    client: &Client,
    observed: &Deployment,
    plan: CommitPlan,
) -> Result<Option<Pending>> {
    if let Some(write) = &plan.write {
        target::update_target(client, &write.onto(observed)).await?;
    }
    Ok(plan.pending)
}

/// Whether the stored pending list is `expected`'s (same actions).
fn holds(d: &Deployment, expected: &Pending) -> bool {
    target::annotation(d, target::PENDING_ANNOTATION)
        .and_then(|t| Pending::parse(t).ok())
        .is_some_and(|p| p.actions == expected.actions)
}

/// Removes the pending list once `done` was carried out (if it is still that list).
pub async fn clear_pending(ctx: &Context, policy: &Policy, done: &Pending) -> Result<()> {
    target::modify_target(&ctx.client, &policy.namespace, &policy.deployment, |d| {
        Ok(holds(d, done) && target::set_annotation(d, target::PENDING_ANNOTATION, None))
    })
    .await?;
    Ok(())
}

/// Stores `pending`'s failure record (if the stored list is still `pending`'s).
pub async fn store_failure(ctx: &Context, policy: &Policy, pending: &Pending) -> Result<()> {
    let text = pending.to_json();
    target::modify_target(&ctx.client, &policy.namespace, &policy.deployment, |d| {
        Ok(holds(d, pending)
            && target::set_annotation(d, target::PENDING_ANNOTATION, Some(text.clone())))
    })
    .await?;
    Ok(())
}

/// The template with canaryd hash `hash`: the target's own or one of its ReplicaSets'.
fn template_for(observed: &Observed, hash: &str) -> Option<PodTemplateSpec> {
    if observed.target.desired_hash == hash {
        return Some(observed.desired_template());
    }
    observed.templates.get(hash).cloned()
}

/// Carries out external actions in order; stops at the first failure and
/// returns its index with the error (the pending list stays, so a later pass
/// repeats from there).
pub async fn carry_out(
    ctx: &Context,
    policy: &Policy,
    observed: &Observed,
    actions: &[Action],
) -> std::result::Result<(), (usize, Error)> {
    for (i, action) in actions.iter().enumerate() {
        ctx.ensure_leader().map_err(|e| (i, e))?;
        carry_out_one(ctx, policy, observed, action)
            .await
            .map_err(|e| (i, e))?;
    }
    Ok(())
}

async fn carry_out_one(
    ctx: &Context,
    policy: &Policy,
    observed: &Observed,
    action: &Action,
) -> Result<()> {
    let client = &ctx.client;
    let d = &observed.deployment;
    let (ns, name) = (&policy.namespace, &policy.deployment);
    match action {
        Action::EnsureCanary {
            template_hash,
            replicas,
        } => {
            ensure(ctx, observed, Arm::Canary, template_hash, *replicas).await?;
            tracing::info!(service = %policy.service, revision = %template_hash, replicas, "Canary sized.");
        }
        Action::EnsureBaseline {
            template_hash,
            replicas,
        } => {
            ensure(ctx, observed, Arm::Baseline, template_hash, *replicas).await?;
            tracing::info!(service = %policy.service, revision = %template_hash, replicas, "Baseline sized.");
        }
        Action::DeleteCanary => {
            target::delete_arm(client, ns, name, Arm::Canary).await?;
            router::remove_canary_routes(client, policy).await?;
        }
        Action::DeleteBaseline => target::delete_arm(client, ns, name, Arm::Baseline).await?,
        Action::SetWeight { percent } => {
            router::set_weight(client, policy, d, *percent).await?;
            tracing::info!(service = %policy.service, percent, "Canary weight set.");
        }
        Action::SwitchSelector {
            service,
            to_version,
        } => {
            let Strategy::BlueGreen(bg) = &policy.strategy else {
                return Ok(());
            };
            router::switch_selector(client, ns, service, &bg.version_label, to_version).await?;
            tracing::info!(service = %policy.service, active = %service, version = %to_version, "Selector switched.");
        }
        Action::Event {
            kind,
            reason,
            message,
        } => publish(ctx, d, *kind, *reason, message).await,
        // Folded into the commit.
        Action::Promote { .. }
        | Action::RestoreStable { .. }
        | Action::MarkFailedRevision { .. }
        | Action::ClearApproval
        | Action::ClearAbort => {}
    }
    Ok(())
}

async fn ensure(
    ctx: &Context,
    observed: &Observed,
    arm: Arm,
    hash: &str,
    replicas: u32,
) -> Result<()> {
    let Some(template) = template_for(observed, hash) else {
        // The template changed again since the decision; the engine sees
        // that on the next pass. Blocking the pending list would stall it.
        let err = Error::MissingTemplate {
            name: target::full_name(&observed.deployment),
            hash: hash.to_string(),
        };
        tracing::warn!(arm = arm.as_str(), error = %err, "Skipping.");
        return Ok(());
    };
    target::ensure_arm(&ctx.client, &observed.deployment, arm, &template, replicas).await?;
    Ok(())
}

/// Publishes an Event on the target. A failure is logged, not retried: the
/// rollout must not stall on its own bookkeeping.
///
/// Every Event is created anew rather than through kube's `Recorder`, which
/// folds Events of one reason on one object into a series for six minutes
/// and keeps the first note: a second rollout's `RolledBack` would then show
/// the first rollout's numbers.
pub async fn publish(
    ctx: &Context,
    d: &k8s_openapi::api::apps::v1::Deployment,
    kind: EventKind,
    reason: Reason,
    message: &str,
) {
    let mut note = message.to_string();
    if note.len() > MAX_EVENT_NOTE {
        let mut cut = MAX_EVENT_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let now = jiff::Timestamp::now();
    let regarding = d.object_ref(&());
    let namespace = regarding.namespace.clone().unwrap_or_default();
    let event = K8sEvent {
        action: Some(String::from("Rollout")),
        reason: Some(reason.to_string()),
        note: Some(note),
        event_time: Some(MicroTime(now)),
        metadata: ObjectMeta {
            namespace: Some(namespace.clone()),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.clone().unwrap_or_default(),
                now.as_nanosecond()
            )),
            ..ObjectMeta::default()
        },
        regarding: Some(regarding),
        reporting_controller: Some(REPORTER.to_string()),
        reporting_instance: Some(ctx.identity.clone()),
        type_: Some(kind.as_str().to_string()),
        ..K8sEvent::default()
    };
    let api: Api<K8sEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        let err = Error::PublishEvent {
            reason,
            name: target::full_name(d),
            source: Box::new(e),
        };
        tracing::warn!(error = %err, "Event not published.");
    }
    notify(ctx, d, kind, reason, message);
}

/// Posts the Event to the policy's notification receivers in the background,
/// so a slow receiver never holds up the pass.
fn notify(
    ctx: &Context,
    d: &k8s_openapi::api::apps::v1::Deployment,
    kind: EventKind,
    reason: Reason,
    message: &str,
) {
    let Some(policy) = ctx.policy_for(d).filter(|p| !p.notifications.is_empty()) else {
        return;
    };
    let message = message.to_string();
    tokio::spawn(async move {
        let note = crate::daemon::notifier::RolloutNote {
            kind,
            reason,
            message: &message,
        };
        crate::daemon::notifier::post_all(crate::daemon::notifier::client(), &policy, &note).await;
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock;

    use super::*;
    use crate::controller::fixtures::{self, NAMESPACE, RESOURCE_VERSION};
    use crate::rollout::{Phase, Reason};

    /// Longest wait for the mock API server's next request.
    const MOCK_WAIT: Duration = Duration::from_secs(5);

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    /// The promote commit of the fixture rollout: one write, one pending Event.
    fn promote() -> (Observed, CommitPlan, Pending) {
        let o = fixtures::in_flight();
        let event = Action::Event {
            kind: EventKind::Normal,
            reason: Reason::AnalysisPassed,
            message: String::from("passed"),
        };
        let next = RolloutState {
            phase: Phase::Promoting,
            revision: Some(fixtures::hash_of("v2")),
            stable_hash: Some(fixtures::hash_of("v1")),
            ..RolloutState::default()
        };
        let actions = [
            event.clone(),
            Action::Promote {
                template_hash: fixtures::hash_of("v2"),
            },
        ];
        let plan = plan::plan_commit(&o, &next, &actions, None);
        (o, plan, Pending::new(vec![event]))
    }

    /// Takes the next request, which must be the update of the target on
    /// the observed resourceVersion, and answers it with `status` and `body`
    /// (`None`: the object as written). Returns the object written.
    async fn answer_update(
        handle: &mut Handle,
        status: StatusCode,
        body: Option<serde_json::Value>,
    ) -> Deployment {
        let (request, send) = tokio::time::timeout(MOCK_WAIT, handle.next_request())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(request.method(), http::Method::PUT);
        assert_eq!(
            request.uri().path(),
            "/apis/apps/v1/namespaces/prod/deployments/web"
        );
        assert!(
            request
                .uri()
                .query()
                .is_some_and(|q| q.contains("fieldManager=canaryd")),
            "{}",
            request.uri()
        );
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let written: Deployment = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            written.metadata.resource_version.as_deref(),
            Some(RESOURCE_VERSION)
        );
        let body = body.unwrap_or_else(|| serde_json::to_value(&written).unwrap());
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        send.send_response(response);
        written
    }

    /// Waits until the client is gone; fails on any further request.
    async fn no_more_requests(mut handle: Handle) {
        let next = tokio::time::timeout(MOCK_WAIT, handle.next_request()).await;
        assert!(
            matches!(next, Ok(None)),
            "unexpected request: {:?}",
            next.map(|r| r.map(|(req, _)| req.uri().clone()))
        );
    }

    #[tokio::test]
    async fn a_conflict_on_the_commit_is_reported_and_nothing_else_is_written() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NAMESPACE);
        let (o, plan, _) = promote();
        let server = tokio::spawn(async move {
            let conflict = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Conflict", "code": 409,
                "message": "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified"
            });
            answer_update(&mut handle, StatusCode::CONFLICT, Some(conflict)).await;
            no_more_requests(handle).await;
        });
        let result = execute(&client, &o.deployment, plan).await;
        drop(client);
        server.await.unwrap();
        match result {
            Err(Error::Conflict { name }) => assert_eq!(name, "prod/web"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_written_commit_returns_its_pending_list() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NAMESPACE);
        let (o, plan, pending) = promote();
        let expected = plan.write.clone().unwrap().onto(&o.deployment);
        let server = tokio::spawn(async move {
            let written = answer_update(&mut handle, StatusCode::OK, None).await;
            no_more_requests(handle).await;
            written
        });
        let result = execute(&client, &o.deployment, plan).await;
        drop(client);
        let written = server.await.unwrap();
        assert_eq!(result.unwrap(), Some(pending));
        assert_eq!(written, expected);
        assert!(!target::is_paused(&written));
    }

    #[tokio::test]
    async fn a_commit_without_changes_writes_nothing() {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NAMESPACE);
        let o = fixtures::in_flight();
        let plan = CommitPlan {
            write: None,
            pending: None,
            notes: vec![],
        };
        let server = tokio::spawn(no_more_requests(handle));
        let result = execute(&client, &o.deployment, plan).await;
        drop(client);
        server.await.unwrap();
        assert_eq!(result.unwrap(), None);
    }
}
