//! Planning the commit (pure): the one update of the target a pass makes,
//! its precondition, and the actions it leaves to carry out afterwards.
//!
//! [`super::act::commit`] executes the plan; this module does no I/O, so
//! every decision of the commit protocol (see [`super::reconcile`]) is
//! tested here with values.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::pending::Pending;
use super::schedule;
use crate::k8s::target::{self, Observed};
use crate::rollout::{Action, RolloutState};

/// What one commit writes and what it leaves to do.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitPlan {
    /// The update of the target; `None` when nothing changed (no write).
    pub write: Option<TargetWrite>,
    /// Actions to carry out after the write, in the engine's order; `None`
    /// when there are none.
    pub pending: Option<Pending>,
    /// Things the planner could not do, for the executor to log.
    pub notes: Vec<CommitNote>,
}

/// One update (PUT) of the target: the fields canaryd changes, on a precondition.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetWrite {
    /// The resourceVersion the target was observed at: the update fails
    /// with a conflict when the target changed since.
    pub precondition: Option<String>,
    /// All annotations after the write (the update replaces the object).
    pub annotations: BTreeMap<String, String>,
    /// The stable template put back by a rollback, when one was restored.
    pub template: Option<PodTemplateSpec>,
    /// `spec.paused` after the write, when it changes.
    pub paused: Option<bool>,
}

/// Why part of a decision was not planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitNote {
    /// No ReplicaSet holds the stable template `hash`, so nothing is
    /// restored; the engine reports `RollbackStalled` at its deadline.
    MissingTemplate {
        /// canaryd hash of the template looked for.
        hash: String,
    },
}

impl TargetWrite {
    /// The object to write: `observed` with this write applied and the
    /// precondition as its resourceVersion.
    pub fn onto(&self, observed: &Deployment) -> Deployment {
        let mut d = observed.clone();
        d.metadata.annotations = Some(self.annotations.clone());
        if let Some(template) = &self.template {
            d.spec.get_or_insert_with(Default::default).template = template.clone();
        }
        if let Some(paused) = self.paused {
            target::set_paused(&mut d, paused);
        }
        d.metadata.resource_version = self.precondition.clone();
        d
    }
}

/// Whether an action changes something other than the target Deployment
/// (and so is carried out after the commit rather than folded into it).
pub fn is_external(action: &Action) -> bool {
    !matches!(
        action,
        Action::Promote { .. }
            | Action::RestoreStable { .. }
            | Action::MarkFailedRevision { .. }
            | Action::ClearApproval
            | Action::ClearAbort
    )
}

/// Plans the commit of `next` and `actions`: the next state, the
/// target-side actions, the pause flag and the pending list in one update
/// preconditioned on the observed resourceVersion. `failing` is a pending
/// list that keeps failing: whatever the engine decided replaces it (see
/// [`Pending::superseded_by`]); with no decision it stays.
pub fn plan_commit(
    observed: &Observed,
    next: &RolloutState,
    actions: &[Action],
    failing: Option<&Pending>,
) -> CommitPlan {
    let mut d = observed.deployment.clone();
    let mut notes = Vec::new();
    let (mut changed, restored) = fold_target_actions(&mut d, observed, actions, &mut notes);
    // An abort is only honoured in flight; a stale one would abort the next rollout.
    if next.phase.is_resting() {
        changed |= target::set_annotation(&mut d, target::ABORT_ANNOTATION, None);
    }
    changed |= set_state(&mut d, next);
    let pending = pending_list(actions, failing);
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
    let pause_changed = target::set_paused(&mut d, paused);
    changed |= pause_changed;
    let write = changed.then(|| TargetWrite {
        precondition: observed.deployment.metadata.resource_version.clone(),
        annotations: d.metadata.annotations.clone().unwrap_or_default(),
        template: d
            .spec
            .as_ref()
            .filter(|_| restored)
            .map(|s| s.template.clone()),
        paused: pause_changed.then_some(paused),
    });
    CommitPlan {
        write,
        pending: pending.filter(|p| !p.actions.is_empty()),
        notes,
    }
}

/// Applies the actions on the target itself to `d`. Returns whether `d`
/// changed and whether its template was restored.
fn fold_target_actions(
    d: &mut Deployment,
    observed: &Observed,
    actions: &[Action],
    notes: &mut Vec<CommitNote>,
) -> (bool, bool) {
    let (mut changed, mut restored) = (false, false);
    for action in actions {
        changed |= match action {
            Action::RestoreStable {
                template_hash,
                replacing,
            } => match observed.templates.get(template_hash) {
                Some(stable) => {
                    let done = target::restore_template(d, stable, replacing);
                    restored |= done;
                    done
                }
                None => {
                    notes.push(CommitNote::MissingTemplate {
                        hash: template_hash.clone(),
                    });
                    false
                }
            },
            Action::MarkFailedRevision { hash } => {
                target::set_annotation(d, target::FAILED_REVISION_ANNOTATION, Some(hash.clone()))
            }
            Action::ClearApproval => target::set_annotation(d, target::APPROVE_ANNOTATION, None),
            Action::ClearAbort => target::set_annotation(d, target::ABORT_ANNOTATION, None),
            // Resuming follows from the phase (see `schedule::want_paused`).
            _ => false,
        };
    }
    (changed, restored)
}

/// Stores `next` unless the stored state differs only in
/// `observed_generation`: writing an annotation bumps a Deployment's
/// generation (the controller copies annotations to ReplicaSets), which the
/// engine records, so a write for that alone would cause the next.
fn set_state(d: &mut Deployment, next: &RolloutState) -> bool {
    let stored = target::annotation(d, target::STATE_ANNOTATION)
        .and_then(|t| RolloutState::from_json(t).ok());
    let unchanged = stored.is_some_and(|mut s| {
        s.observed_generation = next.observed_generation;
        s == *next
    });
    !unchanged && target::set_annotation(d, target::STATE_ANNOTATION, Some(next.to_json()))
}

/// The pending list after this commit: the external actions in order, or
/// the failing list superseded by them; `None` keeps the stored list (a
/// failing one and no decision).
fn pending_list(actions: &[Action], failing: Option<&Pending>) -> Option<Pending> {
    let external: Vec<Action> = actions.iter().filter(|a| is_external(a)).cloned().collect();
    match failing {
        Some(_) if actions.is_empty() => None,
        Some(old) => Some(old.superseded_by(&external)),
        None => Some(external),
    }
    .map(Pending::new)
}

