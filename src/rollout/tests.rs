//! Unit tests of every transition, with scripted verdicts.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::judge::{Decision, Verdict};
use crate::observation::{ArmValue, Histogram, MetricWindow, Sample, WindowObservation};
use crate::policy::{
    AlertPolicy, Analysis, BaselineMode, BlueGreenStrategy, CanarySize, CanaryStrategy, JudgeMode,
    MetricKind, OnNoData, Policy, PrometheusConfig, Step, Strategy, Traffic,
};

const T0: u64 = 1_700_000_000;
const NEW: &str = "new1";
const NEWER: &str = "new2";
const OLD: &str = "old0";
const MIN: u64 = 60;

fn step_of(size: Option<CanarySize>, weight: Option<u8>, observe_secs: u64) -> Step {
    Step {
        size,
        weight,
        observe: Duration::from_secs(observe_secs),
        gate: false,
    }
}

/// The classic plan: 1 pod for 10m, then 10% / 50% / 100% for 2m each.
fn canary_policy() -> Policy {
    Policy {
        source: PathBuf::from("test.yaml"),
        service: "myapp".into(),
        namespace: "default".into(),
        deployment: "myapp".into(),
        strategy: Strategy::Canary(CanaryStrategy {
            steps: vec![
                step_of(Some(CanarySize::Replicas(1)), None, 10 * MIN),
                step_of(Some(CanarySize::Percent(10.0)), None, 2 * MIN),
                step_of(Some(CanarySize::Percent(50.0)), None, 2 * MIN),
                step_of(Some(CanarySize::Percent(100.0)), None, 2 * MIN),
            ],
        }),
        traffic: Traffic::Replicas,
        baseline: BaselineMode::Fresh,
        progress_deadline: Duration::from_secs(10 * MIN),
        analysis: Analysis {
            prometheus: PrometheusConfig {
                url: "http://prometheus:9090".into(),
                auth: None,
                ca_file: None,
            },
            interval: Duration::from_secs(MIN),
            max_duration: Duration::from_secs(48 * MIN),
            alpha: 0.05,
            on_no_data: OnNoData::Hold,
            min_requests_per_step: 0,
            mode: JudgeMode::Sequential,
            metrics: crate::policy::default_metrics(),
        },
        alerts: AlertPolicy {
            matchers: Vec::new(),
            guard_window: Duration::from_secs(10 * MIN),
        },
        notifications: Vec::new(),
    }
}

fn ingress_policy() -> Policy {
    let mut p = canary_policy();
    p.traffic = Traffic::IngressNginx {
        ingress: "myapp".into(),
    };
    p.strategy = Strategy::Canary(CanaryStrategy {
        steps: vec![
            step_of(None, Some(5), 2 * MIN),
            step_of(None, Some(25), 2 * MIN),
            step_of(None, Some(100), 2 * MIN),
        ],
    });
    p
}

fn blue_green_policy() -> Policy {
    let mut p = canary_policy();
    p.strategy = Strategy::BlueGreen(BlueGreenStrategy {
        active_service: "myapp".into(),
        preview_service: Some("myapp-preview".into()),
        version_label: "version".into(),
        observe: Duration::from_secs(5 * MIN),
        gate: false,
        keep_old_for: Duration::from_secs(15 * MIN),
    });
    p
}

fn verdict(decision: Decision) -> Verdict {
    Verdict::new(decision, format!("scripted {decision:?}"))
}

/// Drives the engine tick by tick with a scripted judge.
struct Sim {
    policy: Policy,
    state: RolloutState,
    input: Input,
    decision: Decision,
    window_no: u32,
}

impl Sim {
    fn new(policy: Policy) -> Self {
        let replicas = 10;
        Sim {
            policy,
            state: RolloutState::new(),
            input: Input {
                now: T0,
                target: Target {
                    generation: 1,
                    stable_hash: OLD.into(),
                    desired_hash: OLD.into(),
                    replicas,
                    stable: PodCounts {
                        ready: replicas,
                        desired: replicas,
                    },
                    stable_version: Some("v1".into()),
                    desired_version: Some("v1".into()),
                    ..Target::default()
                },
                ..Input::default()
            },
            decision: Decision::Continue,
            window_no: 0,
        }
    }

    /// One tick at the current input; asserts that re-feeding the same input
    /// to the new state issues nothing (idempotence of every transition).
    fn tick(&mut self) -> Vec<Action> {
        let decision = self.decision;
        let judge = |_: &Analysis, _: &crate::judge::Evidence| verdict(decision);
        let (next, actions) = step_with(&self.policy, &self.state, &self.input, judge);
        if !actions.is_empty() {
            // The controller replaces a failing pending list with whatever
            // the engine decided (controller/pending.rs).
            self.input.failing = None;
        }
        let (again, repeated) = step_with(&self.policy, &next, &self.input, judge);
        assert!(
            repeated.is_empty(),
            "same input twice issued {repeated:?} after {actions:?}"
        );
        assert_eq!(again.phase, next.phase);
        self.state = next;
        self.input.window = None;
        actions
    }

    fn at(&mut self, offset_secs: u64) -> &mut Self {
        self.input.now = T0 + offset_secs;
        self
    }

    fn release(&mut self, hash: &str) -> &mut Self {
        self.input.target.desired_hash = hash.into();
        self.input.target.generation += 1;
        self.input.target.desired_version = Some(format!("v-{hash}"));
        self
    }

    /// Canary and baseline pods of the current revision are all up.
    fn pods_up(&mut self) -> &mut Self {
        let plan = self
            .state
            .phase
            .step()
            .or(Some(0))
            .and_then(|s| planned_step(&self.policy, s, self.input.target.replicas))
            .unwrap();
        let t = &mut self.input.target;
        t.canary_hash = self.state.revision.clone().unwrap_or_default();
        t.canary = PodCounts {
            ready: plan.canary_replicas,
            desired: plan.canary_replicas,
        };
        t.baseline = PodCounts {
            ready: plan.baseline_replicas,
            desired: plan.baseline_replicas,
        };
        self
    }

