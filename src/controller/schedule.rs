//! Pure timing and pause decisions: when a rollout next needs a look, and
//! whether the target should be paused.

use std::time::Duration;

use crate::policy::Policy;
use crate::rollout::{self, Phase, RolloutState};

/// Longest wait between looks at a managed Deployment; watch events normally
/// come much sooner. A safety net for missed events, not a polling loop.
pub const RESYNC: Duration = Duration::from_secs(120);
/// Slack after a due second so the engine's whole-second clock has passed it.
pub const DUE_SLACK: Duration = Duration::from_millis(20);

pub use crate::rollout::guard_secs;

/// The next Unix second (after `now`) at which the engine has something to
/// decide without any cluster change: a window closes, a step's observation
/// ends, a deadline or the guard window passes. `None` when only a change
/// (or an approval) can move the rollout.
pub fn next_due(policy: &Policy, state: &RolloutState, now: u64) -> Option<u64> {
    let deadline = policy.progress_deadline.as_secs();
    let mut due = Vec::new();
    match state.phase {
        Phase::Idle | Phase::RolledBack | Phase::Failed => {}
        Phase::Initializing | Phase::Promoting | Phase::RollingBack => {
            due.push(state.phase_started_at.saturating_add(deadline));
            // The engine counts effects of a phase's own actions from the
            // next second on; look again then even if no event arrives.
            due.push(state.phase_started_at.saturating_add(1));
        }
        Phase::Progressing { step } | Phase::WaitingForGate { step } => {
            due.extend(rollout::next_window_close(policy, state));
            if let (Some(started), Some(plan)) = (
                state.step_started_at,
                rollout::planned_step(policy, step, 1),
            ) {
                due.push(started.saturating_add(plan.observe_secs));
                due.push(started.saturating_add(deadline));
            }
            if let (Some(_), Some(started)) = (state.no_data_since, state.analysis_started_at) {
                due.push(started.saturating_add(policy.analysis.max_duration.as_secs()));
            }
        }
        Phase::Promoted => {
            let at = state.promoted_at.unwrap_or(state.phase_started_at);
            due.push(at.saturating_add(guard_secs(policy)));
        }
    }
    due.into_iter().filter(|&t| t > now).min()
}

/// How long to wait before the next look: until `due` (plus [`DUE_SLACK`])
/// measured from `now_ms` (Unix milliseconds), at most [`RESYNC`].
pub fn wait_for(due: Option<u64>, now_ms: u128) -> Duration {
    let Some(due) = due else {
        return RESYNC;
    };
    let due_ms = u128::from(due) * 1000;
    let wait =
        Duration::from_millis(due_ms.saturating_sub(now_ms).min(u128::from(u64::MAX)) as u64);
    (wait + DUE_SLACK).min(RESYNC)
}

/// Whether the target should be paused. It runs unpaused only while it must
/// roll: to the promoted revision, back to the stable one, or to its very
/// first ReplicaSet; a finished rollout is paused again at once, so a new
/// template never rolls out by itself.
pub fn want_paused(
    state: &RolloutState,
    desired_hash: &str,
    rolled_out: bool,
    has_replica_sets: bool,
) -> bool {
    let desired = Some(desired_hash.to_string());
    let rolling = match state.phase {
        Phase::Promoting => state.revision == desired,
        Phase::RollingBack => state.stable_hash == desired,
        _ => false,
    };
    if !has_replica_sets {
        return false;
    }
    !rolling || rolled_out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_str;
    use std::path::Path;

    fn policy() -> Policy {
        let text = include_str!("../../policies/myapp.yaml");
        parse_str(text, Path::new("myapp.yaml")).unwrap()
    }

    fn state(phase: Phase) -> RolloutState {
        RolloutState {
            phase,
            phase_started_at: 1000,
            analysis_started_at: Some(1000),
            step_started_at: Some(1000),
            window_started_at: Some(1000),
            revision: Some("new".into()),
            stable_hash: Some("old".into()),
            ..RolloutState::default()
        }
    }

    #[test]
    fn analysing_wakes_at_the_window_close() {
        let p = policy();
        // interval 1m, step 1 observes 10m, progressDeadline 10m.
        assert_eq!(
            next_due(&p, &state(Phase::Progressing { step: 0 }), 1000),
            Some(1060)
        );
        let mut s = state(Phase::Progressing { step: 0 });
        s.window_started_at = Some(1590);
        assert_eq!(
            next_due(&p, &s, 1590),
            Some(1600),
            "step end before the window close"
        );
    }

    #[test]
    fn in_flight_phases_wake_next_second_then_at_the_deadline() {
        let p = policy();
        let s = state(Phase::Promoting);
        assert_eq!(next_due(&p, &s, 1000), Some(1001));
        assert_eq!(next_due(&p, &s, 1001), Some(1600));
        assert_eq!(next_due(&p, &state(Phase::Idle), 1000), None);
    }

    #[test]
    fn promoted_wakes_when_the_guard_window_ends() {
        let p = policy();
        let mut s = state(Phase::Promoted);
        s.promoted_at = Some(2000);
        assert_eq!(next_due(&p, &s, 2000), Some(2600));
    }

    #[test]
    fn waits_are_bounded_and_never_negative() {
        assert_eq!(wait_for(None, 0), RESYNC);
        assert_eq!(wait_for(Some(10), 9_500), Duration::from_millis(520));
        assert_eq!(wait_for(Some(10), 11_000), DUE_SLACK);
        assert_eq!(wait_for(Some(100_000), 0), RESYNC);
    }

    #[test]
    fn paused_except_while_rolling() {
        let idle = state(Phase::Idle);
        assert!(want_paused(&idle, "new", false, true));
        assert!(
            !want_paused(&idle, "new", false, false),
            "first ReplicaSet rolls out"
        );
        let promoting = state(Phase::Promoting);
        assert!(!want_paused(&promoting, "new", false, true));
        assert!(
            want_paused(&promoting, "new", true, true),
            "re-paused once rolled"
        );
        assert!(
            want_paused(&promoting, "newer", false, true),
            "a newer template waits"
        );
        let back = state(Phase::RollingBack);
        assert!(!want_paused(&back, "old", false, true));
        assert!(want_paused(&back, "new", false, true));
        assert!(want_paused(
            &state(Phase::Progressing { step: 1 }),
            "new",
            false,
            true
        ));
    }
}
