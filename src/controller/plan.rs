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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{self, annotated, hash_of, in_flight, RESOURCE_VERSION};
    use crate::k8s::target::{
        ABORT_ANNOTATION, APPROVE_ANNOTATION, FAILED_REVISION_ANNOTATION, PENDING_ANNOTATION,
        STATE_ANNOTATION,
    };
    use crate::rollout::{EventKind, Phase, Reason};

    fn event(reason: Reason) -> Action {
        Action::Event {
            kind: EventKind::Normal,
            reason,
            message: String::from("m"),
        }
    }

    /// The engine's state for the fixture rollout (`v1` → `v2`) in `phase`.
    fn state(phase: Phase) -> RolloutState {
        RolloutState {
            phase,
            phase_started_at: 1000,
            revision: Some(hash_of("v2")),
            stable_hash: Some(hash_of("v1")),
            observed_generation: Some(3),
            ..RolloutState::default()
        }
    }

    /// The fixture rollout with `stored` as its state annotation.
    fn stored(phase: Phase) -> Observed {
        annotated(in_flight(), STATE_ANNOTATION, &state(phase).to_json())
    }

    fn annotations(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn list(actions: &[Action]) -> String {
        Pending::new(actions.to_vec()).to_json()
    }

    #[test]
    fn promote_resumes_the_target_and_leaves_the_events_pending() {
        let o = stored(Phase::Progressing { step: 2 });
        let next = state(Phase::Promoting);
        let actions = [
            event(Reason::AnalysisPassed),
            Action::Promote {
                template_hash: hash_of("v2"),
            },
        ];
        let plan = plan_commit(&o, &next, &actions, None);
        let done = [event(Reason::AnalysisPassed)];
        assert_eq!(
            plan,
            CommitPlan {
                write: Some(TargetWrite {
                    precondition: Some(RESOURCE_VERSION.into()),
                    annotations: annotations(&[
                        (PENDING_ANNOTATION, list(&done)),
                        (STATE_ANNOTATION, next.to_json()),
                    ]),
                    template: None,
                    paused: Some(false),
                }),
                pending: Some(Pending::new(done.to_vec())),
                notes: vec![],
            }
        );
    }

    #[test]
    fn rollback_restores_the_stable_template_marks_the_revision_and_resumes() {
        let o = stored(Phase::Progressing { step: 1 });
        let next = state(Phase::RollingBack);
        let external = [
            event(Reason::AlertRollback),
            Action::DeleteCanary,
            Action::DeleteBaseline,
        ];
        let actions = [
            external[0].clone(),
            Action::RestoreStable {
                template_hash: hash_of("v1"),
                replacing: hash_of("v2"),
            },
            Action::MarkFailedRevision {
                hash: hash_of("v2"),
            },
            external[1].clone(),
            external[2].clone(),
        ];
        let plan = plan_commit(&o, &next, &actions, None);
        let stable = o.templates.get(&hash_of("v1")).cloned();
        assert!(stable.is_some());
        assert_eq!(
            plan,
            CommitPlan {
                write: Some(TargetWrite {
                    precondition: Some(RESOURCE_VERSION.into()),
                    annotations: annotations(&[
                        (FAILED_REVISION_ANNOTATION, hash_of("v2")),
                        (PENDING_ANNOTATION, list(&external)),
                        (STATE_ANNOTATION, next.to_json()),
                    ]),
                    template: stable,
                    paused: Some(false),
                }),
                pending: Some(Pending::new(external.to_vec())),
                notes: vec![],
            }
        );
    }

    #[test]
    fn rollback_without_the_stable_replica_set_restores_nothing_and_says_so() {
        // Only the new template's ReplicaSet is left.
        let d = fixtures::deployment("v2", true);
        let o = fixtures::observed(d, &[fixtures::replica_set("v2", 1, "2")]);
        let o = annotated(o, STATE_ANNOTATION, &state(Phase::Initializing).to_json());
        let next = state(Phase::RollingBack);
        let actions = [
            Action::RestoreStable {
                template_hash: hash_of("v1"),
                replacing: hash_of("v2"),
            },
            Action::MarkFailedRevision {
                hash: hash_of("v2"),
            },
        ];
        let plan = plan_commit(&o, &next, &actions, None);
        assert_eq!(
            plan.notes,
            vec![CommitNote::MissingTemplate {
                hash: hash_of("v1")
            }]
        );
        let write = plan.write.unwrap();
        assert_eq!(write.template, None);
        // Not rolling back to the template it has: stays paused.
        assert_eq!(write.paused, None);
        assert_eq!(
            write.annotations,
            annotations(&[
                (FAILED_REVISION_ANNOTATION, hash_of("v2")),
                (STATE_ANNOTATION, next.to_json()),
            ])
        );
        assert_eq!(plan.pending, None);
    }

    #[test]
    fn a_rollback_leaves_a_newer_template_alone() {
        let o = stored(Phase::Progressing { step: 1 });
        let actions = [Action::RestoreStable {
            template_hash: hash_of("v1"),
            replacing: hash_of("v3"),
        }];
        let plan = plan_commit(&o, &state(Phase::RollingBack), &actions, None);
        let write = plan.write.unwrap();
        assert_eq!((write.template, write.paused), (None, None));
        assert!(plan.notes.is_empty());
    }

    #[test]
    fn consumed_approval_and_acted_on_abort_are_removed() {
        let o = stored(Phase::WaitingForGate { step: 1 });
        let o = annotated(o, APPROVE_ANNOTATION, "true");
        let o = annotated(o, ABORT_ANNOTATION, "true");
        let next = state(Phase::Progressing { step: 2 });
        let plan = plan_commit(&o, &next, &[Action::ClearApproval], None);
        assert_eq!(
            plan.write.unwrap().annotations,
            annotations(&[
                (ABORT_ANNOTATION, String::from("true")),
                (STATE_ANNOTATION, next.to_json()),
            ]),
            "an abort is kept in flight until acted on"
        );
        let plan = plan_commit(&o, &state(Phase::RollingBack), &[Action::ClearAbort], None);
        assert_eq!(
            plan.write.unwrap().annotations,
            annotations(&[
                (APPROVE_ANNOTATION, String::from("true")),
                (STATE_ANNOTATION, state(Phase::RollingBack).to_json()),
            ])
        );
    }

    #[test]
    fn a_resting_phase_clears_a_stale_abort() {
        let o = annotated(stored(Phase::Idle), ABORT_ANNOTATION, "true");
        let plan = plan_commit(&o, &state(Phase::Idle), &[], None);
        assert_eq!(
            plan,
            CommitPlan {
                write: Some(TargetWrite {
                    precondition: Some(RESOURCE_VERSION.into()),
                    annotations: annotations(&[(STATE_ANNOTATION, state(Phase::Idle).to_json())]),
                    template: None,
                    paused: None,
                }),
                pending: None,
                notes: vec![],
            }
        );
    }

    #[test]
    fn an_unchanged_state_is_not_written() {
        let o = stored(Phase::Progressing { step: 0 });
        let next = state(Phase::Progressing { step: 0 });
        let none = CommitPlan {
            write: None,
            pending: None,
            notes: vec![],
        };
        assert_eq!(plan_commit(&o, &next, &[], None), none);
        // A new generation alone (bumped by canaryd's own write) is no change.
        let mut later = next.clone();
        later.observed_generation = Some(4);
        assert_eq!(plan_commit(&o, &later, &[], None), none);
        // Anything else is.
        let mut moved = next;
        moved.window_started_at = Some(1060);
        let write = plan_commit(&o, &moved, &[], None).write.unwrap();
        assert_eq!(
            write.annotations,
            annotations(&[(STATE_ANNOTATION, moved.to_json())])
        );
    }

    fn failing() -> Pending {
        let mut p = Pending::new(vec![
            event(Reason::CanaryStarted),
            Action::SetWeight { percent: 10 },
            event(Reason::StepAdvanced),
        ]);
        p.record_failure(1, "ingresses \"web-canary\" not found", 1000, "prod/web");
        p
    }

    #[test]
    fn a_decision_supersedes_a_failing_list() {
        let old = failing();
        let o = annotated(
            stored(Phase::Progressing { step: 1 }),
            PENDING_ANNOTATION,
            &old.to_json(),
        );
        let next = state(Phase::RollingBack);
        let actions = [
            event(Reason::ActionFailed),
            Action::RestoreStable {
                template_hash: hash_of("v1"),
                replacing: hash_of("v2"),
            },
            Action::DeleteCanary,
        ];
        let plan = plan_commit(&o, &next, &actions, Some(&old));
        // Unpublished Events first, the failed SetWeight dropped, no failure record.
        let new = [
            event(Reason::StepAdvanced),
            event(Reason::ActionFailed),
            Action::DeleteCanary,
        ];
        assert_eq!(plan.pending, Some(Pending::new(new.to_vec())));
        let write = plan.write.unwrap();
        assert_eq!(write.annotations.get(PENDING_ANNOTATION), Some(&list(&new)));
        assert!(write.template.is_some());
    }

    #[test]
    fn a_failing_list_stays_when_nothing_is_decided() {
        let old = failing();
        let o = annotated(
            stored(Phase::Progressing { step: 1 }),
            PENDING_ANNOTATION,
            &old.to_json(),
        );
        let next = state(Phase::Progressing { step: 1 });
        let plan = plan_commit(&o, &next, &[], Some(&old));
        assert_eq!((plan.write, plan.pending), (None, None));
        // The state moves on (a hold), the stored list and its record stay.
        let mut held = next;
        held.no_data_since = Some(1100);
        let plan = plan_commit(&o, &held, &[], Some(&old));
        assert_eq!(plan.pending, None);
        assert_eq!(
            plan.write.unwrap().annotations,
            annotations(&[
                (PENDING_ANNOTATION, old.to_json()),
                (STATE_ANNOTATION, held.to_json()),
            ])
        );
    }

    /// `spec.paused` after the commit of `next` on `o`.
    fn paused_after(o: &Observed, next: &RolloutState) -> bool {
        match plan_commit(o, next, &[], None).write {
            Some(w) => target::is_paused(&w.onto(&o.deployment)),
            None => target::is_paused(&o.deployment),
        }
    }

    #[test]
    fn the_target_is_paused_except_while_it_must_roll() {
        let unpaused = fixtures::observed(
            fixtures::deployment("v2", false),
            &[fixtures::replica_set("v1", fixtures::REPLICAS, "1")],
        );
        let rolled = fixtures::observed(
            fixtures::deployment("v2", false),
            &[fixtures::replica_set("v2", fixtures::REPLICAS, "2")],
        );
        assert!(rolled.rolled_out);
        let first = fixtures::observed(fixtures::deployment("v2", true), &[]);
        let mut newer = state(Phase::Promoting);
        newer.revision = Some(hash_of("v3"));
        let cases = [
            ("idle", &unpaused, state(Phase::Idle), true),
            ("initializing", &unpaused, state(Phase::Initializing), true),
            (
                "progressing",
                &in_flight(),
                state(Phase::Progressing { step: 0 }),
                true,
            ),
            (
                "gate",
                &in_flight(),
                state(Phase::WaitingForGate { step: 0 }),
                true,
            ),
            ("promoting", &in_flight(), state(Phase::Promoting), false),
            (
                "promoting, rolled out",
                &rolled,
                state(Phase::Promoting),
                true,
            ),
            ("promoting, newer template", &unpaused, newer, true),
            ("promoted", &rolled, state(Phase::Promoted), true),
            (
                "rolling back, template not restored",
                &unpaused,
                state(Phase::RollingBack),
                true,
            ),
            ("rolled back", &unpaused, state(Phase::RolledBack), true),
            ("failed", &unpaused, state(Phase::Failed), true),
            ("first ReplicaSet", &first, state(Phase::Idle), false),
        ];
        for (name, o, next, want) in cases {
            assert_eq!(paused_after(o, &next), want, "{name}");
        }
        // Unchanged: not part of the write.
        let plan = plan_commit(&in_flight(), &state(Phase::Idle), &[], None);
        assert_eq!(plan.write.unwrap().paused, None);
    }

    #[test]
    fn external_actions_keep_the_engine_order() {
        let o = stored(Phase::Initializing);
        let actions = [
            event(Reason::CanaryStarted),
            Action::ClearApproval,
            Action::EnsureBaseline {
                template_hash: hash_of("v1"),
                replicas: 1,
            },
            Action::MarkFailedRevision {
                hash: hash_of("v0"),
            },
            Action::EnsureCanary {
                template_hash: hash_of("v2"),
                replicas: 1,
            },
            Action::SetWeight { percent: 5 },
            Action::SwitchSelector {
                service: String::from("web"),
                to_version: String::from("v2"),
            },
            Action::DeleteBaseline,
            event(Reason::StepAdvanced),
        ];
        let external: Vec<Action> = actions
            .iter()
            .filter(|a| !matches!(a, Action::ClearApproval | Action::MarkFailedRevision { .. }))
            .cloned()
            .collect();
        assert_eq!(external.len(), 7);
        let plan = plan_commit(&o, &state(Phase::Progressing { step: 0 }), &actions, None);
        assert_eq!(plan.pending, Some(Pending::new(external.clone())));
        assert_eq!(
            plan.write.unwrap().annotations.get(PENDING_ANNOTATION),
            Some(&list(&external))
        );
    }

    #[test]
    fn the_write_is_preconditioned_on_the_observed_resource_version() {
        let mut o = stored(Phase::Progressing { step: 1 });
        o.deployment.metadata.resource_version = Some(String::from("9001"));
        let actions = [Action::RestoreStable {
            template_hash: hash_of("v1"),
            replacing: hash_of("v2"),
        }];
        let next = state(Phase::RollingBack);
        let write = plan_commit(&o, &next, &actions, None).write.unwrap();
        assert_eq!(write.precondition.as_deref(), Some("9001"));
        // The object written: the observed one with the write applied.
        let d = write.onto(&o.deployment);
        assert_eq!(d.metadata.resource_version.as_deref(), Some("9001"));
        assert_eq!(
            (d.metadata.name.as_deref(), d.metadata.namespace.as_deref()),
            (Some(fixtures::NAME), Some(fixtures::NAMESPACE))
        );
        assert_eq!(target::desired_hash(&d), hash_of("v1"));
        assert!(!target::is_paused(&d));
        assert_eq!(d.metadata.annotations, Some(write.annotations.clone()));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(fixtures::REPLICAS));
        assert_eq!(
            target::annotation(&o.deployment, STATE_ANNOTATION),
            Some(state(Phase::Progressing { step: 1 }).to_json().as_str()),
            "the observed object is left as read"
        );
    }
}