    /// A window with usable data for every metric (100 canary requests).
    fn window(&mut self) -> &mut Self {
        self.window_with(|_| Some(100.0))
    }

    /// A window whose canary arm per metric serves `canary(metric)` requests,
    /// or has no data (`None`, like a failed query).
    fn window_with(&mut self, canary: impl Fn(&str) -> Option<f64>) -> &mut Self {
        self.window_no += 1;
        let metrics = self
            .policy
            .analysis
            .metrics
            .iter()
            .map(|m| MetricWindow {
                name: m.name.clone(),
                canary: match canary(&m.name) {
                    Some(n) => ArmValue::Sample(sample(&m.kind, n)),
                    None => ArmValue::NoData("metric source failed: scripted".into()),
                },
                baseline: ArmValue::Sample(sample(&m.kind, 100.0)),
            })
            .collect();
        self.input.window = Some(WindowObservation {
            at_secs: f64::from(self.window_no) * 60.0,
            expected_canary_share: None,
            metrics,
        });
        self
    }

    /// The Deployment now runs `hash` on all pods, canary and baseline gone.
    fn target_runs(&mut self, hash: &str) -> &mut Self {
        let t = &mut self.input.target;
        t.stable_hash = hash.into();
        t.desired_hash = hash.into();
        t.canary = PodCounts::default();
        t.baseline = PodCounts::default();
        t.canary_hash.clear();
        self
    }

    /// Starts a rollout of NEW and brings it to step 0 of the analysis at `t = 0`.
    fn analysing(&mut self) {
        self.release(NEW).tick();
        self.pods_up().tick();
        assert_eq!(self.state.phase, Phase::Progressing { step: 0 });
    }

    /// Feeds one window per minute from `from` to `to` minutes after T0.
    fn windows(&mut self, from: u64, to: u64) -> Vec<Action> {
        let mut all = Vec::new();
        for m in from..=to {
            all.extend(self.at(m * MIN).window().pods_up().tick());
        }
        all
    }
}

/// One arm's data of `requests` requests for a metric of `kind`.
fn sample(kind: &MetricKind, requests: f64) -> Sample {
    match kind {
        MetricKind::Errors { .. } => Sample::Counts {
            errors: 0.0,
            total: requests,
        },
        MetricKind::Latency { .. } => Sample::Buckets(Histogram {
            le: vec![0.1, f64::INFINITY],
            counts: vec![requests * 0.9, requests],
        }),
        MetricKind::Gauge { .. } => Sample::Gauge(1.0),
    }
}

fn reasons(actions: &[Action]) -> Vec<Reason> {
    actions.iter().filter_map(Action::reason).collect()
}

fn non_events(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| a.reason().is_none())
        .cloned()
        .collect()
}

fn message_of(actions: &[Action], wanted: Reason) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Event {
                reason, message, ..
            } if *reason == wanted => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {wanted:?} event in {actions:?}"))
}

fn ensure_canary(hash: &str, replicas: u32) -> Action {
    Action::EnsureCanary {
        template_hash: hash.into(),
        replicas,
    }
}

fn ensure_baseline(replicas: u32) -> Action {
    Action::EnsureBaseline {
        template_hash: OLD.into(),
        replicas,
    }
}

fn restore(replacing: &str) -> Action {
    Action::RestoreStable {
        template_hash: OLD.into(),
        replacing: replacing.into(),
    }
}

// ---- Idle / start -----------------------------------------------------------

#[test]
fn idle_without_a_new_template_does_nothing() {
    let mut sim = Sim::new(canary_policy());
    assert!(sim.tick().is_empty());
    assert_eq!(sim.state.phase, Phase::Idle);
}

#[test]
fn first_deployment_without_stable_pods_is_not_a_canary() {
    let mut sim = Sim::new(canary_policy());
    sim.input.target.stable_hash.clear();
    assert!(sim.release(NEW).tick().is_empty());
    assert_eq!(sim.state.phase, Phase::Idle);
}

#[test]
fn new_template_starts_canary_beside_fresh_baseline() {
    let mut sim = Sim::new(canary_policy());
    let actions = sim.release(NEW).tick();
    assert_eq!(reasons(&actions), vec![Reason::CanaryStarted]);
    assert_eq!(
        non_events(&actions),
        vec![ensure_canary(NEW, 1), ensure_baseline(1)]
    );
    assert_eq!(sim.state.phase, Phase::Initializing);
    assert_eq!(sim.state.revision.as_deref(), Some(NEW));
    assert_eq!(sim.state.stable_hash.as_deref(), Some(OLD));
}

#[test]
fn stable_baseline_creates_no_baseline_deployment() {
    let mut policy = canary_policy();
    policy.baseline = BaselineMode::Stable;
    let mut sim = Sim::new(policy);
    let actions = sim.release(NEW).tick();
    assert_eq!(non_events(&actions), vec![ensure_canary(NEW, 1)]);
}

#[test]
fn router_holds_weight_at_zero_until_ready_then_sets_first_weight() {
    let mut sim = Sim::new(ingress_policy());
    let actions = sim.release(NEW).tick();
    assert_eq!(
        non_events(&actions),
        vec![
            Action::SetWeight { percent: 0 },
            ensure_canary(NEW, 1),
            ensure_baseline(1)
        ]
    );
    let actions = sim.at(10).pods_up().tick();
    assert_eq!(non_events(&actions), vec![Action::SetWeight { percent: 5 }]);
    assert_eq!(reasons(&actions), vec![Reason::AnalysisStarted]);
}

// ---- Initializing -------------------------------------------------------------

