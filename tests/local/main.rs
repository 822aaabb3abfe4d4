//! Tests that need no Kubernetes: the judge, policies, the engine, simulate,
//! reload, and real Prometheus processes on loopback (`tests/support/prom.rs`).
//! One binary so that kube, axum and reqwest are linked once.

#[path = "../support/mod.rs"]
mod support;

mod judge;
mod offline_judge;
mod policies;
mod prometheus;
mod rbac;
mod reload;
mod rollout;
mod simulate;
