//! The rollout engine: a pure state machine `(policy, state, input) → (state, actions)`.
//!
//! No I/O, no logging, no clock: the Kubernetes layer (or `canaryd simulate`)
//! observes the cluster, closes observation windows, calls [`step`], carries
//! out the returned [`Action`]s in order and stores the [`RolloutState`].
//! See `docs/rollout.md` for the phases and transitions.

mod action;
mod engine;
mod fresh;
mod input;
mod plan;
mod state;
pub mod worst_case;

#[cfg(test)]
mod tests;

pub use action::{Action, EventKind, Reason};
pub use engine::{format_secs, guard_secs, next_window_close, step, step_with};
pub use input::{ActionFailure, Input, PodCounts, Target};
pub use plan::{expected_canary_share, planned_step, step_count, PlannedStep, ReadyPods};
pub use state::{
    state_bytes_bound, HoldCause, Phase, RolloutState, StateError, StepEvidence, VerdictRecord,
    MAX_MESSAGE_BYTES, MAX_REASON_BYTES, MAX_STATE_BYTES, MAX_VERDICTS, STATE_VERSION,
};