#[test]
fn initializing_waits_for_pods_of_this_revision() {
    let mut sim = Sim::new(canary_policy());
    sim.release(NEW).tick();
    // Ready pods of another template do not count.
    sim.at(30).pods_up();
    sim.input.target.canary_hash = "something-else".into();
    assert!(sim.tick().is_empty());
    assert_eq!(sim.state.phase, Phase::Initializing);
    sim.at(40).pods_up();
    let actions = sim.tick();
    assert_eq!(reasons(&actions), vec![Reason::AnalysisStarted]);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
    assert_eq!(sim.state.analysis_started_at, Some(T0 + 40));
    assert_eq!(next_window_close(&sim.policy, &sim.state), Some(T0 + 100));
}

#[test]
fn never_ready_canary_rolls_back_at_progress_deadline() {
    let mut sim = Sim::new(canary_policy());
    sim.release(NEW).tick();
    assert!(sim.at(10 * MIN - 1).tick().is_empty());
    let actions = sim.at(10 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::ProgressDeadlineExceeded]);
    assert!(message_of(&actions, Reason::ProgressDeadlineExceeded).contains("canary 0/1 ready"));
    assert_eq!(
        non_events(&actions),
        vec![
            Action::DeleteCanary,
            Action::DeleteBaseline,
            restore(NEW),
            Action::MarkFailedRevision { hash: NEW.into() },
        ]
    );
    assert_eq!(sim.state.phase, Phase::RollingBack);
    // Rolled back once the stable template is back and the canary is gone.
    let actions = sim.at(11 * MIN).target_runs(OLD).tick();
    assert_eq!(reasons(&actions), vec![Reason::RolledBack]);
    assert_eq!(sim.state.phase, Phase::RolledBack);
}

// ---- Progressing ------------------------------------------------------------

#[test]
fn step_advances_only_after_observe_time_with_a_healthy_verdict() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    // Nine healthy windows: observe (10m) not over yet.
    let actions = sim.windows(1, 9);
    assert!(reasons(&actions).is_empty(), "{actions:?}");
    let actions = sim.windows(10, 10);
    assert_eq!(reasons(&actions), vec![Reason::StepAdvanced]);
    // 10% of 10 replicas is still 1 pod: nothing to scale.
    assert!(non_events(&actions).is_empty());
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
    assert!(message_of(&actions, Reason::StepAdvanced).contains("scripted Continue"));
    // 50%: canary and baseline scale to 5.
    let actions = sim.windows(11, 12);
    assert_eq!(
        non_events(&actions),
        vec![ensure_canary(NEW, 5), ensure_baseline(5)]
    );
    assert_eq!(sim.state.phase, Phase::Progressing { step: 2 });
}

#[test]
fn observe_time_alone_does_not_advance_without_a_window_in_the_step() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 10);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
    // Observe time of step 2 is over, but no window has closed in it.
    assert!(sim.at(13 * MIN).tick().is_empty());
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
}

#[test]
fn promote_verdict_advances_like_continue() {
    let mut sim = Sim::new(canary_policy());
    sim.decision = Decision::Promote;
    sim.analysing();
    sim.windows(1, 10);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
}

#[test]
fn rollback_verdict_rolls_back_at_once_with_its_numbers() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 2);
    sim.decision = Decision::Rollback;
    let actions = sim.windows(3, 3);
    assert_eq!(reasons(&actions), vec![Reason::AnalysisFailed]);
    let message = message_of(&actions, Reason::AnalysisFailed);
    assert!(message.contains("step 1/4: scripted Rollback"), "{message}");
    assert_eq!(sim.state.phase, Phase::RollingBack);
    assert_eq!(sim.state.failed_revision.as_deref(), Some(NEW));
    assert_eq!(sim.state.verdicts.len(), 3);
}

#[test]
fn full_canary_plan_promotes_then_completes_after_guard_window() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    let actions = sim.windows(1, 16);
    assert_eq!(
        reasons(&actions),
        vec![
            Reason::StepAdvanced,
            Reason::StepAdvanced,
            Reason::StepAdvanced,
            Reason::AnalysisPassed
        ]
    );
    assert_eq!(
        non_events(&actions),
        vec![
            ensure_canary(NEW, 5),
            ensure_baseline(5),
            ensure_canary(NEW, 10),
            ensure_baseline(10),
            Action::Promote {
                template_hash: NEW.into()
            },
        ]
    );
    assert_eq!(sim.state.phase, Phase::Promoting);
    // Still rolling: nothing.
    assert!(sim.at(17 * MIN).tick().is_empty());
    sim.input.target.stable_hash = NEW.into();
    let actions = sim.at(18 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::Promoted]);
    assert_eq!(
        non_events(&actions),
        vec![Action::DeleteCanary, Action::DeleteBaseline]
    );
    assert_eq!(sim.state.phase, Phase::Promoted);
    sim.target_runs(NEW);
    assert!(sim.at(27 * MIN).tick().is_empty());
    let actions = sim.at(28 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::RolloutComplete]);
    assert_eq!(sim.state.phase, Phase::Idle);
    assert_eq!(sim.state.stable_hash.as_deref(), Some(NEW));
}

#[test]
fn ingress_weights_step_up_and_return_to_zero_after_promotion() {
    let mut sim = Sim::new(ingress_policy());
    sim.input.target.replicas = 4;
    let mut all = sim.release(NEW).tick();
    all.extend(sim.pods_up().tick());
    for m in 1..=6 {
        sim.at(m * MIN).window().pods_up();
        all.extend(sim.tick());
    }
    sim.input.target.stable_hash = NEW.into();
    all.extend(sim.at(7 * MIN).tick());
    let weights: Vec<u8> = all
        .iter()
        .filter_map(|a| match a {
            Action::SetWeight { percent } => Some(*percent),
            _ => None,
        })
        .collect();
    assert_eq!(weights, vec![0, 5, 25, 100, 0]);
    assert_eq!(sim.state.phase, Phase::Promoted);
}

// ---- missing data -----------------------------------------------------------

