//! One pass over one managed Deployment: observe → decide → act → record.
//!
//! Commit protocol (restart safety): the engine's next state, the actions on
//! the target itself (template restore, pause, annotations) and the list of
//! remaining actions (`canaryd.io/pending`) are written in ONE update of the
//! target, preconditioned on the resourceVersion that was observed. Only then
//! are the remaining actions carried out (all idempotent), and the pending
//! list is cleared. A daemon killed in between finds the list on restart and
//! finishes it before deciding anything new; a 409 means nothing was acted
//! on, and the pass starts over from a fresh read.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::Action as Requeue;

use super::{act, now_ms, record, schedule, window, Context, ERROR_RETRY};
use crate::policy::Policy;
use crate::rollout::{self, Action, Input, Phase, RolloutState};
use crate::target::{self, Observed, ABORT_ANNOTATION, APPROVE_ANNOTATION, MAX_CONFLICT_RETRIES};
use crate::{Error, Result};

/// What one pass ended with.
enum Pass {
    /// Pending actions were finished; decide again on a fresh read.
    Again,
    /// Done; look again after this long.
    Done(std::time::Duration),
}

/// The controller's reconcile function.
pub async fn reconcile(obj: Arc<Deployment>, ctx: Arc<Context>) -> Result<Requeue> {
    let Some(policy) = ctx.policy_for(&obj) else {
        return Ok(Requeue::await_change());
    };
    if !ctx.is_leader() {
        // Followers only keep their board current; they never write.
        if let Ok(Some(observed)) = target::observe(&ctx.client, &policy).await {
            if let Ok(state) = read_state(&observed) {
                record::board(&ctx, &policy, &state, &ctx.alerts_for(&policy));
            }
        }
        return Ok(Requeue::await_change());
    }
    let started = Instant::now();
    for _ in 0..=MAX_CONFLICT_RETRIES {
        match pass(&ctx, &policy).await {
            Ok(Pass::Again) => continue,
            Ok(Pass::Done(wait)) => {
                record::clear_error(&ctx, &policy);
                tracing::debug!(
                    service = %policy.service,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    requeue_ms = wait.as_millis() as u64,
                    "Reconciled."
                );
                return Ok(Requeue::requeue(wait));
            }
            Err(Error::Conflict { name }) => {
                tracing::debug!(service = %policy.service, object = %name, "Conflict; retrying from fresh state.");
                continue;
            }
            Err(e) if !ctx.is_leader() => {
                tracing::info!(service = %policy.service, error = %e, "Leadership lost; stopped acting.");
                return Ok(Requeue::await_change());
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        name: format!("{}/{}", policy.namespace, policy.deployment),
    })
}

/// The controller's error policy: count, remember, retry soon.
pub fn error_policy(obj: Arc<Deployment>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.server.metrics.reconcile_errors.inc();
    if let Some(policy) = ctx.policy_for(&obj) {
        record::error(&ctx, &policy, error);
    }
    Requeue::requeue(ERROR_RETRY)
}

/// The stored rollout state; a Deployment canaryd never touched starts Idle.
pub fn read_state(observed: &Observed) -> Result<RolloutState> {
    match target::annotation(&observed.deployment, target::STATE_ANNOTATION) {
        None => Ok(RolloutState::new()),
        Some(text) => RolloutState::from_json(text).map_err(|e| Error::ReadState {
            name: target::full_name(&observed.deployment),
            message: e.to_string(),
        }),
    }
}

/// Actions committed but not carried out yet.
pub fn read_pending(observed: &Observed) -> Result<Option<Vec<Action>>> {
    let Some(text) = target::annotation(&observed.deployment, target::PENDING_ANNOTATION) else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| Error::ReadState {
            name: target::full_name(&observed.deployment),
            message: format!("{}: {e}", target::PENDING_ANNOTATION),
        })
}

fn now_secs() -> u64 {
    (now_ms() / 1000) as u64
}

/// Manual flags: an approval counts only while the rollout waits at a gate,
/// an abort only while a rollout is in flight.
fn manual_flags(observed: &Observed, state: &RolloutState) -> (bool, bool) {
    let d = &observed.deployment;
    let approval = target::annotation(d, APPROVE_ANNOTATION).unwrap_or_default();
    let approved = matches!(state.phase, Phase::WaitingForGate { .. })
        && (approval == "true" || Some(approval) == state.revision.as_deref());
    let abort = target::annotation(d, ABORT_ANNOTATION).is_some_and(|v| v == "true");
    (approved, abort && !state.phase.is_resting())
}

async fn pass(ctx: &Context, policy: &Policy) -> Result<Pass> {
    // Observe.
    let Some(observed) = target::observe(&ctx.client, policy).await? else {
        record::forget(ctx, policy);
        return Ok(Pass::Done(schedule::RESYNC));
    };
    let state = read_state(&observed)?;
    if let Some(pending) = read_pending(&observed)? {
        tracing::info!(service = %policy.service, actions = pending.len(), "Finishing committed actions.");
        act::carry_out(ctx, policy, &observed, &pending).await?;
        act::clear_pending(ctx, policy, &pending).await?;
        return Ok(Pass::Again);
    }
    // Decide.
    let now = now_secs();
    let window = window::close(ctx, policy, &state, &observed.target, now).await;
    let (approved, abort) = manual_flags(&observed, &state);
    let input = Input {
        now,
        target: observed.target.clone(),
        window,
        alerts: ctx.alerts_for(policy),
        approved,
        abort,
    };
    let judging = Instant::now();
    let (next, actions) = rollout::step(policy, &state, &input);
    if input.window.is_some() {
        ctx.server
            .metrics
            .judge_seconds
            .observe(judging.elapsed().as_secs_f64());
    }
    // Act.
    ctx.ensure_leader()?;
    let pending = act::commit(ctx, policy, &observed, &next, &actions).await?;
    if !pending.is_empty() {
        act::carry_out(ctx, policy, &observed, &pending).await?;
        act::clear_pending(ctx, policy, &pending).await?;
    }
    // Record.
    log_transition(policy, &state, &next, &actions);
    record::verdicts(ctx, &state, &next);
    record::board(ctx, policy, &next, &input.alerts);
    let due = schedule::next_due(policy, &next, now);
    Ok(Pass::Done(schedule::wait_for(due, now_ms())))
}

fn log_transition(
    policy: &Policy,
    before: &RolloutState,
    after: &RolloutState,
    actions: &[Action],
) {
    let steps = rollout::step_count(policy);
    for action in actions {
        if let Action::Event {
            reason, message, ..
        } = action
        {
            tracing::info!(
                service = %policy.service,
                reason = %reason,
                phase = %after.phase.label(steps),
                "{message}"
            );
        }
    }
    if before.phase != after.phase {
        tracing::debug!(
            service = %policy.service,
            from = %before.phase.label(steps),
            to = %after.phase.label(steps),
            "Phase changed."
        );
    }
}
