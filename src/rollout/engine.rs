//! The transition function: one small handler per phase, sharing a few helpers
//! (start, roll back, tear down). Pure: time comes from the input.

use crate::judge::{self, Decision, Evidence, Verdict};
use crate::policy::{Analysis, BlueGreenStrategy, OnNoData, Policy, Strategy};

use super::action::{Action, EventKind, Reason};
use super::fresh;
use super::input::{ActionFailure, Input, Target};
use super::plan::{planned_step, step_count, PlannedStep};
use super::state::{HoldCause, Phase, RolloutState, StepEvidence, VerdictRecord};

/// Advances the rollout by one tick, judging with [`judge::evaluate`].
///
/// Returns the next state and the actions to carry out, in order. Feeding the
/// same input again to the returned state issues nothing new.
pub fn step(policy: &Policy, state: &RolloutState, input: &Input) -> (RolloutState, Vec<Action>) {
    step_with(policy, state, input, judge::evaluate)
}

/// [`step`] with another judge (tests script verdicts with it).
pub fn step_with<J>(
    policy: &Policy,
    state: &RolloutState,
    input: &Input,
    judge: J,
) -> (RolloutState, Vec<Action>)
where
    J: Fn(&Analysis, &Evidence) -> Verdict,
{
    let mut tx = Tx {
        policy,
        input,
        next: state.clone(),
        actions: Vec::new(),
    };
    tx.next.observed_generation = Some(input.target.generation);
    if let Some(failure) = &input.failing {
        on_failing(&mut tx, failure);
        return (tx.next, tx.actions);
    }
    match state.phase {
        Phase::Idle | Phase::RolledBack | Phase::Failed => on_resting(&mut tx),
        Phase::Initializing => on_initializing(&mut tx),
        Phase::Progressing { step } | Phase::WaitingForGate { step } => {
            on_analysing(&mut tx, step, &judge)
        }
        Phase::Promoting => on_promoting(&mut tx),
        Phase::Promoted => on_promoted(&mut tx),
        Phase::RollingBack => on_rolling_back(&mut tx),
    }
    (tx.next, tx.actions)
}

/// When the current observation window closes (Unix seconds), while analysing.
pub fn next_window_close(policy: &Policy, state: &RolloutState) -> Option<u64> {
    if !state.phase.is_analysing() {
        return None;
    }
    Some(state.window_started_at? + policy.analysis.interval.as_secs().max(1))
}

/// Formats seconds as `1h5m`, `10m`, `2m30s` or `45s`.
pub fn format_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// One transition being built: the next state and the actions so far.
struct Tx<'a> {
    policy: &'a Policy,
    input: &'a Input,
    next: RolloutState,
    actions: Vec<Action>,
}

impl Tx<'_> {
    fn now(&self) -> u64 {
        self.input.now
    }

    fn target(&self) -> &Target {
        &self.input.target
    }

    fn event(&mut self, kind: EventKind, reason: Reason, message: String) {
        self.actions.push(Action::Event {
            kind,
            reason,
            message,
        });
    }

    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn enter(&mut self, phase: Phase) {
        self.next.phase = phase;
        self.next.phase_started_at = self.input.now;
    }

    fn planned(&self, index: usize) -> Option<PlannedStep> {
        planned_step(self.policy, index, self.input.target.replicas)
    }

    fn steps(&self) -> usize {
        step_count(self.policy)
    }

    fn revision(&self) -> String {
        self.next.revision.clone().unwrap_or_default()
    }

    fn stable(&self) -> String {
        self.next.stable_hash.clone().unwrap_or_default()
    }

    fn deadline_passed(&self, since: u64) -> bool {
        self.now() >= since.saturating_add(self.policy.progress_deadline.as_secs())
    }

    fn last_reason(&self) -> String {
        self.next
            .last_verdict()
            .map(|v| v.reason.clone())
            .unwrap_or_else(|| String::from("no verdict"))
    }
}

fn blue_green(policy: &Policy) -> Option<&BlueGreenStrategy> {
    match &policy.strategy {
        Strategy::BlueGreen(bg) => Some(bg),
        Strategy::Canary(_) => None,
    }
}

/// The Deployment's template if it is a new revision worth rolling out.
fn candidate(state: &RolloutState, target: &Target) -> Option<String> {
    let desired = &target.desired_hash;
    let fresh = !desired.is_empty()
        && !target.stable_hash.is_empty()
        && *desired != target.stable_hash
        && state.failed_revision.as_ref() != Some(desired);
    fresh.then(|| desired.clone())
}