#[test]
fn missing_data_holds_then_rolls_back_at_max_duration() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.decision = Decision::Inconclusive;
    let actions = sim.windows(1, 20);
    // Announced once for the whole stretch, and never advanced.
    assert_eq!(reasons(&actions), vec![Reason::NoData]);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
    // Data comes back for a while, then goes again: a new stretch is announced.
    sim.decision = Decision::Continue;
    sim.windows(21, 21);
    sim.decision = Decision::Inconclusive;
    let actions = sim.windows(22, 47);
    assert_eq!(reasons(&actions), vec![Reason::NoData]);
    let actions = sim.windows(48, 48);
    assert_eq!(reasons(&actions), vec![Reason::NoDataRollback]);
    let message = message_of(&actions, Reason::NoDataRollback);
    assert!(message.contains("maxDuration 48m"), "{message}");
    assert!(message.contains("onNoData: hold"), "{message}");
    assert_eq!(sim.state.phase, Phase::RollingBack);
}

#[test]
fn max_duration_applies_even_without_a_new_window() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.decision = Decision::Inconclusive;
    sim.windows(1, 1);
    let actions = sim.at(48 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::NoDataRollback]);
}

#[test]
fn healthy_data_after_max_duration_is_not_a_no_data_rollback() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.decision = Decision::Inconclusive;
    sim.windows(1, 40);
    sim.decision = Decision::Continue;
    // The step had observed long enough: the first healthy window ends the
    // hold and advances it.
    let actions = sim.windows(41, 42);
    assert_eq!(
        reasons(&actions),
        vec![Reason::HoldEnded, Reason::StepAdvanced]
    );
    assert_eq!(sim.state.no_data_since, None);
    assert!(sim
        .windows(43, 48)
        .iter()
        .all(|a| a.reason() != Some(Reason::NoDataRollback)));
}

#[test]
fn on_no_data_rollback_rolls_back_at_once() {
    let mut policy = canary_policy();
    policy.analysis.on_no_data = OnNoData::Rollback;
    let mut sim = Sim::new(policy);
    sim.analysing();
    sim.decision = Decision::Inconclusive;
    let actions = sim.windows(1, 1);
    assert_eq!(reasons(&actions), vec![Reason::NoDataRollback]);
    assert!(message_of(&actions, Reason::NoDataRollback).contains("onNoData: rollback"));
}

#[test]
fn repeated_window_is_recorded_once() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.at(MIN).window();
    let window = sim.input.window.clone();
    sim.tick();
    sim.input.window = window;
    sim.at(MIN + 5).tick();
    assert_eq!(sim.state.verdicts.len(), 1);
}

#[test]
fn verdict_history_is_bounded() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.decision = Decision::Inconclusive;
    sim.windows(1, 40);
    assert_eq!(sim.state.verdicts.len(), MAX_VERDICTS);
    assert_eq!(
        sim.state.verdicts[0].at,
        T0 + (41 - MAX_VERDICTS as u64) * MIN
    );
}

#[test]
fn canary_pods_missing_in_a_later_step_roll_back_at_deadline() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 12);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 2 });
    // The 5-pod canary never gets more than its first pod ready.
    for m in 13..=21 {
        sim.at(m * MIN).window();
        assert!(sim.tick().is_empty(), "minute {m}");
    }
    let actions = sim.at(22 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::ProgressDeadlineExceeded]);
    assert!(message_of(&actions, Reason::ProgressDeadlineExceeded).contains("canary 1/5 ready"));
}

// ---- revisions --------------------------------------------------------------

#[test]
fn newer_revision_mid_analysis_restarts_on_the_newest() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 3);
    let actions = sim.at(3 * MIN + 10).release(NEWER).tick();
    assert_eq!(
        reasons(&actions),
        vec![Reason::RevisionSuperseded, Reason::CanaryStarted]
    );
    assert_eq!(
        non_events(&actions),
        vec![ensure_canary(NEWER, 1), ensure_baseline(1)]
    );
    assert_eq!(sim.state.phase, Phase::Initializing);
    assert_eq!(sim.state.revision.as_deref(), Some(NEWER));
    assert_eq!(sim.state.evidence, crate::judge::Evidence::default());
    assert!(sim.state.verdicts.is_empty());
    assert_eq!(sim.state.failed_revision, None);
    // The old canary's ready pods do not count for the new revision.
    assert!(sim.at(3 * MIN + 20).tick().is_empty());
    sim.pods_up().tick();
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
}

#[test]
fn template_back_to_stable_cancels_quietly() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    let actions = sim.at(MIN).release(OLD).tick();
    assert_eq!(reasons(&actions), vec![Reason::Canceled]);
    assert_eq!(
        non_events(&actions),
        vec![Action::DeleteCanary, Action::DeleteBaseline]
    );
    assert_eq!(sim.state.phase, Phase::Idle);
    assert_eq!(sim.state.failed_revision, None);
}

#[test]
fn failed_revision_is_not_retried_until_the_template_changes() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.decision = Decision::Rollback;
    sim.windows(1, 1);
    // A GitOps tool keeps the bad template: the stable pods are back, the
    // template still says NEW.
    sim.at(2 * MIN).target_runs(OLD);
    sim.input.target.desired_hash = NEW.into();
    sim.tick();
    assert_eq!(sim.state.phase, Phase::RolledBack);
    assert!(sim.at(30 * MIN).tick().is_empty());
    assert_eq!(sim.state.phase, Phase::RolledBack);
    let actions = sim.at(31 * MIN).release(NEWER).tick();
    assert_eq!(reasons(&actions), vec![Reason::CanaryStarted]);
}

#[test]
fn rollback_not_completing_in_time_fails() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.input.abort = true;
    sim.at(MIN).tick();
    sim.input.abort = false;
    assert!(sim.at(10 * MIN).tick().is_empty());
    let actions = sim.at(11 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::RollbackStalled]);
    assert_eq!(sim.state.phase, Phase::Failed);
    // A new template starts over.
    let actions = sim.at(12 * MIN).release(NEWER).tick();
    assert_eq!(reasons(&actions), vec![Reason::CanaryStarted]);
}

