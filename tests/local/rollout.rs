//! The rollout engine through its public API, with policies parsed from YAML
//! and the real judge: missing data, regressions, idempotence, and resuming
//! from the stored annotation after every tick.

use std::path::Path;

use canaryd::observation::{ArmValue, Histogram, MetricWindow, Sample, WindowObservation};
use canaryd::policy::{self, Policy};
use canaryd::rollout::{
    self, Action, Input, PodCounts, Reason, RolloutState, StateError, Target, STATE_VERSION,
};

const T0: u64 = 1_700_000_000;
const MIN: u64 = 60;
const STABLE: &str = "5f8b3a0c9d";
const NEW: &str = "7c9d2f1e4b";

fn policy(extra_analysis: &str) -> Policy {
    let yaml = format!(
        "service: myapp
namespace: default
deployment: myapp
strategy:
  canary:
    steps:
      - size: 1
        observe: 10m
      - size: \"10%\"
        observe: 2m
      - size: \"50%\"
        observe: 2m
      - size: \"100%\"
        observe: 2m
analysis:
  prometheus:
    url: http://prometheus:9090
  interval: 1m
{extra_analysis}"
    );
    policy::parse_str(&yaml, Path::new("inline.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The Deployment with the new template and canary/baseline of `pods` ready pods.
fn target(pods: u32) -> Target {
    Target {
        generation: 2,
        stable_hash: STABLE.into(),
        desired_hash: NEW.into(),
        replicas: 10,
        canary_hash: if pods > 0 { NEW.into() } else { String::new() },
        canary: PodCounts {
            ready: pods,
            desired: pods,
        },
        baseline: PodCounts {
            ready: pods,
            desired: pods,
        },
        stable: PodCounts {
            ready: 10,
            desired: 10,
        },
        ..Target::default()
    }
}

fn counts(errors: f64, total: f64) -> ArmValue {
    ArmValue::Sample(Sample::Counts { errors, total })
}

fn buckets(total: f64) -> ArmValue {
    // Half the requests under 100ms, nearly all under 250ms.
    ArmValue::Sample(Sample::Buckets(Histogram {
        le: vec![0.1, 0.25, f64::INFINITY],
        counts: vec![total * 0.5, total * 0.95, total],
    }))
}

/// One window: `canary_errors` of 600 canary requests fail, 3 of 600 baseline ones.
fn window(at_secs: u64, canary_errors: f64) -> WindowObservation {
    WindowObservation {
        at_secs: at_secs as f64,
        expected_canary_share: Some(0.5),
        metrics: vec![
            MetricWindow {
                name: "errors".into(),
                canary: counts(canary_errors, 600.0),
                baseline: counts(3.0, 600.0),
            },
            MetricWindow {
                name: "latency".into(),
                canary: buckets(600.0),
                baseline: buckets(600.0),
            },
        ],
    }
}

fn no_data_window(at_secs: u64) -> WindowObservation {
    let gone = || ArmValue::NoData("no series for the canary pods".into());
    WindowObservation {
        at_secs: at_secs as f64,
        expected_canary_share: Some(0.5),
        metrics: ["errors", "latency"]
            .iter()
            .map(|name| MetricWindow {
                name: (*name).into(),
                canary: gone(),
                baseline: gone(),
            })
            .collect(),
    }
}

/// Feeds minute-by-minute windows; returns every event reason and the state.
/// With `restart`, the state goes through its JSON annotation between ticks.
fn drive(
    policy: &Policy,
    minutes: u64,
    restart: bool,
    make: impl Fn(u64) -> WindowObservation,
) -> (RolloutState, Vec<Action>) {
    let mut state = RolloutState::new();
    let mut all = Vec::new();
    let mut tick = |state: &mut RolloutState, input: Input| {
        let (next, actions) = rollout::step(policy, state, &input);
        // Feeding the same input again issues nothing new.
        let (_, again) = rollout::step(policy, &next, &input);
        assert!(again.is_empty(), "repeated input issued {again:?}");
        all.extend(actions);
        *state = if restart {
            RolloutState::from_json(&next.to_json()).expect("state round-trips")
        } else {
            next
        };
    };
    // The template changes, then the canary and baseline come up.
    tick(
        &mut state,
        Input {
            now: T0,
            target: target(0),
            ..Input::default()
        },
    );
    tick(
        &mut state,
        Input {
            now: T0 + 20,
            target: target(1),
            ..Input::default()
        },
    );
    for m in 1..=minutes {
        // Windows are only judged while analysing.
        if !state.phase.is_analysing() && state.phase != rollout::Phase::Initializing {
            break;
        }
        let step = state.phase.step().unwrap_or(0);
        let pods = rollout::planned_step(policy, step, 10).map_or(0, |p| p.canary_replicas);
        tick(
            &mut state,
            Input {
                now: T0 + 20 + m * MIN,
                target: target(pods),
                window: Some(make(m * MIN)),
                ..Input::default()
            },
        );
    }
    (state, all)
}

fn reasons(actions: &[Action]) -> Vec<Reason> {
    actions.iter().filter_map(Action::reason).collect()
}

#[test]
fn healthy_windows_walk_every_step_to_promotion() {
    let policy = policy("");
    let (state, actions) = drive(&policy, 30, false, |at| window(at, 3.0));
    assert_eq!(
        reasons(&actions),
        vec![
            Reason::CanaryStarted,
            Reason::AnalysisStarted,
            Reason::StepAdvanced,
            Reason::StepAdvanced,
            Reason::StepAdvanced,
            Reason::AnalysisPassed
        ]
    );
    assert_eq!(state.phase, rollout::Phase::Promoting);
    assert!(actions.contains(&Action::Promote {
        template_hash: NEW.into()
    }));
}

#[test]
fn resuming_from_the_annotation_after_every_tick_changes_nothing() {
    let policy = policy("");
    let straight = drive(&policy, 30, false, |at| window(at, 3.0));
    let resumed = drive(&policy, 30, true, |at| window(at, 3.0));
    // Same actions, events and messages (with the judge's numbers).
    assert_eq!(straight.1, resumed.1);
    // Same state; the evidence's floats may differ in the last bit because
    // serde_json parses floats to within one ulp unless its
    // `float_roundtrip` feature is on, so they are compared separately.
    let (mut a, mut b) = (straight.0, resumed.0);
    assert_eq!(a.evidence.windows, b.evidence.windows);
    let ratio = |s: &RolloutState| {
        s.evidence
            .metric("errors")
            .and_then(|m| m.counts.as_ref())
            .map(|c| {
                (
                    c.canary_errors,
                    c.canary_total,
                    c.baseline_errors,
                    c.baseline_total,
                )
            })
    };
    assert_eq!(ratio(&a), ratio(&b));
    a.evidence = Default::default();
    b.evidence = Default::default();
    assert_eq!(a, b);
}

#[test]
fn ten_times_the_errors_rolls_back_with_the_judges_numbers() {
    let policy = policy("");
    let (state, actions) = drive(&policy, 30, false, |at| window(at, 30.0));
    assert_eq!(state.phase, rollout::Phase::RollingBack);
    let message = actions
        .iter()
        .find_map(|a| match a {
            Action::Event {
                reason: Reason::AnalysisFailed,
                message,
                ..
            } => Some(message.clone()),
            _ => None,
        })
        .expect("an AnalysisFailed event");
    assert!(message.starts_with("step 1/4: "), "{message}");
    assert!(message.contains("errors"), "{message}");
    assert!(actions.contains(&Action::MarkFailedRevision { hash: NEW.into() }));
}

#[test]
fn missing_metrics_hold_until_max_duration_then_roll_back() {
    // Default maxDuration: 3 x the 16 minutes observed = 48m.
    let policy = policy("");
    assert_eq!(policy.analysis.max_duration.as_secs(), 48 * MIN);
    let (state, actions) = drive(&policy, 60, false, no_data_window);
    let r = reasons(&actions);
    assert_eq!(r.iter().filter(|x| **x == Reason::NoData).count(), 1);
    assert_eq!(r.last(), Some(&Reason::NoDataRollback));
    assert!(!r.contains(&Reason::StepAdvanced));
    assert_eq!(state.phase, rollout::Phase::RollingBack);
    // Rolled back exactly at maxDuration after the analysis began.
    assert_eq!(state.phase_started_at, T0 + 20 + 48 * MIN);
}

#[test]
fn on_no_data_rollback_rolls_back_at_the_first_empty_window() {
    let policy = policy("  onNoData: rollback\n");
    let (state, actions) = drive(&policy, 60, false, no_data_window);
    assert_eq!(reasons(&actions).last(), Some(&Reason::NoDataRollback));
    assert_eq!(state.phase_started_at, T0 + 20 + MIN);
}

#[test]
fn state_annotation_is_versioned() {
    let policy = policy("");
    let (state, _) = drive(&policy, 3, false, |at| window(at, 3.0));
    let json = state.to_json();
    let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(doc["version"], STATE_VERSION);
    assert_eq!(doc["phase"]["name"], "Progressing");
    assert_eq!(doc["revision"], NEW);
    assert_eq!(doc["verdicts"].as_array().map(Vec::len), Some(3));
    let future = json.replacen("\"version\":1", "\"version\":7", 1);
    match RolloutState::from_json(&future) {
        Err(StateError::UnsupportedVersion { found: 7, .. }) => {}
        other => panic!("expected an unsupported-version error, got {other:?}"),
    }
}