// ---- failing actions ---------------------------------------------------------

/// Committed actions keep failing: nothing moves forward until they succeed.
/// Alerts, aborts and newer templates still interrupt a rollout in flight
/// (their actions replace the failing ones); after `progressDeadline` since
/// the first failure (or past `maxDuration` while analysing) the rollout rolls
/// back, and a rollback that cannot be carried out ends in `Failed`.
fn on_failing(tx: &mut Tx, failure: &ActionFailure) {
    let phase = tx.next.phase;
    let failed_for = tx.now().saturating_sub(failure.since);
    let what = format!(
        "{} failing for {} ({} attempt(s)): {}",
        failure.action,
        format_secs(failed_for),
        failure.attempts,
        failure.error
    );
    match phase {
        Phase::RollingBack => {
            if tx.deadline_passed(tx.next.phase_started_at) {
                let message = format!(
                    "rollback to {} cannot be carried out within progressDeadline {}: {what}; needs a human",
                    tx.stable(),
                    format_secs(tx.policy.progress_deadline.as_secs())
                );
                tx.next.set_message(&message);
                tx.enter(Phase::Failed);
                tx.event(EventKind::Warning, Reason::RollbackFailed, message);
            }
        }
        _ if phase.is_resting() => {
            if tx.deadline_passed(failure.since) {
                let message = format!("gave up after progressDeadline: {what}");
                tx.event(EventKind::Warning, Reason::ActionDeadlineExceeded, message);
            }
        }
        Phase::Promoting | Phase::Promoted => failing_after_promotion(tx, failure, &what),
        Phase::Initializing | Phase::Progressing { .. } | Phase::WaitingForGate { .. } => {
            if interrupted(tx) {
                return;
            }
            let max_at = tx
                .next
                .analysis_started_at
                .map(|s| s.saturating_add(tx.policy.analysis.max_duration.as_secs()));
            let over_max = max_at.is_some_and(|at| tx.now() >= at);
            if tx.deadline_passed(failure.since) || over_max {
                let limit = if over_max {
                    "maxDuration"
                } else {
                    "progressDeadline"
                };
                let message = format!("{what}; rolling back at the {limit} limit");
                roll_back(tx, Reason::ActionDeadlineExceeded, message);
            }
        }
        Phase::Idle | Phase::RolledBack | Phase::Failed => {}
    }
}

/// Failing actions after the promotion began: a matching alert in the guard
/// window (canary: or while promoting) still rolls back; past the limit the
/// cleanup is given up with a Warning, the promotion stands.
fn failing_after_promotion(tx: &mut Tx, failure: &ActionFailure, what: &str) {
    let promoted_at = tx.next.promoted_at.unwrap_or(tx.next.phase_started_at);
    // Blue-green promotes after its guard window; a canary promotes inside it.
    let in_guard = match tx.next.phase {
        Phase::Promoting => blue_green(tx.policy).is_none(),
        _ => tx.now() < promoted_at.saturating_add(guard_secs(tx.policy)),
    };
    if in_guard && !tx.input.alerts.is_empty() {
        return alert_rollback(tx);
    }
    if in_guard && tx.input.abort {
        return abort(tx);
    }
    if tx.deadline_passed(failure.since) {
        let message = format!("gave up after progressDeadline: {what}; the promotion stands");
        tx.event(EventKind::Warning, Reason::ActionDeadlineExceeded, message);
    }
}

// ---- resting: Idle, RolledBack, Failed --------------------------------------

fn on_resting(tx: &mut Tx) {
    if let Some(hash) = candidate(&tx.next, tx.target()) {
        let stable = tx.target().stable_hash.clone();
        start(tx, hash, stable);
    }
}