// ---- gates, abort, alerts ---------------------------------------------------

#[test]
fn gated_step_waits_for_approval() {
    let mut policy = canary_policy();
    if let Strategy::Canary(c) = &mut policy.strategy {
        c.steps[0].gate = true;
    }
    let mut sim = Sim::new(policy);
    sim.analysing();
    let actions = sim.windows(1, 10);
    assert_eq!(reasons(&actions), vec![Reason::WaitingForApproval]);
    assert_eq!(sim.state.phase, Phase::WaitingForGate { step: 0 });
    // Still analysing while waiting, but no repeated events.
    assert!(sim.windows(11, 15).is_empty());
    sim.input.approved = true;
    let actions = sim.at(15 * MIN + 30).tick();
    assert_eq!(
        reasons(&actions),
        vec![Reason::GateApproved, Reason::StepAdvanced]
    );
    assert_eq!(non_events(&actions), vec![Action::ClearApproval]);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
}

#[test]
fn regression_while_waiting_for_approval_still_rolls_back() {
    let mut policy = canary_policy();
    if let Strategy::Canary(c) = &mut policy.strategy {
        c.steps[0].gate = true;
    }
    let mut sim = Sim::new(policy);
    sim.analysing();
    sim.windows(1, 10);
    sim.decision = Decision::Rollback;
    let actions = sim.windows(11, 11);
    assert_eq!(reasons(&actions), vec![Reason::AnalysisFailed]);
}

#[test]
fn abort_rolls_back_and_clears_the_request() {
    let mut sim = Sim::new(ingress_policy());
    sim.analysing();
    sim.input.abort = true;
    let actions = sim.at(MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::Aborted]);
    assert_eq!(
        non_events(&actions),
        vec![
            Action::SetWeight { percent: 0 },
            Action::DeleteCanary,
            Action::DeleteBaseline,
            restore(NEW),
            Action::MarkFailedRevision { hash: NEW.into() },
            Action::ClearAbort,
        ]
    );
}

#[test]
fn abort_while_initializing_rolls_back() {
    let mut sim = Sim::new(canary_policy());
    sim.release(NEW).tick();
    sim.input.abort = true;
    let actions = sim.at(5).tick();
    assert_eq!(reasons(&actions), vec![Reason::Aborted]);
    assert_eq!(sim.state.phase, Phase::RollingBack);
}

#[test]
fn alert_during_analysis_rolls_back_at_once() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.input.alerts = vec!["HighErrorRate".into()];
    let actions = sim.at(30).tick();
    assert_eq!(reasons(&actions), vec![Reason::AlertRollback]);
    assert!(message_of(&actions, Reason::AlertRollback).contains("HighErrorRate"));
}

fn promoted_canary() -> Sim {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 16);
    sim.input.target.stable_hash = NEW.into();
    sim.at(17 * MIN).tick();
    assert_eq!(sim.state.phase, Phase::Promoted);
    sim.target_runs(NEW);
    sim
}

#[test]
fn alert_in_guard_window_after_promotion_rolls_back() {
    let mut sim = promoted_canary();
    sim.input.alerts = vec!["HighLatency".into()];
    let actions = sim.at(20 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::AlertRollback]);
    // Canary and baseline are already gone: only the template goes back.
    assert_eq!(
        non_events(&actions),
        vec![
            restore(NEW),
            Action::MarkFailedRevision { hash: NEW.into() }
        ]
    );
    sim.at(21 * MIN).target_runs(OLD);
    sim.input.target.desired_hash = OLD.into();
    let actions = sim.tick();
    assert_eq!(reasons(&actions), vec![Reason::RolledBack]);
}

#[test]
fn alert_in_promoting_rolls_back() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 16);
    assert_eq!(sim.state.phase, Phase::Promoting);
    sim.input.alerts = vec!["HighErrorRate".into()];
    let actions = sim.at(16 * MIN + 30).tick();
    assert_eq!(reasons(&actions), vec![Reason::AlertRollback]);
}

#[test]
fn promotion_not_completing_in_time_rolls_back() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 16);
    let actions = sim.at(26 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::ProgressDeadlineExceeded]);
    assert_eq!(sim.state.phase, Phase::RollingBack);
}

#[test]
fn alert_after_guard_window_is_ignored() {
    let mut sim = promoted_canary();
    sim.at(27 * MIN).tick();
    assert_eq!(sim.state.phase, Phase::Idle);
    sim.input.alerts = vec!["HighLatency".into()];
    assert!(sim.at(28 * MIN).tick().is_empty());
}

#[test]
fn newer_revision_during_guard_window_starts_its_own_rollout() {
    let mut sim = promoted_canary();
    let actions = sim.at(20 * MIN).release(NEWER).tick();
    assert_eq!(
        reasons(&actions),
        vec![Reason::RolloutComplete, Reason::CanaryStarted]
    );
    assert_eq!(sim.state.revision.as_deref(), Some(NEWER));
    assert_eq!(sim.state.stable_hash.as_deref(), Some(NEW));
}

// ---- blue-green -------------------------------------------------------------

fn switched_blue_green() -> (Sim, Vec<Action>) {
    let mut sim = Sim::new(blue_green_policy());
    let mut all = sim.release(NEW).tick();
    all.extend(sim.pods_up().tick());
    all.extend(sim.windows(1, 5));
    assert_eq!(sim.state.phase, Phase::Promoted);
    (sim, all)
}

#[test]
fn blue_green_runs_new_version_at_full_size_then_switches() {
    let (sim, actions) = switched_blue_green();
    assert_eq!(
        reasons(&actions),
        vec![
            Reason::CanaryStarted,
            Reason::AnalysisStarted,
            Reason::AnalysisPassed,
            Reason::SwitchedTraffic
        ]
    );
    assert_eq!(
        non_events(&actions),
        vec![
            ensure_canary(NEW, 10),
            Action::SwitchSelector {
                service: "myapp-preview".into(),
                to_version: "v-new1".into()
            },
            Action::SwitchSelector {
                service: "myapp".into(),
                to_version: "v-new1".into()
            },
        ]
    );
    assert_eq!(sim.state.promoted_at, Some(T0 + 5 * MIN));
}

