//! `canaryd simulate`: the real engine and judge against the simulated cluster.

use std::path::Path;
use std::process::Command;

use canaryd::policy::{self, Policy};
use canaryd::rollout::{Action, Reason};
use canaryd::simulate::{
    self, EntryKind, Load, OutcomeKind, Regression, Run, Scenario, Stretch, NEW_HASH,
    STABLE_VERSION,
};

const MIN: u64 = 60;

fn load(path: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    policy::load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn scenario(replicas: u32, rps: f64, regression: Regression, seed: u64) -> Scenario {
    Scenario {
        replicas,
        load: Load {
            rps,
            error_rate: 0.005,
            latency_secs: 0.1,
            regression,
        },
        alert_at: None,
        outages: Vec::new(),
        no_traffic: Vec::new(),
        seed,
    }
}

fn canary_sizes(run: &Run) -> Vec<u32> {
    run.actions()
        .filter_map(|(_, a)| match a {
            Action::EnsureCanary { replicas, .. } => Some(*replicas),
            _ => None,
        })
        .collect()
}

fn weights(run: &Run) -> Vec<u8> {
    run.actions()
        .filter_map(|(_, a)| match a {
            Action::SetWeight { percent } => Some(*percent),
            _ => None,
        })
        .collect()
}

fn count(run: &Run, reason: Reason) -> usize {
    run.reasons().iter().filter(|r| **r == reason).count()
}

#[test]
fn good_release_is_promoted_after_one_pod_then_10_50_100_percent() {
    let policy = load("policies/myapp.yaml");
    let runs: Vec<Run> = (1..=5)
        .map(|seed| simulate::run(&policy, &scenario(10, 20.0, Regression::None, seed)))
        .collect();
    let promoted: Vec<&Run> = runs
        .iter()
        .filter(|r| r.outcome.result == OutcomeKind::Promoted)
        .collect();
    // The judge's false-rollback budget is 5% per rollout; allow one.
    assert!(
        promoted.len() >= 4,
        "{:?}",
        runs.iter().map(|r| &r.outcome).collect::<Vec<_>>()
    );
    for run in promoted {
        // 1 pod, 10% of 10 (still 1 pod: no change), 50%, 100%.
        assert_eq!(canary_sizes(run), vec![1, 5, 10]);
        assert_eq!(count(run, Reason::StepAdvanced), 3);
        assert_eq!(count(run, Reason::AnalysisPassed), 1);
        assert_eq!(count(run, Reason::RolloutComplete), 1);
        let promote = run
            .actions()
            .find(|(_, a)| matches!(a, Action::Promote { .. }))
            .map(|(at, a)| (at, a.clone()));
        let (promote_at, action) = promote.expect("a Promote action");
        assert_eq!(
            action,
            Action::Promote {
                template_hash: NEW_HASH.into()
            }
        );
        // 16 minutes of observation plus pod start-up and window alignment.
        assert!((16 * MIN..18 * MIN).contains(&promote_at), "{promote_at}");
        let promoted_at = run.outcome.promoted_at.expect("promoted");
        assert!(promoted_at > promote_at && promoted_at < promote_at + 2 * MIN);
        // Every window of the 4 steps was judged and shown.
        let windows = run
            .timeline
            .iter()
            .filter(|e| matches!(e.what, EntryKind::Window { .. }))
            .count();
        assert_eq!(windows, 16);
    }
}

#[test]
fn five_times_the_errors_is_rolled_back_within_the_first_step() {
    let policy = load("policies/myapp.yaml");
    for seed in 1..=10 {
        let run = simulate::run(
            &policy,
            &scenario(3, 20.0, Regression::Errors { factor: 5.0 }, seed),
        );
        let o = &run.outcome;
        assert_eq!(o.result, OutcomeKind::RolledBack, "seed {seed}: {o:?}");
        assert_eq!(o.reason, Some(Reason::AnalysisFailed), "seed {seed}: {o:?}");
        assert!(
            o.message.as_deref().unwrap_or("").starts_with("step 1/4:"),
            "seed {seed}: {o:?}"
        );
        assert_eq!(count(&run, Reason::StepAdvanced), 0, "seed {seed}");
        assert!(
            o.rollback_at.is_some_and(|t| t <= 11 * MIN),
            "seed {seed}: {o:?}"
        );
        assert_eq!(o.promoted_at, None);
    }
}

#[test]
fn latency_regression_is_caught() {
    let policy = load("policies/myapp.yaml");
    let run = simulate::run(
        &policy,
        &scenario(3, 20.0, Regression::Latency { increase: 0.5 }, 1),
    );
    assert_eq!(run.outcome.result, OutcomeKind::RolledBack);
    assert_eq!(run.outcome.reason, Some(Reason::AnalysisFailed));
}

#[test]
fn ingress_canary_steps_its_weights() {
    let policy = load("tests/fixtures/simulate/ingress.yaml");
    let run = simulate::run(&policy, &scenario(4, 20.0, Regression::None, 3));
    assert_eq!(
        run.outcome.result,
        OutcomeKind::Promoted,
        "{:?}",
        run.outcome
    );
    // 0 while the canary starts, each step's weight, 0 once promoted.
    assert_eq!(weights(&run), vec![0, 5, 25, 50, 90, 0]);
}

#[test]
fn gateway_api_canary_steps_its_weights() {
    let policy = load("tests/fixtures/simulate/gateway.yaml");
    let run = simulate::run(&policy, &scenario(4, 20.0, Regression::None, 3));
    assert_eq!(weights(&run), vec![0, 5, 25, 50, 90, 0]);
}

#[test]
fn weighted_regression_rolls_back_and_zeroes_the_weight() {
    let policy = load("tests/fixtures/simulate/ingress.yaml");
    let run = simulate::run(
        &policy,
        &scenario(4, 50.0, Regression::Errors { factor: 5.0 }, 1),
    );
    assert_eq!(
        run.outcome.result,
        OutcomeKind::RolledBack,
        "{:?}",
        run.outcome
    );
    assert_eq!(weights(&run).last(), Some(&0));
}

fn selector_switches(run: &Run) -> Vec<String> {
    run.actions()
        .filter_map(|(_, a)| match a {
            Action::SwitchSelector {
                service,
                to_version,
            } => Some(format!("{service}->{to_version}")),
            _ => None,
        })
        .collect()
}

#[test]
fn blue_green_switches_then_retires_the_old_version() {
    let policy = load("tests/fixtures/simulate/bluegreen.yaml");
    let run = simulate::run(&policy, &scenario(3, 10.0, Regression::None, 1));
    assert_eq!(
        run.outcome.result,
        OutcomeKind::Promoted,
        "{:?}",
        run.outcome
    );
    assert_eq!(
        selector_switches(&run),
        vec!["myapp-preview->v2", "myapp->v2"]
    );
    let switched = run.outcome.promoted_at.expect("switched");
    // The target rolls to v2 only after keepOldFor (15m).
    let promote_at = run
        .actions()
        .find(|(_, a)| matches!(a, Action::Promote { .. }))
        .map(|(at, _)| at)
        .expect("Promote");
    assert_eq!(promote_at, switched + 15 * MIN);
    assert_eq!(count(&run, Reason::SwitchedBack), 0);
}

#[test]
fn blue_green_switches_back_when_an_alert_fires_in_the_guard_window() {
    let policy = load("tests/fixtures/simulate/bluegreen.yaml");
    let mut s = scenario(3, 10.0, Regression::None, 1);
    s.alert_at = Some(12 * MIN);
    let run = simulate::run(&policy, &s);
    let o = &run.outcome;
    assert_eq!(o.result, OutcomeKind::RolledBack, "{o:?}");
    assert_eq!(o.reason, Some(Reason::AlertRollback));
    assert!(o.promoted_at.is_some_and(|p| p < 12 * MIN));
    assert_eq!(o.rollback_at, Some(12 * MIN));
    assert_eq!(
        selector_switches(&run),
        vec![
            "myapp-preview->v2".to_owned(),
            "myapp->v2".to_owned(),
            format!("myapp->{STABLE_VERSION}")
        ]
    );
    assert_eq!(count(&run, Reason::SwitchedBack), 1);
}

#[test]
fn alert_after_the_guard_window_does_not_roll_back() {
    let policy = load("policies/myapp.yaml");
    let mut s = scenario(3, 20.0, Regression::None, 2);
    s.alert_at = Some(60 * MIN);
    let run = simulate::run(&policy, &s);
    assert_eq!(
        run.outcome.result,
        OutcomeKind::Promoted,
        "{:?}",
        run.outcome
    );
}

#[test]
fn canary_alert_in_guard_window_restores_the_stable_template() {
    let policy = load("policies/myapp.yaml");
    let healthy = simulate::run(&policy, &scenario(3, 20.0, Regression::None, 2));
    let promoted = healthy.outcome.promoted_at.expect("promoted");
    let mut s = scenario(3, 20.0, Regression::None, 2);
    s.alert_at = Some(promoted + 2 * MIN);
    let run = simulate::run(&policy, &s);
    assert_eq!(run.outcome.result, OutcomeKind::RolledBack);
    assert_eq!(run.outcome.reason, Some(Reason::AlertRollback));
    assert!(run
        .actions()
        .any(|(_, a)| matches!(a, Action::RestoreStable { .. })));
}

#[test]
fn runs_are_reproducible_per_seed() {
    let policy = load("policies/myapp.yaml");
    let a = simulate::run(&policy, &scenario(3, 10.0, Regression::None, 42));
    let b = simulate::run(&policy, &scenario(3, 10.0, Regression::None, 42));
    let c = simulate::run(&policy, &scenario(3, 10.0, Regression::None, 43));
    assert_eq!(a, b);
    assert_ne!(a.timeline, c.timeline);
}

#[test]
fn summary_reports_promotion_and_catch_times() {
    let policy = load("policies/myapp.yaml");
    let s = scenario(3, 20.0, Regression::Errors { factor: 5.0 }, 1);
    let summary = simulate::summarize(&policy, &s, 20);
    assert_eq!(summary.runs, 20);
    let healthy = summary.healthy_promoted;
    assert!(healthy.count >= 18, "{summary:?}");
    // Never faster than the 16 minutes the plan observes.
    assert!(
        healthy.median_secs.is_some_and(|m| m >= 16 * MIN),
        "{summary:?}"
    );
    assert!(healthy.p90_secs >= healthy.median_secs);
    let caught = summary
        .regression_caught
        .expect("a regression was simulated");
    assert!(caught.count >= 18, "{summary:?}");
    assert!(
        caught.median_secs.is_some_and(|m| m < 10 * MIN),
        "{summary:?}"
    );
    let text = simulate::render_summary(&summary);
    assert!(text.contains("errors:x5:"), "{text}");
}

#[test]
fn every_example_policy_completes() {
    for file in [
        "policies/myapp.yaml",
        "policies/myapp-lan.yaml",
        "policies/shop.yaml",
    ] {
        let policy = load(file);
        let run = simulate::run(&policy, &scenario(10, 50.0, Regression::None, 7));
        assert_ne!(run.outcome.result, OutcomeKind::Unfinished, "{file}");
        assert_ne!(run.outcome.result, OutcomeKind::Failed, "{file}");
    }
}

fn canaryd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run canaryd")
}