/// Starts (or restarts) a rollout of `hash` against `stable`.
fn start(tx: &mut Tx, hash: String, stable: String) {
    let versions = match blue_green(tx.policy) {
        None => None,
        Some(_) => match bg_versions(tx.target()) {
            Ok(v) => Some(v),
            Err(why) => return reject_target(tx, hash, why),
        },
    };
    let Some(first) = tx.planned(0) else {
        return reject_target(tx, hash, String::from("the policy has no steps"));
    };
    tx.next = RolloutState {
        phase_started_at: tx.now(),
        revision: Some(hash.clone()),
        stable_hash: Some(stable.clone()),
        new_version: versions.as_ref().map(|(new, _)| new.clone()),
        stable_version: versions.as_ref().map(|(_, old)| old.clone()),
        observed_generation: tx.next.observed_generation,
        failed_revision: tx.next.failed_revision.clone(),
        phase: Phase::Initializing,
        ..RolloutState::default()
    };
    let baseline = if first.baseline_replicas > 0 {
        format!(
            " beside a baseline of {stable} ({} pod(s))",
            first.baseline_replicas
        )
    } else {
        format!(" compared with the stable pods of {stable}")
    };
    tx.event(
        EventKind::Normal,
        Reason::CanaryStarted,
        format!(
            "starting {hash} with {} pod(s){baseline}",
            first.canary_replicas
        ),
    );
    if first.weight.is_some() {
        // Keep the router at 0% until the canary's pods are ready.
        tx.act(Action::SetWeight { percent: 0 });
    }
    tx.act(Action::EnsureCanary {
        template_hash: hash,
        replicas: first.canary_replicas,
    });
    if first.baseline_replicas > 0 {
        tx.act(Action::EnsureBaseline {
            template_hash: stable,
            replicas: first.baseline_replicas,
        });
    }
    if let (Some(bg), Some((new, _))) = (blue_green(tx.policy), versions) {
        if let Some(preview) = &bg.preview_service {
            tx.act(Action::SwitchSelector {
                service: preview.clone(),
                to_version: new,
            });
        }
    }
}

/// Blue-green needs distinct version labels on the old and new templates.
fn bg_versions(target: &Target) -> Result<(String, String), String> {
    match (&target.desired_version, &target.stable_version) {
        (Some(new), Some(old)) if new != old => Ok((new.clone(), old.clone())),
        (Some(new), Some(_)) => Err(format!(
            "the new template keeps version label value {new:?}; blue-green needs a new value"
        )),
        _ => Err(String::from(
            "the version label is missing on the stable pods or the new template",
        )),
    }
}

fn reject_target(tx: &mut Tx, hash: String, why: String) {
    tx.next.failed_revision = Some(hash.clone());
    tx.next.set_message(&why);
    tx.enter(Phase::Failed);
    tx.event(
        EventKind::Warning,
        Reason::InvalidTarget,
        format!("not rolling out {hash}: {why}"),
    );
}

// ---- interruptions shared by the in-flight phases ---------------------------

/// Abort, alerts and template changes; true when one of them took over.
fn interrupted(tx: &mut Tx) -> bool {
    if tx.input.abort {
        abort(tx);
        return true;
    }
    if !tx.input.alerts.is_empty() {
        alert_rollback(tx);
        return true;
    }
    let desired = tx.target().desired_hash.clone();
    if desired.is_empty() || Some(&desired) == tx.next.revision.as_ref() {
        return false;
    }
    if Some(&desired) == tx.next.stable_hash.as_ref()
        || Some(&desired) == tx.next.failed_revision.as_ref()
    {
        cancel(tx, desired);
    } else {
        tx.event(
            EventKind::Normal,
            Reason::RevisionSuperseded,
            format!(
                "template changed to {desired} while rolling out {}; restarting the analysis on the newest",
                tx.revision()
            ),
        );
        let stable = tx.stable();
        start(tx, desired, stable);
    }
    true
}

fn abort(tx: &mut Tx) {
    roll_back(tx, Reason::Aborted, String::from("abort requested"));
    tx.act(Action::ClearAbort);
}

fn alert_rollback(tx: &mut Tx) {
    let alerts = tx.input.alerts.join(", ");
    roll_back(
        tx,
        Reason::AlertRollback,
        format!("matching alert(s) firing: {alerts}"),
    );
}

/// The template went back to the stable (or a failed) revision: stop quietly.
fn cancel(tx: &mut Tx, desired: String) {
    tx.event(
        EventKind::Normal,
        Reason::Canceled,
        format!(
            "template changed to {desired} while rolling out {}; removing the canary",
            tx.revision()
        ),
    );
    tear_down(tx);
    let stable = tx.stable();
    if desired != stable {
        tx.act(Action::RestoreStable {
            template_hash: stable,
            replacing: desired,
        });
    }
    tx.next.revision = None;
    tx.enter(Phase::Idle);
}

/// Removes the canary side: router weight, canary and baseline.
fn tear_down(tx: &mut Tx) {
    let phase = tx.next.phase;
    let in_flight = matches!(
        phase,
        Phase::Initializing
            | Phase::Progressing { .. }
            | Phase::WaitingForGate { .. }
            | Phase::Promoting
    );
    let bg = blue_green(tx.policy).is_some();
    if in_flight && tx.policy.traffic.has_router() && !bg {
        tx.act(Action::SetWeight { percent: 0 });
    }
    // Blue-green keeps the new version until it retires the old one.
    if in_flight || (bg && phase == Phase::Promoted) {
        tx.act(Action::DeleteCanary);
    }
    if in_flight && tx.planned(0).is_some_and(|p| p.baseline_replicas > 0) {
        tx.act(Action::DeleteBaseline);
    }
}

