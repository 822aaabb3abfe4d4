//! The Kubernetes-facing shell: the managed Deployment and its canary and
//! baseline ([`target`]), traffic routing ([`router`]) and leader election
//! ([`lease`]), and the cluster-wide alert record ([`alert_record`]). Everything here talks to the API server; the decisions come
//! from the pure [`crate::rollout`] engine.

pub mod alert_record;
pub mod client;
pub mod lease;
pub mod rbac;
pub mod router;
pub mod target;
