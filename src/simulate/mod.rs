//! Simulated cluster and traffic in virtual time, driving the real rollout
//! engine and the real judge.
//!
//! The Deployment's template changes at `t = 0`; pods become ready after a
//! few seconds; each tick the simulated cluster is observed, closed windows
//! are drawn from simulated traffic, [`crate::rollout::step`] decides, and its
//! actions are applied to the cluster. No clock is read: a 30-minute rollout
//! takes milliseconds.

mod cluster;
mod render;
mod stretch;
mod traffic;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::controller::window::no_data;
use crate::judge::Decision;
use crate::metrics::Window;
use crate::observation::WindowObservation;
use crate::policy::{Policy, Strategy, Traffic};
use crate::rollout::{
    self, expected_canary_share, next_window_close, Action, EventKind, Input, Phase, ReadyPods,
    Reason, RolloutState,
};

pub use cluster::{
    Cluster, NEW_HASH, NEW_VERSION, POD_READY_MAX_SECS, POD_READY_MIN_SECS, ROLLING_BATCH_SECS,
    STABLE_HASH, STABLE_VERSION,
};
pub use render::{format_offset, render_run, render_summary};
pub use stretch::{any_contains, promotions_during, Blind, Stretch, StretchStats, OUTAGE_ERROR};
pub use traffic::{
    arm_rates, ArmTraffic, Exposure, Load, WindowTraffic, DEFAULT_BUCKETS, LATENCY_SIGMA,
    PREVIEW_SHARE,
};

/// Unix time of the template change in every simulation (fixed: runs are
/// reproducible and the engine never reads a clock anyway).
pub const START_UNIX: u64 = 1_700_000_000;
/// Seconds between two observations of the simulated cluster.
pub const TICK_SECS: u64 = 5;
/// Name of the alert fired by `--alert-at`.
pub const SIMULATED_ALERT: &str = "SimulatedAlert";
/// Slack added to the longest possible rollout before giving up.
const HORIZON_SLACK_SECS: u64 = 3600;

/// How the new release differs from the stable one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Regression {
    /// Identical behaviour.
    #[default]
    None,
    /// The error ratio is multiplied by `factor`.
    Errors {
        /// E.g. 2.0 for `errors:x2`.
        factor: f64,
    },
    /// The latency is stretched by `1 + increase`.
    Latency {
        /// E.g. 0.5 for `latency:+50%`.
        increase: f64,
    },
}

impl Regression {
    /// The new release's error ratio and median latency.
    pub fn apply(self, error_rate: f64, latency_secs: f64) -> (f64, f64) {
        match self {
            Regression::None => (error_rate, latency_secs),
            Regression::Errors { factor } => ((error_rate * factor).min(1.0), latency_secs),
            Regression::Latency { increase } => (error_rate, latency_secs * (1.0 + increase)),
        }
    }
}

impl FromStr for Regression {
    type Err = String;

    /// Parses `none`, `errors:xN` or `latency:+N%`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid regression {text:?}: expected none, errors:xN (e.g. errors:x2) or latency:+N% (e.g. latency:+50%)")
        };
        if text == "none" {
            return Ok(Regression::None);
        }
        if let Some(factor) = text.strip_prefix("errors:x") {
            let factor: f64 = factor.parse().map_err(|_| bad())?;
            return (factor.is_finite() && factor > 0.0)
                .then_some(Regression::Errors { factor })
                .ok_or_else(bad);
        }
        if let Some(percent) = text
            .strip_prefix("latency:+")
            .and_then(|p| p.strip_suffix('%'))
        {
            let percent: f64 = percent.parse().map_err(|_| bad())?;
            return (percent.is_finite() && percent > 0.0)
                .then_some(Regression::Latency {
                    increase: percent / 100.0,
                })
                .ok_or_else(bad);
        }
        Err(bad())
    }
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Regression::None => f.write_str("none"),
            Regression::Errors { factor } => write!(f, "errors:x{factor}"),
            Regression::Latency { increase } => write!(f, "latency:+{}%", increase * 100.0),
        }
    }
}