/// Rolls back at once: traffic first, then the template, then the canary.
fn roll_back(tx: &mut Tx, reason: Reason, message: String) {
    tx.event(EventKind::Warning, reason, message.clone());
    if let Some(bg) = blue_green(tx.policy) {
        if tx.next.phase == Phase::Promoted {
            let old = tx.next.stable_version.clone().unwrap_or_default();
            tx.act(Action::SwitchSelector {
                service: bg.active_service.clone(),
                to_version: old.clone(),
            });
            tx.event(
                EventKind::Warning,
                Reason::SwitchedBack,
                format!("{} selects version {old} again", bg.active_service),
            );
        }
    }
    tear_down(tx);
    let (stable, revision) = (tx.stable(), tx.revision());
    tx.act(Action::RestoreStable {
        template_hash: stable,
        replacing: revision.clone(),
    });
    tx.act(Action::MarkFailedRevision {
        hash: revision.clone(),
    });
    tx.next.failed_revision = Some(revision);
    tx.next.set_message(&message);
    tx.enter(Phase::RollingBack);
}

// ---- Initializing -----------------------------------------------------------

fn pods_ready(target: &Target, revision: Option<&String>, plan: &PlannedStep) -> bool {
    Some(&target.canary_hash) == revision
        && target.canary.has_ready(plan.canary_replicas)
        && (plan.baseline_replicas == 0 || target.baseline.has_ready(plan.baseline_replicas))
}

fn pod_summary(target: &Target, plan: &PlannedStep) -> String {
    let mut text = format!(
        "canary {}/{} ready",
        target.canary.ready, plan.canary_replicas
    );
    if plan.baseline_replicas > 0 {
        text.push_str(&format!(
            ", baseline {}/{} ready",
            target.baseline.ready, plan.baseline_replicas
        ));
    }
    text
}

fn on_initializing(tx: &mut Tx) {
    if interrupted(tx) {
        return;
    }
    let Some(plan) = tx.planned(0) else { return };
    if pods_ready(tx.target(), tx.next.revision.as_ref(), &plan) {
        begin_analysis(tx, &plan);
    } else if tx.deadline_passed(tx.next.phase_started_at) {
        let message = format!(
            "{} after progressDeadline {}",
            pod_summary(tx.target(), &plan),
            format_secs(tx.policy.progress_deadline.as_secs())
        );
        roll_back(tx, Reason::ProgressDeadlineExceeded, message);
    }
}

fn begin_analysis(tx: &mut Tx, plan: &PlannedStep) {
    let now = tx.now();
    tx.enter(Phase::Progressing { step: 0 });
    tx.next.analysis_started_at = Some(now);
    tx.next.step_started_at = Some(now);
    tx.next.window_started_at = Some(now);
    if let Some(percent) = plan.weight {
        tx.act(Action::SetWeight { percent });
    }
    let message = format!(
        "{}; step 1/{}: {}",
        pod_summary(tx.target(), plan),
        tx.steps(),
        describe_step(plan)
    );
    tx.event(EventKind::Normal, Reason::AnalysisStarted, message);
}

fn describe_step(plan: &PlannedStep) -> String {
    let mut text = format!("canary {} pod(s)", plan.canary_replicas);
    if let Some(w) = plan.weight {
        text.push_str(&format!(", weight {w}%"));
    }
    text.push_str(&format!(", observe {}", format_secs(plan.observe_secs)));
    if plan.gate {
        text.push_str(", gated");
    }
    text
}

// ---- Progressing / WaitingForGate -------------------------------------------

fn on_analysing<J>(tx: &mut Tx, step: usize, judge: &J)
where
    J: Fn(&Analysis, &Evidence) -> Verdict,
{
    if interrupted(tx) {
        return;
    }
    let seen = judge_window(tx, step, judge);
    if let Some((verdict, _)) = &seen {
        match verdict.decision {
            Decision::Rollback => {
                let message = format!("step {}/{}: {}", step + 1, tx.steps(), verdict.reason);
                return roll_back(tx, Reason::AnalysisFailed, message);
            }
            Decision::Inconclusive => {
                if hold_for_data(tx, &verdict.reason) {
                    return;
                }
            }
            Decision::Continue | Decision::Promote => {}
        }
    }
    if no_data_expired(tx) || pods_stalled(tx, step) {
        return;
    }
    let inconclusive = tx.next.step_decision == Some(Decision::Inconclusive);
    if inconclusive {
        return;
    }
    let problem = seen.map(|(_, problem)| problem);
    if settle_hold(tx, step, problem) == Settled::Leave {
        leave_step(tx, step);
    }
}

