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
//! What the update holds and what it leaves pending is planned without I/O
//! by [`super::plan::plan_commit`]; [`act::commit`] only performs it.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::Action as Requeue;

use super::pending::Pending;
use super::{act, now_ms, record, schedule, window, Context, ERROR_RETRY};
use crate::k8s;
use crate::k8s::target::{self, Observed, ABORT_ANNOTATION, APPROVE_ANNOTATION};
use crate::policy::Policy;
use crate::rollout::{self, Action, EventKind, Input, Phase, Reason, RolloutState};
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
                let pending = read_pending(&observed).ok().flatten();
                let alerts = ctx.alerts_for(&policy);
                record::board(&ctx, &policy, &state, &alerts, pending.as_ref());
            }
        }
        return Ok(Requeue::await_change());
    }
    let started = Instant::now();
    let key = format!("{}/{}", policy.namespace, policy.deployment);
    let mut retry = k8s::ConflictRetry::new(&key);
    let wait = loop {
        retry.attempt()?;
        match pass(&ctx, &policy).await {
            Ok(Pass::Again) => continue,
            Ok(Pass::Done(wait)) => break wait,
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
    };
    record::clear_error(&ctx, &policy);
    tracing::debug!(
        service = %policy.service,
        elapsed_ms = started.elapsed().as_millis() as u64,
        requeue_ms = wait.as_millis() as u64,
        "Reconciled."
    );
    Ok(Requeue::requeue(wait))
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

/// Actions committed but not carried out yet, with their failure record.
pub fn read_pending(observed: &Observed) -> Result<Option<Pending>> {
    let Some(text) = target::annotation(&observed.deployment, target::PENDING_ANNOTATION) else {
        return Ok(None);
    };
    Pending::parse(text)
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
    let now = now_secs();
    let failing = match read_pending(&observed)? {
        None => None,
        Some(pending) => match finish(ctx, policy, &observed, pending, now).await? {
            Finished::Done | Finished::Recorded => return Ok(Pass::Again),
            Finished::Failing(p) => Some(p),
        },
    };
    // Decide. No window closes while actions fail: the step cannot move on,
    // and its time counts once they work.
    let window = match failing {
        Some(_) => None,
        None => window::close(ctx, policy, &state, &observed.target, now).await,
    };
    let (approved, abort) = manual_flags(&observed, &state);
    let input = Input {
        now,
        target: observed.target.clone(),
        window,
        alerts: ctx.alerts_for(policy),
        approved,
        abort,
        failing: failing.as_ref().and_then(Pending::input),
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
    let committed = act::commit(ctx, policy, &observed, &next, &actions, failing.as_ref()).await?;
    if committed.is_some() {
        abort_after_commit_if_asked(policy);
    }
    let still_failing = match committed {
        // Kept only when the engine decided nothing; a decision replaced it.
        None if actions.is_empty() => failing,
        None => None,
        Some(pending) => match carry_out(ctx, policy, &observed, pending, now).await? {
            Finished::Failing(p) => Some(p),
            Finished::Done | Finished::Recorded => None,
        },
    };
    let retry_at = still_failing.as_ref().and_then(|p| retry_due(policy, p));
    // Record.
    log_transition(policy, &state, &next, &actions);
    record::verdicts(ctx, &state, &next);
    record::board(ctx, policy, &next, &input.alerts, still_failing.as_ref());
    let due = [schedule::next_due(policy, &next, now), retry_at]
        .into_iter()
        .flatten()
        .min();
    Ok(Pass::Done(schedule::wait_for(due, now_ms())))
}

/// Fault-injection hook for the restart-safety tests: with
/// `CANARYD_FAULT_ABORT_AFTER_COMMIT=<namespace>/<deployment>`, the process
/// dies (like kill -9: no unwinding, no cleanup) right after a commit that
/// left actions pending for that Deployment, before carrying any out.
pub const FAULT_ABORT_AFTER_COMMIT: &str = "CANARYD_FAULT_ABORT_AFTER_COMMIT";

fn abort_after_commit_if_asked(policy: &Policy) {
    // Read once: the hook is fixed for the process's life.
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var(FAULT_ABORT_AFTER_COMMIT).ok());
    let Some(wanted) = wanted else {
        return;
    };
    if *wanted == format!("{}/{}", policy.namespace, policy.deployment) {
        tracing::error!(service = %policy.service, hook = FAULT_ABORT_AFTER_COMMIT, "Aborting after the commit, before its actions.");
        std::process::abort();
    }
}

/// How a pending list ended on this pass.
enum Finished {
    /// Carried out and cleared.
    Done,
    /// An attempt failed and was recorded; the pass starts over.
    Recorded,
    /// Still failing, no attempt due yet: decide with it.
    Failing(Pending),
}

/// Finishes a pending list found at the start of a pass: carries it out from
/// where it failed, when an attempt is due.
async fn finish(
    ctx: &Context,
    policy: &Policy,
    observed: &Observed,
    pending: Pending,
    now: u64,
) -> Result<Finished> {
    if !pending.due(now) {
        return Ok(Finished::Failing(pending));
    }
    tracing::info!(service = %policy.service, actions = pending.actions.len(), "Finishing committed actions.");
    Ok(
        match carry_out(ctx, policy, observed, pending, now).await? {
            Finished::Failing(_) => Finished::Recorded,
            other => other,
        },
    )
}

/// Carries out `pending` (from its failed action on) and clears it, or
/// records the failure: an Event when it is news, a log line and the board
/// entry every time. A conflict or lost leadership ends the pass instead.
async fn carry_out(
    ctx: &Context,
    policy: &Policy,
    observed: &Observed,
    mut pending: Pending,
    now: u64,
) -> Result<Finished> {
    let from = pending.failure.as_ref().map_or(0, |f| f.index);
    let todo = pending.actions.get(from..).unwrap_or_default();
    let (index, err) = match act::carry_out(ctx, policy, observed, todo).await {
        Ok(()) => {
            act::clear_pending(ctx, policy, &pending).await?;
            return Ok(Finished::Done);
        }
        Err((_, e @ Error::Conflict { .. })) => return Err(e),
        Err((_, e)) if !ctx.is_leader() => return Err(e),
        Err((i, e)) => (from + i, e),
    };
    let key = format!("{}/{}", policy.namespace, policy.deployment);
    let news = pending.record_failure(index, &err.to_string(), now, &key);
    act::store_failure(ctx, policy, &pending).await?;
    ctx.server.metrics.reconcile_errors.inc();
    if let Some(f) = &pending.failure {
        let retry_in = f.retry_at.saturating_sub(now);
        tracing::warn!(
            service = %policy.service,
            action = %f.action,
            attempts = f.attempts,
            retry_in_secs = retry_in,
            error = %f.error,
            "Action failed; backing off."
        );
        if news {
            let message = format!(
                "{} failed (attempt {}; next in {}s; the rollout rolls back {} after the first failure if it keeps failing): {}",
                f.action,
                f.attempts,
                retry_in,
                rollout::format_secs(policy.progress_deadline.as_secs()),
                f.error
            );
            let (kind, reason) = (EventKind::Warning, Reason::ActionFailed);
            act::publish(ctx, &observed.deployment, kind, reason, &message).await;
        }
    }
    Ok(Finished::Failing(pending))
}

/// When to look again at a failing list: its next attempt or its limit.
fn retry_due(policy: &Policy, pending: &Pending) -> Option<u64> {
    let limit = policy.progress_deadline.as_secs();
    let f = pending.failure.as_ref()?;
    Some(f.retry_at.min(f.since.saturating_add(limit)))
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