#[test]
fn blue_green_switches_back_on_alert_in_guard_window() {
    let (mut sim, _) = switched_blue_green();
    sim.input.alerts = vec!["HighErrorRate".into()];
    let actions = sim.at(12 * MIN).tick();
    assert_eq!(
        reasons(&actions),
        vec![Reason::AlertRollback, Reason::SwitchedBack]
    );
    assert_eq!(
        non_events(&actions),
        vec![
            Action::SwitchSelector {
                service: "myapp".into(),
                to_version: "v1".into()
            },
            Action::DeleteCanary,
            restore(NEW),
            Action::MarkFailedRevision { hash: NEW.into() },
        ]
    );
    sim.at(13 * MIN).target_runs(OLD).tick();
    assert_eq!(sim.state.phase, Phase::RolledBack);
}

#[test]
fn blue_green_retires_old_version_after_keep_old_for() {
    let (mut sim, _) = switched_blue_green();
    // keepOldFor (15m) is longer than the guard window (10m).
    assert!(sim.at(19 * MIN).tick().is_empty());
    let actions = sim.at(20 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::Promoted]);
    assert_eq!(
        non_events(&actions),
        vec![Action::Promote {
            template_hash: NEW.into()
        }]
    );
    assert_eq!(sim.state.phase, Phase::Promoting);
    // Alerts no longer switch back once the old version is being retired.
    sim.input.alerts = vec!["HighErrorRate".into()];
    sim.input.target.stable_hash = NEW.into();
    let actions = sim.at(21 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::RolloutComplete]);
    assert_eq!(non_events(&actions), vec![Action::DeleteCanary]);
    assert_eq!(sim.state.phase, Phase::Idle);
}

#[test]
fn blue_green_without_a_new_version_label_is_rejected_once() {
    let mut sim = Sim::new(blue_green_policy());
    sim.release(NEW);
    sim.input.target.desired_version = Some("v1".into());
    let actions = sim.tick();
    assert_eq!(reasons(&actions), vec![Reason::InvalidTarget]);
    assert_eq!(sim.state.phase, Phase::Failed);
    assert!(sim.at(MIN).tick().is_empty());
}

// ---- plan, share, state -----------------------------------------------------

#[test]
fn planned_steps_follow_sizes_and_weights() {
    let policy = canary_policy();
    let pods: Vec<u32> = (0..4)
        .map(|i| planned_step(&policy, i, 3).unwrap().canary_replicas)
        .collect();
    assert_eq!(pods, vec![1, 1, 2, 3]);
    assert_eq!(planned_step(&policy, 4, 3), None);
    let ingress = ingress_policy();
    let p = planned_step(&ingress, 1, 10).unwrap();
    assert_eq!((p.canary_replicas, p.weight), (3, Some(25)));
    assert_eq!(step_count(&blue_green_policy()), 1);
}

#[test]
fn expected_share_by_traffic_and_baseline_mode() {
    let pods = ReadyPods {
        canary: 1,
        baseline: 1,
        stable: 10,
    };
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
    let mut policy = canary_policy();
    assert!(close(expected_canary_share(&policy, None, pods), 0.5));
    policy.baseline = BaselineMode::Stable;
    assert!(close(
        expected_canary_share(&policy, None, pods),
        1.0 / 11.0
    ));
    let mut ingress = ingress_policy();
    ingress.baseline = BaselineMode::Stable;
    let no_baseline = ReadyPods {
        baseline: 0,
        ..pods
    };
    assert!(close(
        expected_canary_share(&ingress, Some(25), no_baseline),
        0.25
    ));
    // Fresh baseline behind the primary Service: it gets 1/11 of the other 75%.
    ingress.baseline = BaselineMode::Fresh;
    let base = 0.75 / 11.0;
    assert!(close(
        expected_canary_share(&ingress, Some(25), pods),
        0.25 / (0.25 + base)
    ));
    assert_eq!(
        expected_canary_share(&blue_green_policy(), None, pods),
        None
    );
    let none_ready = ReadyPods::default();
    assert_eq!(
        expected_canary_share(&canary_policy(), None, none_ready),
        None
    );
}

#[test]
fn state_round_trips_through_json() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 3);
    let json = sim.state.to_json();
    assert!(json.starts_with("{\"version\":1,"), "{json}");
    assert!(json.contains("\"phase\":{\"name\":\"Progressing\",\"step\":0}"));
    assert_eq!(RolloutState::from_json(&json).unwrap(), sim.state);
}

