//! Recording what a pass found: the `/v1/rollouts` board and canaryd's metrics.

use std::collections::BTreeMap;

use super::pending::Pending;
use super::Context;
use crate::daemon::server::ServiceStatus;
use crate::judge::{Decision, Verdict};
use crate::policy::Policy;
use crate::rollout::{Phase, RolloutState};
use crate::Error;

/// Every name [`phase_name`] gives, in lifecycle order: what `/v1/rollouts?phase=`
/// accepts and the order `canaryd status --sort phase` lists.
pub const PHASE_NAMES: [&str; 9] = [
    "Idle",
    "Initializing",
    "Progressing",
    "WaitingForGate",
    "Promoting",
    "Promoted",
    "RollingBack",
    "RolledBack",
    "Failed",
];

/// Phase name without the step, as the board and the gauge show it.
pub fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Idle => "Idle",
        Phase::Initializing => "Initializing",
        Phase::Progressing { .. } => "Progressing",
        Phase::WaitingForGate { .. } => "WaitingForGate",
        Phase::Promoting => "Promoting",
        Phase::Promoted => "Promoted",
        Phase::RollingBack => "RollingBack",
        Phase::RolledBack => "RolledBack",
        Phase::Failed => "Failed",
    }
}

/// A decision as the board, the decisions metric and `canaryd status` name it.
pub fn decision_label(d: Decision) -> &'static str {
    match d {
        Decision::Promote => "promote",
        Decision::Continue => "continue",
        Decision::Rollback => "rollback",
        Decision::Inconclusive => "inconclusive",
    }
}

/// The board entry for `policy` in `state`.
pub fn status(policy: &Policy, state: &RolloutState, alerts: &[String]) -> ServiceStatus {
    let ended = matches!(
        state.phase,
        Phase::RollingBack | Phase::RolledBack | Phase::Failed
    );
    ServiceStatus {
        service: policy.service.clone(),
        namespace: policy.namespace.clone(),
        deployment: policy.deployment.clone(),
        phase: phase_name(&state.phase).to_string(),
        step: state.phase.step(),
        last_verdict: state
            .last_verdict()
            .map(|v| Verdict::new(v.decision, v.reason.clone())),
        firing_alerts: alerts.to_vec(),
        last_error: None,
        reason: state.message.clone().filter(|_| ended),
        failing_action: None,
    }
}

/// Puts `policy`'s entry on the board and updates the phase gauge.
/// `failing` is a pending list whose actions keep failing.
pub fn board(
    ctx: &Context,
    policy: &Policy,
    state: &RolloutState,
    alerts: &[String],
    failing: Option<&Pending>,
) {
    let mut entry = status(policy, state, alerts);
    entry.failing_action = failing.and_then(|p| p.failure.as_ref()).map(|f| {
        format!(
            "{} failing since {} ({} attempt(s)): {}",
            f.action,
            jiff::Timestamp::from_second(f.since as i64)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            f.attempts,
            f.error
        )
    });
    entry.last_error = ctx
        .errors
        .lock()
        .ok()
        .and_then(|e| e.get(&policy.service).cloned());
    if let Ok(mut board) = ctx.server.status.write() {
        board.rollouts.retain(|s| {
            (s.namespace.as_str(), s.deployment.as_str())
                != (entry.namespace.as_str(), entry.deployment.as_str())
        });
        board.rollouts.push(entry);
        board
            .rollouts
            .sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
    }
    set_phase(ctx, policy, Some(phase_name(&state.phase)));
}

/// Drops `policy`'s entry (its Deployment is gone).
pub fn forget(ctx: &Context, policy: &Policy) {
    if let Ok(mut board) = ctx.server.status.write() {
        board.rollouts.retain(|s| {
            (s.namespace.as_str(), s.deployment.as_str())
                != (policy.namespace.as_str(), policy.deployment.as_str())
        });
    }
    set_phase(ctx, policy, None);
}

fn set_phase(ctx: &Context, policy: &Policy, phase: Option<&'static str>) {
    let Ok(mut phases) = ctx.phases.lock() else {
        return;
    };
    let key = format!("{}/{}", policy.namespace, policy.deployment);
    match phase {
        Some(p) => phases.insert(key, p),
        None => phases.remove(&key),
    };
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for p in phases.values() {
        *counts.entry(p).or_default() += 1;
    }
    let gauge = &ctx.server.metrics.rollouts;
    gauge.reset();
    for (p, n) in counts {
        gauge.with_label_values(&[p]).set(n);
    }
}

/// Counts the verdicts `next` added to `before`.
pub fn verdicts(ctx: &Context, before: &RolloutState, next: &RolloutState) {
    let last = before.last_verdict().map(|v| (v.at, v.step));
    for v in &next.verdicts {
        let new = last.is_none_or(|l| (v.at, v.step) > l);
        if new {
            ctx.server
                .metrics
                .decisions
                .with_label_values(&[decision_label(v.decision)])
                .inc();
        }
    }
}

/// Remembers the last reconcile error of `policy`.
pub fn error(ctx: &Context, policy: &Policy, error: &Error) {
    tracing::warn!(service = %policy.service, error = %error, "Reconcile failed.");
    if let Ok(mut errors) = ctx.errors.lock() {
        errors.insert(policy.service.clone(), error.to_string());
    }
    set_board_error(ctx, policy, Some(error.to_string()));
}

/// Sets `last_error` on `policy`'s board entry, if it has one.
fn set_board_error(ctx: &Context, policy: &Policy, error: Option<String>) {
    if let Ok(mut board) = ctx.server.status.write() {
        let entry = board.rollouts.iter_mut().find(|s| {
            (s.namespace.as_str(), s.deployment.as_str())
                == (policy.namespace.as_str(), policy.deployment.as_str())
        });
        if let Some(entry) = entry {
            entry.last_error = error;
        }
    }
}

/// Forgets the last reconcile error of `policy` after a good pass.
pub fn clear_error(ctx: &Context, policy: &Policy) {
    let had = ctx
        .errors
        .lock()
        .ok()
        .and_then(|mut errors| errors.remove(&policy.service));
    if had.is_some() {
        set_board_error(ctx, policy, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_lists_every_phase_in_order() {
        let phases = [
            Phase::Idle,
            Phase::Initializing,
            Phase::Progressing { step: 0 },
            Phase::WaitingForGate { step: 0 },
            Phase::Promoting,
            Phase::Promoted,
            Phase::RollingBack,
            Phase::RolledBack,
            Phase::Failed,
        ];
        assert_eq!(phases.each_ref().map(phase_name), PHASE_NAMES);
    }
}