/// Records a new window and judges all evidence; `None` without a new
/// window. Also returns why the window was not usable for the step's own
/// evidence (`None` when it was).
fn judge_window<J>(tx: &mut Tx, step: usize, judge: &J) -> Option<(Verdict, Option<Unusable>)>
where
    J: Fn(&Analysis, &Evidence) -> Verdict,
{
    let window = tx.input.window.as_ref()?;
    let last = tx.next.last_window_at_secs;
    if last.is_some_and(|last| window.at_secs <= last) {
        return None; // already recorded
    }
    let before = fresh::usable_counts(&tx.next.evidence);
    tx.next.evidence.record(window);
    let length = (window.at_secs - last.unwrap_or(0.0)).max(0.0).round() as u64;
    let problem = fresh::fold_window(
        &mut tx.next.step_evidence,
        tx.policy,
        &before,
        &tx.next.evidence,
        window,
        length,
    );
    tx.next.last_window_at_secs = Some(window.at_secs);
    tx.next.window_started_at = Some(tx.now());
    let verdict = judge(&tx.policy.analysis, &tx.next.evidence);
    tx.next.step_decision = Some(verdict.decision);
    let record = VerdictRecord {
        at: tx.now(),
        step,
        decision: verdict.decision,
        reason: verdict.reason.clone(),
    };
    tx.next.push_verdict(record);
    Some((verdict, problem))
}

/// An Inconclusive verdict (no data at all for a metric, a broken traffic
/// split): hold, or roll back under `onNoData: rollback`. True when it
/// rolled back.
fn hold_for_data(tx: &mut Tx, why: &str) -> bool {
    match tx.policy.analysis.on_no_data {
        OnNoData::Rollback => {
            let message = format!("no usable data ({why}); onNoData: rollback");
            roll_back(tx, Reason::NoDataRollback, message);
            true
        }
        OnNoData::Hold => {
            begin_hold(tx, HoldCause::NoData, why);
            false
        }
    }
}

/// Starts a hold: one Event per stretch, whatever else goes missing while
/// it lasts (the first cause names it).
fn begin_hold(tx: &mut Tx, cause: HoldCause, why: &str) {
    if tx.next.hold.is_some() {
        return;
    }
    let since = *tx.next.no_data_since.get_or_insert(tx.now());
    tx.next.hold = Some(cause);
    let analysis = &tx.policy.analysis;
    let started = tx.next.analysis_started_at.unwrap_or(since);
    let ends = started.saturating_add(analysis.max_duration.as_secs());
    let message = format!(
        "holding step {}/{} for {} so far: {why}; NoDataRollback at maxDuration {} ({} left)",
        tx.next.phase.step().map_or(0, |s| s + 1),
        tx.steps(),
        format_secs(tx.now().saturating_sub(since)),
        format_secs(analysis.max_duration.as_secs()),
        format_secs(ends.saturating_sub(tx.now()))
    );
    let reason = match cause {
        HoldCause::NoData => Reason::NoData,
        HoldCause::LowTraffic => Reason::LowTraffic,
    };
    tx.event(EventKind::Warning, reason, message);
}

/// Ends a hold, saying how long it lasted.
fn end_hold(tx: &mut Tx) {
    let (Some(cause), Some(since)) = (tx.next.hold.take(), tx.next.no_data_since.take()) else {
        tx.next.hold = None;
        tx.next.no_data_since = None;
        return;
    };
    let what = match cause {
        HoldCause::NoData => "usable data is back",
        HoldCause::LowTraffic => "the canary served enough requests",
    };
    let message = format!(
        "{what} after holding {}",
        format_secs(tx.now().saturating_sub(since))
    );
    tx.event(EventKind::Normal, Reason::HoldEnded, message);
}

/// Whether the step may be left on this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// The step's time is up and its own evidence suffices.
    Leave,
    /// Keep observing (or holding).
    Stay,
}

/// Where the step stands once its time is up.
enum Due {
    /// Observe time not up, pods not ready, or the judge not satisfied.
    NotYet,
    /// Due, and the step's own evidence suffices.
    Fresh,
    /// Due, but something the step must have seen is missing.
    Missing(fresh::Missing),
}

/// Why a window was not usable for the step's own evidence.
type Unusable = (HoldCause, String);