#[test]
fn unknown_state_versions_are_rejected() {
    let json = RolloutState::new()
        .to_json()
        .replace("\"version\":1", "\"version\":2");
    let err = RolloutState::from_json(&json).unwrap_err();
    assert!(matches!(
        err,
        StateError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    assert!(err.to_string().contains("version 2 is not supported"));
    assert!(matches!(
        RolloutState::from_json("{\"phase\":{\"name\":\"Idle\"}}"),
        Err(StateError::MissingVersion)
    ));
    assert!(matches!(
        RolloutState::from_json("not json"),
        Err(StateError::Malformed(_))
    ));
}

#[test]
fn format_secs_is_compact() {
    assert_eq!(format_secs(0), "0s");
    assert_eq!(format_secs(45), "45s");
    assert_eq!(format_secs(600), "10m");
    assert_eq!(format_secs(150), "2m30s");
    assert_eq!(format_secs(3900), "1h5m");
}

// ---- Fresh evidence per step --------------------------------------------------

impl Sim {
    /// Feeds one window per minute from `from` to `to`, the canary of each
    /// metric serving `canary(metric)` requests (`None`: no data).
    fn windows_with(
        &mut self,
        from: u64,
        to: u64,
        canary: impl Fn(&str) -> Option<f64> + Copy,
    ) -> Vec<Action> {
        let mut all = Vec::new();
        for m in from..=to {
            all.extend(self.at(m * MIN).window_with(canary).pods_up().tick());
        }
        all
    }
}

fn outage(_: &str) -> Option<f64> {
    None
}

#[test]
fn outage_mid_step_holds_the_step_while_the_judge_says_continue() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 10);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
    sim.windows(11, 11);
    // The metric source fails for 6 windows; the (scripted) judge still
    // says Continue on cumulative evidence, as the real one did before.
    let actions = sim.windows_with(12, 17, outage);
    assert_eq!(reasons(&actions), vec![Reason::NoData], "{actions:?}");
    assert!(non_events(&actions).is_empty());
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
    assert_eq!(sim.state.hold, Some(HoldCause::NoData));
    let message = message_of(&actions, Reason::NoData);
    assert!(message.contains("holding step 2/4"), "{message}");
    assert!(message.contains("maxDuration 48m"), "{message}");
    // Data returns: the hold ends and the step, observed long enough, moves on.
    let actions = sim.windows(18, 18);
    assert_eq!(
        reasons(&actions),
        vec![Reason::HoldEnded, Reason::StepAdvanced]
    );
    assert!(message_of(&actions, Reason::HoldEnded).contains("after holding 6m"));
    assert_eq!(sim.state.hold, None);
}

#[test]
fn a_step_that_began_in_an_outage_needs_its_own_data() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 10);
    sim.windows_with(11, 20, outage);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 1 });
    // One usable window is half of step 2's 2m observe time: what it needs
    // is observe minus one interval (1m), so this window suffices...
    let actions = sim.windows(21, 21);
    assert_eq!(
        reasons(&actions),
        vec![Reason::HoldEnded, Reason::StepAdvanced]
    );
    // ...but never one that came before the step: step 3 starts empty.
    assert_eq!(sim.state.step_evidence, StepEvidence::default());
}

#[test]
fn outage_until_max_duration_is_a_no_data_rollback_without_promotion() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 10);
    let actions = sim.windows_with(11, 48, outage);
    assert_eq!(
        reasons(&actions),
        vec![Reason::NoData, Reason::NoDataRollback],
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Promote { .. })));
    assert_eq!(sim.state.phase, Phase::RollingBack);
}

#[test]
fn one_silent_metric_holds_the_step() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    let actions = sim.windows_with(1, 12, |m| (m != "latency").then_some(100.0));
    assert_eq!(reasons(&actions), vec![Reason::NoData], "{actions:?}");
    assert!(message_of(&actions, Reason::NoData).contains("latency"));
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
}

#[test]
fn canary_without_traffic_holds_for_low_traffic() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    let actions = sim.windows_with(1, 15, |_| Some(0.0));
    assert_eq!(reasons(&actions), vec![Reason::LowTraffic], "{actions:?}");
    assert!(message_of(&actions, Reason::LowTraffic).contains("no canary traffic"));
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
    // Traffic returns: the step needs 9m of its own usable windows again.
    assert!(reasons(&sim.windows(16, 23)).is_empty());
    let actions = sim.windows(24, 24);
    assert_eq!(
        reasons(&actions),
        vec![Reason::HoldEnded, Reason::StepAdvanced]
    );
}

#[test]
fn min_requests_per_step_holds_until_the_step_has_enough() {
    let mut policy = canary_policy();
    policy.analysis.min_requests_per_step = 1000;
    let mut sim = Sim::new(policy);
    sim.analysing();
    // 10 windows of 50 canary requests: 500 of 1000 at the end of observe.
    let actions = sim.windows_with(1, 10, |_| Some(50.0));
    assert_eq!(reasons(&actions), vec![Reason::LowTraffic], "{actions:?}");
    let message = message_of(&actions, Reason::LowTraffic);
    assert!(message.contains("served 500 request(s)"), "{message}");
    assert!(message.contains("minRequestsPerStep is 1000"), "{message}");
    // Still short after 9 more windows (950): the hold goes on, unannounced.
    assert!(reasons(&sim.windows_with(11, 19, |_| Some(50.0))).is_empty());
    let actions = sim.windows_with(20, 20, |_| Some(50.0));
    assert_eq!(
        reasons(&actions),
        vec![Reason::HoldEnded, Reason::StepAdvanced]
    );
}

#[test]
fn on_no_data_rollback_rolls_back_on_an_unusable_window() {
    let mut policy = canary_policy();
    policy.analysis.on_no_data = OnNoData::Rollback;
    let mut sim = Sim::new(policy);
    sim.analysing();
    sim.windows(1, 4);
    let actions = sim.windows_with(5, 5, outage);
    assert_eq!(reasons(&actions), vec![Reason::NoDataRollback]);
    let message = message_of(&actions, Reason::NoDataRollback);
    assert!(message.contains("step 1/4: no usable data"), "{message}");
    assert!(message.contains("onNoData: rollback"), "{message}");
}

#[test]
fn on_no_data_rollback_rolls_back_a_step_due_with_too_few_requests() {
    let mut policy = canary_policy();
    policy.analysis.on_no_data = OnNoData::Rollback;
    policy.analysis.min_requests_per_step = 10_000;
    let mut sim = Sim::new(policy);
    sim.analysing();
    assert!(reasons(&sim.windows(1, 9)).is_empty());
    let actions = sim.windows(10, 10);
    assert_eq!(reasons(&actions), vec![Reason::NoDataRollback]);
    assert!(message_of(&actions, Reason::NoDataRollback).contains("minRequestsPerStep"));
}

#[test]
fn the_last_window_of_a_step_must_be_usable() {
    let mut sim = Sim::new(canary_policy());
    sim.analysing();
    sim.windows(1, 9);
    // Nine minutes of data cover observe minus one interval, but the window
    // that closes the step has none: the source may be down now.
    let actions = sim.windows_with(10, 10, outage);
    assert_eq!(reasons(&actions), vec![Reason::NoData]);
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
}