/// One simulation's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    /// The Deployment's replicas.
    pub replicas: u32,
    /// Traffic and release behaviour.
    pub load: Load,
    /// Seconds after the template change at which a matching alert starts firing.
    pub alert_at: Option<u64>,
    /// Stretches in which the metric source fails: every window closing in
    /// one has no data for every metric and both arms.
    pub outages: Vec<Stretch>,
    /// Stretches in which the canary is sent no requests (the baseline keeps
    /// its traffic).
    pub no_traffic: Vec<Stretch>,
    /// Seed of the random draws.
    pub seed: u64,
}

impl Scenario {
    /// Whether the scenario has outages or no-traffic stretches.
    pub fn has_stretches(&self) -> bool {
        !self.outages.is_empty() || !self.no_traffic.is_empty()
    }

    /// The outages and no-traffic stretches, as the spans in which `policy`'s
    /// engine may not move on.
    pub fn blind_spans(&self, policy: &Policy) -> Vec<Blind> {
        let interval = policy.analysis.interval.as_secs().max(1);
        let outages = self.outages.iter().map(|s| Blind::outage(*s));
        let silent = self
            .no_traffic
            .iter()
            .map(|s| Blind::no_traffic(*s, interval));
        outages.chain(silent).collect()
    }
}

/// What happened at one moment of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EntryKind {
    /// A window closed and was judged.
    Window {
        /// 1-based window number within the analysis.
        number: u32,
        /// The judge's decision.
        decision: Decision,
        /// The judge's reason with its numbers.
        reason: String,
        /// Requests and errors per arm in the window.
        traffic: WindowTraffic,
    },
    /// An event the engine emitted.
    Event {
        /// Normal or Warning.
        kind: EventKind,
        /// Event reason.
        reason: Reason,
        /// Event message.
        message: String,
    },
    /// Another action the engine issued (applied to the simulated cluster).
    Action {
        /// The action.
        action: Action,
    },
}

/// One timeline line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Seconds since the template change.
    pub at: u64,
    /// Phase label, e.g. `Progressing 2/4`: the phase a window was judged in,
    /// or the phase an event or action leads to.
    pub phase: String,
    /// What happened.
    #[serde(flatten)]
    pub what: EntryKind,
}

/// How a simulation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OutcomeKind {
    /// Promoted (and, unless stopped early, through the guard window).
    Promoted,
    /// Rolled back to the stable release.
    RolledBack,
    /// Ended in the Failed phase.
    Failed,
    /// Still in flight at the simulation horizon.
    Unfinished,
}

/// The end of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// How it ended.
    pub result: OutcomeKind,
    /// Seconds after the template change when it ended.
    pub at: u64,
    /// When the Promoted phase began (canary rolled out, or blue-green switched).
    pub promoted_at: Option<u64>,
    /// When the rollback was decided.
    pub rollback_at: Option<u64>,
    /// The event reason that triggered the rollback or failure.
    pub reason: Option<Reason>,
    /// That event's message.
    pub message: Option<String>,
}

/// A whole simulated rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Everything that happened, in order.
    pub timeline: Vec<Entry>,
    /// How it ended.
    pub outcome: Outcome,
    /// The engine's final state (as the annotation would hold it).
    #[serde(skip)]
    pub state: RolloutState,
}

impl Run {
    /// Every action the engine issued, with its time.
    pub fn actions(&self) -> impl Iterator<Item = (u64, &Action)> {
        self.timeline.iter().filter_map(|e| match &e.what {
            EntryKind::Action { action } => Some((e.at, action)),
            _ => None,
        })
    }