/// Starts, keeps or ends a hold from this tick's window (`None`: no new
/// window; `Some(None)`: a usable one; `Some(Some(..))`: an unusable one) and
/// the step's own evidence once its time is up. Under `onNoData: rollback`
/// anything missing rolls back instead of holding.
fn settle_hold(tx: &mut Tx, step: usize, window: Option<Option<Unusable>>) -> Settled {
    let Some(plan) = tx.planned(step) else {
        return Settled::Stay;
    };
    let due = if !step_due(tx, &plan) {
        Due::NotYet
    } else {
        match fresh::missing(tx.policy, &plan, &tx.next.step_evidence) {
            Some(m) => Due::Missing(m),
            None => Due::Fresh,
        }
    };
    let rollback = tx.policy.analysis.on_no_data == OnNoData::Rollback;
    match (window, due) {
        (Some(Some((cause, why))), _) if rollback => {
            let what = hold_what(cause);
            let message = format!(
                "step {}/{}: {what} ({why}); onNoData: rollback",
                step + 1,
                tx.steps()
            );
            roll_back(tx, Reason::NoDataRollback, message);
            Settled::Stay
        }
        (Some(Some((cause, why))), _) => {
            begin_hold(tx, cause, &format!("{} ({why})", hold_what(cause)));
            Settled::Stay
        }
        (_, Due::Missing(m)) if rollback => {
            let message = format!(
                "step {}/{}: {}; onNoData: rollback",
                step + 1,
                tx.steps(),
                m.describe()
            );
            roll_back(tx, Reason::NoDataRollback, message);
            Settled::Stay
        }
        (_, Due::Missing(m)) => {
            begin_hold(tx, m.cause(), &m.describe());
            Settled::Stay
        }
        (_, Due::Fresh) => {
            end_hold(tx);
            Settled::Leave
        }
        (Some(None), Due::NotYet) => {
            // A usable window ends a hold for missing data or traffic in the
            // window; a hold for too few requests in the step lasts until
            // the step is due with enough.
            if tx.next.hold.is_some() && !step_lacks_traffic(tx, &plan) {
                end_hold(tx);
            }
            Settled::Stay
        }
        (None, Due::NotYet) => Settled::Stay,
    }
}

/// What a hold of `cause` is waiting for, for messages.
fn hold_what(cause: HoldCause) -> &'static str {
    match cause {
        HoldCause::NoData => "no usable data",
        HoldCause::LowTraffic => "no canary traffic",
    }
}

/// True while the step's own request count is below `minRequestsPerStep`
/// after its observe time: such a hold ends only when the step has enough.
fn step_lacks_traffic(tx: &Tx, plan: &PlannedStep) -> bool {
    let due = tx
        .next
        .step_started_at
        .is_some_and(|s| tx.now() >= s.saturating_add(plan.observe_secs));
    due && matches!(
        fresh::missing(tx.policy, plan, &tx.next.step_evidence),
        Some(fresh::Missing::Traffic { .. })
    )
}

/// Rolls back when a hold has lasted until `max_duration`; true if it did.
fn no_data_expired(tx: &mut Tx) -> bool {
    let (Some(since), Some(started)) = (tx.next.no_data_since, tx.next.analysis_started_at) else {
        return false;
    };
    let max = tx.policy.analysis.max_duration.as_secs();
    if tx.now() < started.saturating_add(max) {
        return false;
    }
    let what = match tx.next.hold {
        Some(HoldCause::LowTraffic) => "too few canary requests",
        _ => "no usable data",
    };
    let message = format!(
        "{what} for {} (last: {}); maxDuration {} reached with onNoData: hold",
        format_secs(tx.now().saturating_sub(since)),
        tx.last_reason(),
        format_secs(max)
    );
    roll_back(tx, Reason::NoDataRollback, message);
    true
}

/// Rolls back when a step's pods are not ready within the deadline; true if it did.
fn pods_stalled(tx: &mut Tx, step: usize) -> bool {
    let (Some(plan), Some(started)) = (tx.planned(step), tx.next.step_started_at) else {
        return false;
    };
    if pods_ready(tx.target(), tx.next.revision.as_ref(), &plan) || !tx.deadline_passed(started) {
        return false;
    }
    let message = format!(
        "step {}/{}: {} after progressDeadline {}",
        step + 1,
        tx.steps(),
        pod_summary(tx.target(), &plan),
        format_secs(tx.policy.progress_deadline.as_secs())
    );
    roll_back(tx, Reason::ProgressDeadlineExceeded, message);
    true
}