#[test]
fn real_judge_holds_on_a_metric_that_went_silent() {
    // The reproduction of issue 13 through the engine with the real judge:
    // latency's evidence stops after 3 windows while errors goes on.
    let policy = canary_policy();
    let mut sim = Sim::new(policy.clone());
    sim.analysing();
    let mut all = Vec::new();
    for m in 1..=12u64 {
        sim.at(m * MIN)
            .window_with(|metric| (metric != "latency" || m <= 3).then_some(1000.0))
            .pods_up();
        let (next, actions) = step(&policy, &sim.state, &sim.input);
        sim.state = next;
        sim.input.window = None;
        all.extend(actions);
    }
    assert!(
        !reasons(&all).contains(&Reason::StepAdvanced),
        "{:?}",
        reasons(&all)
    );
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
    assert!(message_of(&all, Reason::NoData).contains("latency"));
}

// ---- Failing actions ----------------------------------------------------------

fn failure(since_min: u64) -> ActionFailure {
    ActionFailure {
        action: "SetWeight 5%".into(),
        error: "ingresses.networking.k8s.io \"myapp-canary\" is forbidden".into(),
        since: T0 + since_min * MIN,
        attempts: 3,
    }
}

#[test]
fn failing_actions_hold_the_step_then_roll_back_at_progress_deadline() {
    let mut sim = Sim::new(ingress_policy());
    sim.analysing();
    sim.input.failing = Some(failure(1));
    // Windows close and observe time passes: nothing moves while it fails.
    for m in 1..=10 {
        let actions = sim.at(m * MIN).window().pods_up().tick();
        assert!(actions.is_empty(), "minute {m}: {actions:?}");
        sim.input.failing = Some(failure(1));
    }
    assert_eq!(sim.state.phase, Phase::Progressing { step: 0 });
    assert!(
        sim.state.verdicts.is_empty(),
        "no window judged while failing"
    );
    let actions = sim.at(11 * MIN).pods_up().tick();
    assert_eq!(reasons(&actions), vec![Reason::ActionDeadlineExceeded]);
    let message = message_of(&actions, Reason::ActionDeadlineExceeded);
    assert!(
        message.contains("SetWeight 5% failing for 10m (3 attempt(s))"),
        "{message}"
    );
    assert!(message.contains("is forbidden"), "{message}");
    assert!(message.contains("progressDeadline limit"), "{message}");
    assert_eq!(sim.state.phase, Phase::RollingBack);
    assert!(actions.contains(&Action::SetWeight { percent: 0 }));
}

#[test]
fn an_alert_still_rolls_back_while_actions_fail() {
    let mut sim = Sim::new(ingress_policy());
    sim.analysing();
    sim.input.failing = Some(failure(0));
    sim.input.alerts = vec!["HighErrorRate".into()];
    let actions = sim.at(2 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::AlertRollback]);
    assert_eq!(sim.state.phase, Phase::RollingBack);
}

#[test]
fn an_abort_still_rolls_back_while_actions_fail() {
    let mut sim = Sim::new(ingress_policy());
    sim.analysing();
    sim.input.failing = Some(failure(0));
    sim.input.abort = true;
    let actions = sim.at(2 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::Aborted]);
}

#[test]
fn failing_actions_past_max_duration_roll_back() {
    let mut policy = ingress_policy();
    policy.progress_deadline = Duration::from_secs(60 * MIN);
    policy.analysis.max_duration = Duration::from_secs(20 * MIN);
    let mut sim = Sim::new(policy);
    sim.analysing();
    sim.input.failing = Some(failure(5));
    assert!(sim.at(19 * MIN).tick().is_empty());
    sim.input.failing = Some(failure(5));
    let actions = sim.at(20 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::ActionDeadlineExceeded]);
    assert!(message_of(&actions, Reason::ActionDeadlineExceeded).contains("maxDuration limit"));
}

#[test]
fn a_rollback_that_cannot_be_carried_out_ends_failed_with_its_reason() {
    let mut sim = Sim::new(ingress_policy());
    sim.analysing();
    sim.input.alerts = vec!["HighErrorRate".into()];
    sim.at(MIN).tick();
    assert_eq!(sim.state.phase, Phase::RollingBack);
    sim.input.failing = Some(failure(1));
    assert!(sim.at(5 * MIN).tick().is_empty());
    sim.input.failing = Some(failure(1));
    let actions = sim.at(11 * MIN).tick();
    assert_eq!(reasons(&actions), vec![Reason::RollbackFailed]);
    assert_eq!(sim.state.phase, Phase::Failed);
    let message = sim.state.message.clone().unwrap();
    assert!(message.contains("cannot be carried out"), "{message}");
    assert!(message.contains("is forbidden"), "{message}");
    // Resting in Failed: the same revision is not started again.
    assert!(sim.at(12 * MIN).tick().is_empty());
}

#[test]
fn failing_cleanup_after_promotion_is_given_up_and_the_promotion_stands() {
    let mut sim = promoted_canary();
    let at = sim.input.now;
    // Failing since before the promotion; the limit comes inside the guard window.
    sim.input.failing = Some(ActionFailure {
        since: at - 5 * MIN,
        ..failure(0)
    });
    assert!(sim.at(at - T0 + 4 * MIN).tick().is_empty());
    sim.input.failing = Some(ActionFailure {
        since: at - 5 * MIN,
        ..failure(0)
    });
    let later = at - T0 + 5 * MIN;
    let actions = sim.at(later).tick();
    assert_eq!(reasons(&actions), vec![Reason::ActionDeadlineExceeded]);
    assert!(message_of(&actions, Reason::ActionDeadlineExceeded).contains("the promotion stands"));
    assert_eq!(sim.state.phase, Phase::Promoted);
}