#[test]
fn cli_prints_timeline_outcome_and_summary() {
    let out = canaryd(&[
        "simulate",
        "policies/myapp.yaml",
        "--traffic",
        "20",
        "--regression",
        "errors:x5",
        "--runs",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for wanted in [
        "CanaryStarted",
        "window 1 ",
        "AnalysisFailed",
        "outcome: rollback decided at +",
        "summary over 5 seeded runs",
        "errors:x5:",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }
}

#[test]
fn cli_json_output_is_machine_readable() {
    let out = canaryd(&[
        "simulate",
        "tests/fixtures/simulate/bluegreen.yaml",
        "--alert-at",
        "12m",
        "--runs",
        "2",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["run"]["outcome"]["result"], "rolledBack");
    assert_eq!(doc["run"]["outcome"]["reason"], "AlertRollback");
    assert_eq!(doc["summary"]["runs"], 2);
    assert!(doc["run"]["timeline"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
}

#[test]
fn cli_rejects_bad_input_with_exit_2() {
    let out = canaryd(&[
        "simulate",
        "tests/fixtures/policies/weight-out-of-range.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weight-out-of-range.yaml:"), "{err}");
    let out = canaryd(&[
        "simulate",
        "policies/myapp.yaml",
        "--regression",
        "errors:2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("errors:xN"));
    let out = canaryd(&["simulate", "policies/myapp.yaml", "--traffic", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = canaryd(&["simulate", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

// ---- outages and no-traffic stretches ---------------------------------------

fn stretch(text: &str) -> Stretch {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// When the timeline's first event with `reason` happened.
fn first(run: &Run, reason: Reason) -> Option<u64> {
    run.timeline.iter().find_map(|e| match &e.what {
        EntryKind::Event { reason: r, .. } if *r == reason => Some(e.at),
        _ => None,
    })
}

/// When the engine moved on: StepAdvanced, AnalysisPassed or Promote.
fn promotions(run: &Run) -> Vec<u64> {
    run.timeline
        .iter()
        .filter(|e| match &e.what {
            EntryKind::Event { reason, .. } => {
                matches!(reason, Reason::StepAdvanced | Reason::AnalysisPassed)
            }
            EntryKind::Action { action } => matches!(action, Action::Promote { .. }),
            EntryKind::Window { .. } => false,
        })
        .map(|e| e.at)
        .collect()
}

#[test]
fn outage_longer_than_step_2_holds_it_and_promotes_after() {
    let policy = load("policies/myapp.yaml");
    // Step 2 (10%, observe 2m) starts about 10m15s in; the outage covers
    // 11m..17m, three times the step.
    let outage = stretch("11m+6m");
    for seed in 1..=5 {
        let mut s = scenario(3, 20.0, Regression::None, seed);
        s.outages = vec![outage];
        let run = simulate::run(&policy, &s);
        let o = &run.outcome;
        assert_eq!(o.result, OutcomeKind::Promoted, "seed {seed}: {o:?}");
        let advanced: Vec<u64> = promotions(&run);
        assert!(
            advanced
                .iter()
                .all(|t| *t < outage.start_secs || *t > outage.end_secs()),
            "seed {seed}: moved on during the outage at {advanced:?}"
        );
        // Step 1 passed before it, the rest after it.
        assert_eq!(
            advanced.iter().filter(|t| **t < outage.start_secs).count(),
            1
        );
        assert!(
            o.promoted_at.is_some_and(|p| p > outage.end_secs()),
            "{o:?}"
        );
        let held = first(&run, Reason::NoData).expect("a NoData hold");
        assert!(outage.contains(held), "seed {seed}: NoData at {held}");
        assert_eq!(
            count(&run, Reason::NoData),
            1,
            "seed {seed}: one per stretch"
        );
        let ended = first(&run, Reason::HoldEnded).expect("HoldEnded");
        assert!(
            ended >= outage.end_secs(),
            "seed {seed}: HoldEnded at {ended}"
        );
        // Every window closing in the outage had no data, as from the daemon.
        for e in &run.timeline {
            if let EntryKind::Window { reason, .. } = &e.what {
                assert_eq!(
                    outage.contains(e.at),
                    reason.contains("metric source failed: simulated outage"),
                    "seed {seed} at {}: {reason}",
                    e.at
                );
            }
        }
    }
}

#[test]
fn outage_windows_are_the_daemons_no_data_windows() {
    let policy = load("policies/myapp.yaml");
    let window = canaryd::metrics::Window {
        end_unix_secs: 0,
        length: std::time::Duration::from_secs(60),
        at_secs: 60.0,
        expected_canary_share: Some(0.5),
    };
    let daemon = canaryd::controller::window::no_data(&policy, &window, simulate::OUTAGE_ERROR);
    for m in &daemon.metrics {
        let want =
            canaryd::observation::ArmValue::NoData("metric source failed: simulated outage".into());
        assert_eq!((&m.canary, &m.baseline), (&want, &want));
    }
    assert_eq!(daemon.metrics.len(), policy.analysis.metrics.len());
}

#[test]
fn outage_past_max_duration_rolls_back_for_no_data() {
    let policy = load("policies/myapp.yaml");
    // maxDuration defaults to 3 x the 16m observed: 48m after the analysis starts.
    let max = policy.analysis.max_duration.as_secs();
    let mut s = scenario(3, 20.0, Regression::None, 1);
    s.outages = vec![stretch("5m+1h")];
    let run = simulate::run(&policy, &s);
    let o = &run.outcome;
    assert_eq!(o.result, OutcomeKind::RolledBack, "{o:?}");
    assert_eq!(o.reason, Some(Reason::NoDataRollback), "{o:?}");
    assert!(
        o.rollback_at.is_some_and(|t| (max..max + MIN).contains(&t)),
        "{o:?}"
    );
    assert_eq!(promotions(&run), Vec::<u64>::new());
    assert_eq!(count(&run, Reason::NoData), 1);
}

#[test]
fn no_traffic_holds_for_low_traffic_then_continues() {
    let policy = load("policies/myapp.yaml");
    // Three silent minutes across steps 1 and 2 at 20 req/s. Windows in which
    // the canary served nothing are not fed to the judge's traffic-split
    // check; before that, the check flagged a mismatch that never cleared
    // and 198/200 of these runs held until maxDuration and rolled back.
    let silent = stretch("11m+3m");
    for seed in 1..=10 {
        let mut s = scenario(3, 20.0, Regression::None, seed);
        s.no_traffic = vec![silent];
        let run = simulate::run(&policy, &s);
        let o = &run.outcome;
        assert_eq!(o.result, OutcomeKind::Promoted, "seed {seed}: {o:?}");
        let held = first(&run, Reason::LowTraffic).expect("a LowTraffic hold");
        assert!(
            (silent.start_secs..silent.end_secs() + MIN).contains(&held),
            "seed {seed}: LowTraffic at {held}"
        );
        let ended = first(&run, Reason::HoldEnded).expect("HoldEnded");
        assert!(
            ended >= silent.end_secs(),
            "seed {seed}: HoldEnded at {ended}"
        );
        let zero_canary: Vec<u64> = run
            .timeline
            .iter()
            .filter_map(|e| match &e.what {
                EntryKind::Window { traffic, .. } if traffic.canary.requests == 0 => Some(e.at),
                _ => None,
            })
            .collect();
        assert!(!zero_canary.is_empty(), "seed {seed}");
        // Never moved on right after a window the canary served nothing in.
        for t in promotions(&run) {
            assert!(!zero_canary.contains(&t), "seed {seed}: moved on at {t}");
            assert!(!(held..ended).contains(&t), "seed {seed}: moved on at {t}");
        }
    }
}

#[test]
fn summary_counts_no_promotion_during_outages() {
    let policy = load("policies/myapp.yaml");
    let mut s = scenario(3, 20.0, Regression::Errors { factor: 5.0 }, 1);
    s.outages = vec![stretch("3m+6m"), stretch("11m+5m")];
    let summary = simulate::summarize(&policy, &s, 20);
    let healthy = summary.healthy_stretches.expect("stretch figures");
    assert_eq!(healthy.promotions_during, 0, "{summary:?}");
    assert_eq!(healthy.held, 20, "{summary:?}");
    assert_eq!(healthy.no_data_rollbacks, 0, "{summary:?}");
    assert!(summary.healthy_promoted.count >= 18, "{summary:?}");
    let regressed = summary.regression_stretches.expect("stretch figures");
    assert_eq!(regressed.promotions_during, 0, "{summary:?}");
    let text = simulate::render_summary(&summary);
    assert!(
        text.contains("promotions during outages/no traffic 0; held 20/20; NoData rollbacks 0/20"),
        "{text}"
    );
    // Without stretches there are no such figures.
    let plain = simulate::summarize(&policy, &scenario(3, 20.0, Regression::None, 1), 2);
    assert_eq!(plain.healthy_stretches, None);
}

#[test]
fn cli_outage_and_no_traffic_reach_the_json_summary() {
    let out = canaryd(&[
        "simulate",
        "policies/myapp.yaml",
        "--traffic",
        "20",
        "--outage",
        "11m+6m",
        "--no-traffic",
        "30m+1m",
        "--runs",
        "3",
        "--output",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["scenario"]["outages"][0]["startSecs"], 660);
    assert_eq!(doc["scenario"]["outages"][0]["durationSecs"], 360);
    assert_eq!(doc["scenario"]["noTraffic"][0]["startSecs"], 1800);
    let stats = &doc["summary"]["healthyStretches"];
    assert_eq!(stats["promotionsDuring"], 0, "{stats}");
    assert_eq!(stats["held"], 3, "{stats}");
    assert_eq!(stats["noDataRollbacks"], 0, "{stats}");
}

#[test]
fn cli_rejects_bad_stretches_naming_flag_and_value() {
    for (flag, value, why) in [
        ("--outage", "3m", "no '+'"),
        ("--outage", "3m+0s", "DURATION must be above 0"),
        ("--no-traffic", "3m+0", "DURATION must be above 0"),
        ("--no-traffic", "x+5m", "START"),
        ("--outage", "3m+5x", "DURATION"),
    ] {
        let out = canaryd(&["simulate", "policies/myapp.yaml", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains(value) && err.contains(why),
            "{flag} {value}: {err}"
        );
    }
}