/// The step's observe time is up, its pods are ready and the judge finds no
/// harm: only its own evidence may still be missing.
fn step_due(tx: &Tx, plan: &PlannedStep) -> bool {
    let Some(started) = tx.next.step_started_at else {
        return false;
    };
    let observed = tx.now() >= started.saturating_add(plan.observe_secs)
        && pods_ready(tx.target(), tx.next.revision.as_ref(), plan);
    let healthy = matches!(
        tx.next.step_decision,
        Some(Decision::Continue | Decision::Promote)
    );
    observed && healthy
}

fn leave_step(tx: &mut Tx, step: usize) {
    let gated = tx.planned(step).is_some_and(|p| p.gate);
    if gated && !tx.input.approved {
        if tx.next.phase != (Phase::WaitingForGate { step }) {
            tx.enter(Phase::WaitingForGate { step });
            let message = format!(
                "step {}/{} passed ({}); waiting for approval",
                step + 1,
                tx.steps(),
                tx.last_reason()
            );
            tx.event(EventKind::Normal, Reason::WaitingForApproval, message);
        }
        return;
    }
    if gated {
        tx.event(
            EventKind::Normal,
            Reason::GateApproved,
            format!("step {}/{} approved", step + 1, tx.steps()),
        );
        tx.act(Action::ClearApproval);
    }
    advance(tx, step);
}

fn advance(tx: &mut Tx, step: usize) {
    let (Some(done), Some(next)) = (tx.planned(step), tx.planned(step + 1)) else {
        return finish_analysis(tx);
    };
    tx.enter(Phase::Progressing { step: step + 1 });
    tx.next.step_started_at = Some(tx.now());
    tx.next.step_decision = None;
    tx.next.step_evidence = StepEvidence::default();
    if next.canary_replicas != done.canary_replicas {
        tx.act(Action::EnsureCanary {
            template_hash: tx.revision(),
            replicas: next.canary_replicas,
        });
    }
    if next.baseline_replicas != done.baseline_replicas {
        tx.act(Action::EnsureBaseline {
            template_hash: tx.stable(),
            replicas: next.baseline_replicas,
        });
    }
    if let Some(percent) = next.weight.filter(|w| Some(*w) != done.weight) {
        tx.act(Action::SetWeight { percent });
    }
    let message = format!(
        "step {}/{} passed ({}); step {}/{}: {}",
        step + 1,
        tx.steps(),
        tx.last_reason(),
        step + 2,
        tx.steps(),
        describe_step(&next)
    );
    tx.event(EventKind::Normal, Reason::StepAdvanced, message);
}

fn finish_analysis(tx: &mut Tx) {
    let message = format!(
        "all {} step(s) passed ({}); promoting {}",
        tx.steps(),
        tx.last_reason(),
        tx.revision()
    );
    tx.event(EventKind::Normal, Reason::AnalysisPassed, message);
    match blue_green(tx.policy) {
        None => {
            tx.act(Action::Promote {
                template_hash: tx.revision(),
            });
            tx.enter(Phase::Promoting);
        }
        Some(bg) => {
            let new = tx.next.new_version.clone().unwrap_or_default();
            tx.act(Action::SwitchSelector {
                service: bg.active_service.clone(),
                to_version: new.clone(),
            });
            tx.event(
                EventKind::Normal,
                Reason::SwitchedTraffic,
                format!(
                    "{} selects version {new}; the old version is kept for {}",
                    bg.active_service,
                    format_secs(guard_secs(tx.policy))
                ),
            );
            tx.enter(Phase::Promoted);
            tx.next.promoted_at = Some(tx.now());
        }
    }
}

// ---- Promoting / Promoted ---------------------------------------------------

/// How long after promotion (canary) or the switch (blue-green) alerts roll
/// back (also the controller's schedule).
pub fn guard_secs(policy: &Policy) -> u64 {
    let guard = policy.alerts.guard_window.as_secs();
    match blue_green(policy) {
        // The old version must still be there to switch back to.
        Some(bg) => guard.max(bg.keep_old_for.as_secs()),
        None => guard,
    }
}