    /// Every event reason, in order.
    pub fn reasons(&self) -> Vec<Reason> {
        self.timeline
            .iter()
            .filter_map(|e| match &e.what {
                EntryKind::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

/// Runs one simulation through the guard window.
pub fn run(policy: &Policy, scenario: &Scenario) -> Run {
    Simulation::new(policy, scenario).run(false)
}

/// The longest a simulation may take before it is called unfinished.
fn horizon(policy: &Policy, scenario: &Scenario) -> u64 {
    let keep_old = match &policy.strategy {
        Strategy::BlueGreen(bg) => bg.keep_old_for.as_secs(),
        Strategy::Canary(_) => 0,
    };
    3 * policy.progress_deadline.as_secs()
        + policy.analysis.max_duration.as_secs()
        + policy.alerts.guard_window.as_secs()
        + keep_old
        + scenario.alert_at.unwrap_or(0)
        + HORIZON_SLACK_SECS
}

/// One simulation in progress.
struct Simulation<'a> {
    policy: &'a Policy,
    scenario: &'a Scenario,
    rng: StdRng,
    cluster: Cluster,
    state: RolloutState,
    exposure: Exposure,
    timeline: Vec<Entry>,
    window_traffic: Option<WindowTraffic>,
    promoted_at: Option<u64>,
    rollback_at: Option<u64>,
    trigger: Option<(Reason, String)>,
}

impl<'a> Simulation<'a> {
    fn new(policy: &'a Policy, scenario: &'a Scenario) -> Self {
        let active = match &policy.strategy {
            Strategy::BlueGreen(bg) => bg.active_service.as_str(),
            Strategy::Canary(_) => "",
        };
        let mut cluster = Cluster::new(scenario.replicas, active);
        cluster.set_template(NEW_HASH);
        Simulation {
            policy,
            scenario,
            rng: StdRng::seed_from_u64(scenario.seed),
            cluster,
            state: RolloutState::new(),
            exposure: Exposure::default(),
            timeline: Vec::new(),
            window_traffic: None,
            promoted_at: None,
            rollback_at: None,
            trigger: None,
        }
    }

    /// Ticks until the rollout settles (or is promoted, with `stop_at_promoted`).
    fn run(mut self, stop_at_promoted: bool) -> Run {
        let horizon = horizon(self.policy, self.scenario);
        let mut t = 0;
        let result = loop {
            if let Some(result) = self.tick(t, stop_at_promoted) {
                break result;
            }
            if t >= horizon {
                break OutcomeKind::Unfinished;
            }
            t += TICK_SECS;
        };
        let (reason, message) = self.trigger.clone().unzip();
        Run {
            timeline: self.timeline,
            outcome: Outcome {
                result,
                at: t,
                promoted_at: self.promoted_at,
                rollback_at: self.rollback_at,
                reason,
                message,
            },
            state: self.state,
        }
    }

    /// One observation and transition at `t` seconds; `Some` when it ended.
    fn tick(&mut self, t: u64, stop_at_promoted: bool) -> Option<OutcomeKind> {
        let now = START_UNIX + t;
        self.cluster.advance(now);
        let window = self.close_window(now);
        let firing = self.scenario.alert_at.is_some_and(|at| t >= at);
        let input = Input {
            now,
            target: self.cluster.target(now),
            window,
            alerts: if firing {
                vec![SIMULATED_ALERT.to_owned()]
            } else {
                Vec::new()
            },
            // An operator approves each gate as soon as it is reached.
            approved: matches!(self.state.phase, Phase::WaitingForGate { .. }),
            abort: false,
            failing: None,
        };
        let (next, actions) = rollout::step(self.policy, &self.state, &input);
        let steps = rollout::step_count(self.policy);
        // Windows belong to the phase they were judged in; actions to the
        // phase they lead to.
        self.record_verdict(t, &self.state.phase.label(steps), &next);
        let phase = next.phase.label(steps);
        // Only a Warning that ends the rollout is its trigger (hold Events
        // are Warnings too).
        let ends = matches!(next.phase, Phase::RollingBack | Phase::Failed);
        for action in &actions {
            self.cluster.apply(action, now, &mut self.rng);
            self.record_action(t, &phase, action, ends);
        }
        let before = self.state.phase;
        self.state = next;
        if self.state.window_started_at == Some(now) {
            self.exposure = Exposure::default();
        }
        self.exposure.add(
            self.policy,
            &self.cluster,
            now,
            self.scenario.load.rps,
            TICK_SECS as f64,
            any_contains(&self.scenario.no_traffic, t),
        );
        self.settle(t, before, stop_at_promoted)
    }

    /// Draws the window that closes at `now`, if one does. Traffic is drawn
    /// even during an outage (the service keeps serving; only its metrics are
    /// unreadable), so a seed's draws do not depend on the outages.
    fn close_window(&mut self, now: u64) -> Option<WindowObservation> {
        let close = next_window_close(self.policy, &self.state)?;
        if now < close {
            return None;
        }
        let at_secs = now.saturating_sub(self.state.analysis_started_at?) as f64;
        let weight = self
            .policy
            .traffic
            .has_router()
            .then_some(self.cluster.weight);
        let pods = ReadyPods {
            canary: self.cluster.canary.ready(now),
            baseline: self.cluster.baseline.ready(now),
            stable: self.cluster.stable.ready(now),
        };
        let share = expected_canary_share(self.policy, weight, pods);
        let (window, traffic) = traffic::draw_window(
            self.policy,
            &self.scenario.load,
            self.exposure,
            at_secs,
            share,
            &mut self.rng,
        );
        self.window_traffic = Some(traffic);
        if any_contains(&self.scenario.outages, now.saturating_sub(START_UNIX)) {
            return Some(outage_window(self.policy, &window, now));
        }
        Some(window)
    }

    fn record_verdict(&mut self, t: u64, phase: &str, next: &RolloutState) {
        let judged = next.last_window_at_secs != self.state.last_window_at_secs;
        let (Some(verdict), Some(traffic), true) =
            (next.last_verdict(), self.window_traffic.take(), judged)
        else {
            return;
        };
        self.timeline.push(Entry {
            at: t,
            phase: phase.to_owned(),
            what: EntryKind::Window {
                number: next.evidence.windows,
                decision: verdict.decision,
                reason: verdict.reason.clone(),
                traffic,
            },
        });
    }

    fn record_action(&mut self, t: u64, phase: &str, action: &Action, ends: bool) {
        let what = match action {
            Action::Event {
                kind,
                reason,
                message,
            } => {
                if *kind == EventKind::Warning && ends && self.trigger.is_none() {
                    self.trigger = Some((*reason, message.clone()));
                }
                EntryKind::Event {
                    kind: *kind,
                    reason: *reason,
                    message: message.clone(),
                }
            }
            other => EntryKind::Action {
                action: other.clone(),
            },
        };
        self.timeline.push(Entry {
            at: t,
            phase: phase.to_owned(),
            what,
        });
    }

    /// Notes promotion and rollback times; `Some` when the rollout is over.
    fn settle(&mut self, t: u64, before: Phase, stop_at_promoted: bool) -> Option<OutcomeKind> {
        match self.state.phase {
            Phase::Promoted if self.promoted_at.is_none() => {
                self.promoted_at = Some(t);
                stop_at_promoted.then_some(OutcomeKind::Promoted)
            }
            Phase::RollingBack if self.rollback_at.is_none() => {
                self.rollback_at = Some(t);
                None
            }
            Phase::RolledBack => Some(OutcomeKind::RolledBack),
            Phase::Failed => Some(OutcomeKind::Failed),
            Phase::Idle if before != Phase::Idle => Some(OutcomeKind::Promoted),
            _ => None,
        }
    }
}

/// What the daemon's metric source yields for `drawn`'s window when it fails:
/// the very same `controller::window::no_data` observation.
fn outage_window(policy: &Policy, drawn: &WindowObservation, now: u64) -> WindowObservation {
    let window = Window {
        end_unix_secs: i64::try_from(now).unwrap_or(i64::MAX),
        length: Duration::from_secs(policy.analysis.interval.as_secs().max(1)),
        at_secs: drawn.at_secs,
        expected_canary_share: drawn.expected_canary_share,
    };
    no_data(policy, &window, OUTAGE_ERROR)
}

/// Medians and 90th percentiles of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    /// Runs with a value.
    pub count: u32,
    /// Median seconds.
    pub median_secs: Option<u64>,
    /// 90th percentile seconds.
    pub p90_secs: Option<u64>,
}

impl Spread {
    fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        // Nearest-rank percentile.
        let rank = |p: f64| {
            let n = values.len();
            (n > 0).then(|| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Spread {
            count: values.len() as u32,
            median_secs: rank(0.5),
            p90_secs: rank(0.9),
        }
    }
}

/// Outcomes over many seeded runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Runs per scenario.
    pub runs: u32,
    /// First seed (run `i` uses `seed + i`).
    pub seed: u64,
    /// Healthy release: time to promote (the Promoted phase).
    pub healthy_promoted: Spread,
    /// Healthy runs rolled back (false rollbacks).
    pub healthy_rolled_back: u32,
    /// Healthy runs neither promoted nor rolled back by the horizon.
    pub healthy_unfinished: u32,
    /// The scenario's regression, if any.
    pub regression: Regression,
    /// Regressed release: time from the template change to the rollback decision.
    pub regression_caught: Option<Spread>,
    /// Regressed runs that were promoted anyway.
    pub regression_missed: Option<u32>,
    /// The scenario's outages (as in [`Scenario::outages`]).
    pub outages: Vec<Stretch>,
    /// The scenario's no-traffic stretches.
    pub no_traffic: Vec<Stretch>,
    /// Healthy release: what the runs did about the stretches (only with
    /// outages or no-traffic stretches).
    pub healthy_stretches: Option<StretchStats>,
    /// Regressed release: the same.
    pub regression_stretches: Option<StretchStats>,
}

/// One batch of seeded runs: their outcomes and, with stretches, what they
/// did about them.
struct Batch {
    outcomes: Vec<Outcome>,
    stretches: Option<StretchStats>,
}

/// Runs `runs` seeded simulations of `regression` without alerts, each
/// stopping at promotion or rollback.
fn batch(policy: &Policy, scenario: &Scenario, runs: u32, regression: Regression) -> Batch {
    let stretches = scenario.blind_spans(policy);
    let mut stats = StretchStats::default();
    let outcomes = (0..runs)
        .map(|i| {
            let mut s = scenario.clone();
            s.seed = scenario.seed.wrapping_add(u64::from(i));
            s.alert_at = None;
            s.load.regression = regression;
            let run = Simulation::new(policy, &s).run(true);
            stats.add(&run, &stretches);
            run.outcome
        })
        .collect();
    Batch {
        outcomes,
        stretches: scenario.has_stretches().then_some(stats),
    }
}

/// Runs `runs` healthy and (if the scenario has one) `runs` regressed
/// simulations without alerts, each stopping at promotion or rollback.
pub fn summarize(policy: &Policy, scenario: &Scenario, runs: u32) -> Summary {
    let healthy = batch(policy, scenario, runs, Regression::None);
    let healthy_stretches = healthy.stretches;
    let healthy = healthy.outcomes;
    let count = |outcomes: &[Outcome], r: OutcomeKind| {
        outcomes.iter().filter(|o| o.result == r).count() as u32
    };
    let mut summary = Summary {
        runs,
        seed: scenario.seed,
        healthy_promoted: Spread::of(healthy.iter().filter_map(|o| o.promoted_at).collect()),
        healthy_rolled_back: count(&healthy, OutcomeKind::RolledBack),
        healthy_unfinished: count(&healthy, OutcomeKind::Unfinished),
        regression: scenario.load.regression,
        regression_caught: None,
        regression_missed: None,
        outages: scenario.outages.clone(),
        no_traffic: scenario.no_traffic.clone(),
        healthy_stretches,
        regression_stretches: None,
    };
    if scenario.load.regression != Regression::None {
        let regressed = batch(policy, scenario, runs, scenario.load.regression);
        summary.regression_stretches = regressed.stretches;
        let regressed = regressed.outcomes;
        summary.regression_caught = Some(Spread::of(
            regressed.iter().filter_map(|o| o.rollback_at).collect(),
        ));
        summary.regression_missed = Some(count(&regressed, OutcomeKind::Promoted));
    }
    summary
}

/// Parses a time offset such as `25m`, `90s`, `1h30m` or a plain number of seconds.
pub fn parse_offset(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid time {text:?}: expected e.g. 90s, 25m or 1h30m");
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let (mut total, mut digits, mut any) = (0u64, String::new(), false);
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

/// A one-line description of the policy's plan for `replicas` replicas.
pub fn describe_plan(policy: &Policy, replicas: u32) -> String {
    let traffic = match &policy.traffic {
        Traffic::Replicas => String::from("traffic by replicas"),
        Traffic::IngressNginx { ingress } => format!("ingress-nginx canary of Ingress {ingress}"),
        Traffic::GatewayApi { route } => format!("Gateway API weights on HTTPRoute {route}"),
    };
    let steps: Vec<String> = (0..rollout::step_count(policy))
        .filter_map(|i| rollout::planned_step(policy, i, replicas))
        .map(|p| {
            let mut s = format!("{} pod(s)", p.canary_replicas);
            if let Some(w) = p.weight {
                s.push_str(&format!(" @{w}%"));
            }
            s.push_str(&format!(" {}", rollout::format_secs(p.observe_secs)));
            if p.gate {
                s.push_str(" gated");
            }
            s
        })
        .collect();
    match &policy.strategy {
        Strategy::BlueGreen(bg) => format!(
            "blue-green on Service {} ({} new pods analysed {} on {:.0}% preview traffic, keep old {}), {traffic}",
            bg.active_service,
            replicas,
            rollout::format_secs(bg.observe.as_secs()),
            PREVIEW_SHARE * 100.0,
            rollout::format_secs(bg.keep_old_for.as_secs())
        ),
        Strategy::Canary(_) => format!(
            "canary {} of {replicas} replicas, {traffic}, baseline {:?}",
            steps.join(" / "),
            policy.baseline
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regressions_parse_and_print() {
        assert_eq!(
            "errors:x2".parse::<Regression>(),
            Ok(Regression::Errors { factor: 2.0 })
        );
        assert_eq!(
            "latency:+50%".parse::<Regression>(),
            Ok(Regression::Latency { increase: 0.5 })
        );
        assert_eq!("none".parse::<Regression>(), Ok(Regression::None));
        for bad in ["errors:2", "errors:x0", "latency:50%", "latency:+-5%", "x"] {
            assert!(bad.parse::<Regression>().is_err(), "{bad}");
        }
        assert_eq!(
            Regression::Latency { increase: 0.5 }.to_string(),
            "latency:+50%"
        );
        assert_eq!(
            Regression::Errors { factor: 5.0 }.apply(0.3, 0.1),
            (1.0, 0.1)
        );
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("25m"), Ok(1500));
        assert_eq!(parse_offset("1h30m"), Ok(5400));
        assert_eq!(parse_offset("90"), Ok(90));
        for bad in ["", "m", "5x", "10m5"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Spread::of((1..=10).rev().collect());
        assert_eq!((s.count, s.median_secs, s.p90_secs), (10, Some(5), Some(9)));
        assert_eq!(Spread::of(Vec::new()).median_secs, None);
    }
}
