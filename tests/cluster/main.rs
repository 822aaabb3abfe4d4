//! Tests against the sandbox's real control plane (`scripts/kube-sandbox`),
//! with real Prometheus and Alertmanager on loopback: actuation, the daemon
//! under faults, Alertmanager, the end-to-end release, the manifests in
//! deploy/ and what canaryd assumes of the API (kube_smoke).

#[path = "../support/mod.rs"]
mod support;

mod actuation;
mod alertmanager;
mod daemon;
mod deploy_manifests;
mod e2e;
mod ha;
mod kube_smoke;
mod rbac;
