//! The rollout engine: a pure state machine `(state, observation) → (state, actions)`.
