//! Carrying out the engine's actions.
//!
//! Actions on the target itself are folded into the commit (one update with
//! the state); the others (canary, baseline, routing, Events) run after it,
//! in the engine's order, and are idempotent so a restarted daemon can
//! repeat them.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Resource;

use super::pending::Pending;
use super::{schedule, Context, REPORTER};
use crate::k8s::router;
use crate::k8s::target::{self, Arm, Observed};
use crate::policy::{Policy, Strategy};
use crate::rollout::{Action, EventKind, Reason, RolloutState};
use crate::{Error, Result};

/// Longest Event note the API accepts (1 kB).
pub const MAX_EVENT_NOTE: usize = 1024;

/// Whether an action changes something other than the target Deployment.
fn is_external(action: &Action) -> bool {
    !matches!(
        action,
        Action::Promote { .. }
            | Action::RestoreStable { .. }
            | Action::MarkFailedRevision { .. }
            | Action::ClearApproval
            | Action::ClearAbort
    )
}

/// Writes the next state, the target-side actions, the pause flag and the
/// pending list in one update preconditioned on the observed resourceVersion.
/// `failing` is a pending list that keeps failing: whatever the engine
/// decided replaces it (see [`Pending::superseded_by`]); with no decision it
/// stays. Returns the new list to carry out, if there is one.
pub async fn commit(
    ctx: &Context,
    policy: &Policy,
    observed: &Observed,
    next: &RolloutState,
    actions: &[Action],
    failing: Option<&Pending>,
) -> Result<Option<Pending>> {
    let mut d = observed.deployment.clone();
    let mut changed = false;
    for action in actions {
        changed |= match action {
            Action::RestoreStable {
                template_hash,
                replacing,
            } => {
                match observed.templates.get(template_hash) {
                    Some(stable) => target::restore_template(&mut d, stable, replacing),
                    None => {
                        // Without the ReplicaSet there is nothing to restore;
                        // the engine reports RollbackStalled at its deadline.
                        let err = Error::MissingTemplate {
                            name: target::full_name(&d),
                            hash: template_hash.clone(),
                        };
                        tracing::warn!(service = %policy.service, error = %err, "Cannot restore.");
                        false
                    }
                }
            }
            Action::MarkFailedRevision { hash } => target::set_annotation(
                &mut d,
                target::FAILED_REVISION_ANNOTATION,
                Some(hash.clone()),
            ),
            Action::ClearApproval => {
                target::set_annotation(&mut d, target::APPROVE_ANNOTATION, None)
            }
            Action::ClearAbort => target::set_annotation(&mut d, target::ABORT_ANNOTATION, None),
            // Resuming follows from the phase (see `schedule::want_paused`).
            _ => false,
        };
    }
    // An abort is only honoured in flight; a stale one would abort the next rollout.
    if next.phase.is_resting() {
        changed |= target::set_annotation(&mut d, target::ABORT_ANNOTATION, None);
    }
    // Writing an annotation bumps a Deployment's generation (the controller
    // copies annotations to ReplicaSets), which the engine records: a change
    // of `observed_generation` alone is not worth a write, or each write
    // would cause the next.
    let stored = target::annotation(&d, target::STATE_ANNOTATION)
        .and_then(|t| RolloutState::from_json(t).ok());
    let unchanged = stored.is_some_and(|mut s| {
        s.observed_generation = next.observed_generation;
        s == *next
    });
    if !unchanged {
        changed |= target::set_annotation(&mut d, target::STATE_ANNOTATION, Some(next.to_json()));
    }
    let external: Vec<Action> = actions.iter().filter(|a| is_external(a)).cloned().collect();
    let pending = match failing {
        Some(_) if actions.is_empty() => None,
        Some(old) => Some(old.superseded_by(&external)),
        None => Some(external),
    }
    .map(Pending::new);
    match &pending {
        Some(p) if !p.actions.is_empty() => {
            let text = p.to_json();
            changed |= target::set_annotation(&mut d, target::PENDING_ANNOTATION, Some(text));
        }
        Some(_) => changed |= target::set_annotation(&mut d, target::PENDING_ANNOTATION, None),
        None => {}
    }
    let desired = target::desired_hash(&d);
    let paused = schedule::want_paused(
        next,
        &desired,
        observed.rolled_out && desired == observed.target.desired_hash,
        !observed.templates.is_empty(),
    );
    if target::set_paused(&mut d, paused) {
        tracing::info!(service = %policy.service, paused, "Setting spec.paused.");
        changed = true;
    }
    if changed {
        target::update_target(&ctx.client, &d).await?;
    }
    Ok(pending.filter(|p| !p.actions.is_empty()))
}

/// Whether the stored pending list is `expected`'s (same actions).
fn holds(d: &k8s_openapi::api::apps::v1::Deployment, expected: &Pending) -> bool {
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
    let now = k8s_openapi::jiff::Timestamp::now();
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