fn on_promoting(tx: &mut Tx) {
    let bg = blue_green(tx.policy).is_some();
    // Canary: the rollout is still in flight. Blue-green: the guard window
    // already passed at the switch; the old version is being retired.
    if !bg && tx.input.abort {
        return abort(tx);
    }
    if !bg && !tx.input.alerts.is_empty() {
        return alert_rollback(tx);
    }
    let target = tx.target();
    // Effects of this phase's own actions show on a later observation only.
    let rolled = tx.now() > tx.next.phase_started_at
        && Some(&target.stable_hash) == tx.next.revision.as_ref()
        && target.stable.has_ready(target.replicas);
    if rolled {
        promotion_done(tx, bg);
    } else if tx.deadline_passed(tx.next.phase_started_at) {
        let message = format!(
            "{} did not finish rolling to {} within progressDeadline {} ({}/{} pods ready)",
            tx.policy.deployment,
            tx.revision(),
            format_secs(tx.policy.progress_deadline.as_secs()),
            target.stable.ready,
            target.replicas
        );
        if bg {
            // The new version serves through the active Service; nothing to undo.
            tx.next.set_message(&message);
            tx.enter(Phase::Failed);
            tx.event(
                EventKind::Warning,
                Reason::ProgressDeadlineExceeded,
                message,
            );
        } else {
            roll_back(tx, Reason::ProgressDeadlineExceeded, message);
        }
    }
}

fn promotion_done(tx: &mut Tx, bg: bool) {
    if bg {
        tx.act(Action::DeleteCanary);
        complete(tx);
        return;
    }
    tear_down(tx);
    let message = format!(
        "{} runs {} on all {} pod(s); matching alerts roll back for {}",
        tx.policy.deployment,
        tx.revision(),
        tx.target().replicas,
        format_secs(guard_secs(tx.policy))
    );
    tx.event(EventKind::Normal, Reason::Promoted, message);
    tx.enter(Phase::Promoted);
    tx.next.promoted_at = Some(tx.now());
}

fn on_promoted(tx: &mut Tx) {
    let promoted_at = tx.next.promoted_at.unwrap_or(tx.next.phase_started_at);
    let in_guard = tx.now() < promoted_at.saturating_add(guard_secs(tx.policy));
    if in_guard && !tx.input.alerts.is_empty() {
        return alert_rollback(tx);
    }
    if in_guard && tx.input.abort {
        return abort(tx);
    }
    if blue_green(tx.policy).is_some() {
        if !in_guard {
            let message = format!(
                "no matching alert for {} after the switch; rolling {} to {} and retiring {}",
                format_secs(guard_secs(tx.policy)),
                tx.policy.deployment,
                tx.revision(),
                tx.next.stable_version.clone().unwrap_or_default()
            );
            tx.event(EventKind::Normal, Reason::Promoted, message);
            tx.act(Action::Promote {
                template_hash: tx.revision(),
            });
            tx.enter(Phase::Promoting);
        }
        return;
    }
    // A newer template ends the guard window early and starts its own rollout.
    let newer =
        candidate(&tx.next, tx.target()).filter(|hash| Some(hash) != tx.next.revision.as_ref());
    if !in_guard || newer.is_some() {
        complete(tx);
        on_resting(tx);
    }
}

/// The rollout is done: the new revision is the stable one.
fn complete(tx: &mut Tx) {
    let revision = tx.revision();
    tx.event(
        EventKind::Normal,
        Reason::RolloutComplete,
        format!("{revision} is stable"),
    );
    tx.next.stable_hash = Some(revision);
    tx.next.revision = None;
    // The verdicts stay as the record; the evidence would only bloat the annotation.
    tx.next.evidence = Evidence::default();
    tx.enter(Phase::Idle);
}

// ---- RollingBack ------------------------------------------------------------

fn on_rolling_back(tx: &mut Tx) {
    let target = tx.target();
    // Effects of the rollback's own actions show on a later observation only.
    let back = tx.now() > tx.next.phase_started_at
        && Some(&target.stable_hash) == tx.next.stable_hash.as_ref()
        && target.stable.has_ready(target.replicas)
        && target.canary.is_gone()
        && target.baseline.is_gone();
    let why = tx.next.message.clone().unwrap_or_default();
    if back {
        let message = format!(
            "{} serves all {} pod(s) again; {} is not retried until the template changes ({why})",
            tx.stable(),
            target.replicas,
            tx.revision()
        );
        tx.enter(Phase::RolledBack);
        tx.next.evidence = Evidence::default();
        tx.event(EventKind::Warning, Reason::RolledBack, message);
    } else if tx.deadline_passed(tx.next.phase_started_at) {
        let message = format!(
            "rollback to {} not complete within progressDeadline {} ({}/{} stable pods ready); needs a human ({why})",
            tx.stable(),
            format_secs(tx.policy.progress_deadline.as_secs()),
            target.stable.ready,
            target.replicas
        );
        tx.enter(Phase::Failed);
        tx.event(EventKind::Warning, Reason::RollbackStalled, message);
    }
}
