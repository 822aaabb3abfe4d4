//! canaryd: unattended progressive delivery for plain Kubernetes Deployments.
//!
//! The core is pure: [`policy`] validation, the [`judge`] and the [`rollout`]
//! state machine do no I/O. Metric queries, Kubernetes calls and HTTP live at
//! the edges.

pub mod alerts;
pub mod cli;
pub mod controller;
pub mod daemon;
pub mod demo;
pub mod hash;
pub mod judge;
pub mod k8s;
pub mod metrics;
pub mod observation;
pub mod policy;
pub mod rollout;
pub mod simulate;

/// Errors canaryd reports, named by the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or validating policy files failed.
    #[error("loading policies failed with {} error(s)", .0.len())]
    LoadPolicies(Vec<String>),
    /// Reading an input file or stream failed.
    #[error("reading {path}: {source}")]
    ReadInput {
        /// What was read.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Writing output failed.
    #[error("writing output: {0}")]
    WriteOutput(#[source] std::io::Error),
    /// Parsing `canaryd judge` input failed.
    #[error("{0}")]
    ParseJudgeInput(String),
    /// Starting or running an HTTP server failed.
    #[error("serving HTTP on {addr}: {source}")]
    Serve {
        /// Listen address.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Building a Kubernetes client or reaching the API server failed.
    #[error("connecting to Kubernetes: {0}")]
    KubeClient(#[source] Box<kube::Error>),
    /// Reading a managed Deployment, its ReplicaSets, canary or baseline failed.
    #[error("observing Deployment {name}: {source}")]
    ObserveTarget {
        /// `namespace/name` of the target.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// The `canaryd.io/state` or `canaryd.io/pending` annotation cannot be read.
    #[error("reading the rollout state of {name}: {message}")]
    ReadState {
        /// `namespace/name` of the target.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// Updating the managed Deployment (state, pause, template) failed.
    #[error("updating Deployment {name}: {source}")]
    UpdateTarget {
        /// `namespace/name` of the target.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// Someone else changed the object since it was read (HTTP 409); retried from fresh state.
    #[error("conflict writing {name}: it changed since it was read")]
    Conflict {
        /// `namespace/name` of the object.
        name: String,
    },
    /// Creating or scaling the canary Deployment failed.
    #[error("applying canary Deployment {name}: {source}")]
    ApplyCanary {
        /// `namespace/name` of the canary.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// Creating or scaling the baseline Deployment failed.
    #[error("applying baseline Deployment {name}: {source}")]
    ApplyBaseline {
        /// `namespace/name` of the baseline.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// An object canaryd would create exists and is not owned by the target; it is left alone.
    #[error("{kind} {name} exists and is not owned by the managed Deployment; not touching it")]
    ForeignObject {
        /// Object kind.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
    },
    /// No ReplicaSet of the target holds the template the baseline or a rollback needs.
    #[error("Deployment {name} has no ReplicaSet with template {hash}")]
    MissingTemplate {
        /// `namespace/name` of the target.
        name: String,
        /// canaryd template hash looked for.
        hash: String,
    },
    /// Deleting a canary, baseline or routing object failed (404 counts as success).
    #[error("deleting {kind} {name}: {source}")]
    DeleteObject {
        /// Object kind.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// Setting a traffic weight (canary Service, Ingress or HTTPRoute) failed.
    #[error("setting the canary weight through {kind} {name}: {message}")]
    SetWeight {
        /// Object kind.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
        /// Why it failed.
        message: String,
    },
    /// Switching a Service's version selector failed.
    #[error("switching the selector of Service {name}: {message}")]
    SwitchSelector {
        /// `namespace/name` of the Service.
        name: String,
        /// Why it failed.
        message: String,
    },
    /// Publishing a Kubernetes Event failed.
    #[error("publishing event {reason} on {name}: {source}")]
    PublishEvent {
        /// Event reason.
        reason: rollout::Reason,
        /// `namespace/name` of the target.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// Reading, creating or renewing the leader-election Lease failed.
    #[error("leader election Lease {name}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// Reading or writing the cluster-wide alert record failed.
    #[error("alert record {name}: {source}")]
    AlertRecord {
        /// `namespace/name` of the record.
        name: String,
        /// Why it failed.
        source: Box<kube::Error>,
    },
    /// RBAC refuses the leader-election Lease (HTTP 403): retrying cannot fix it.
    #[error("leader election Lease {name}: forbidden: {source}")]
    LeaseForbidden {
        /// `namespace/name` of the Lease.
        name: String,
        /// The API's refusal.
        source: Box<kube::Error>,
    },
    /// This instance lost leadership (or never had it), so it does not act.
    #[error("leader election Lease (this instance): not the leader; not acting")]
    NotLeader,
    /// Fetching the daemon's rollout board failed.
    #[error("fetching {url}: {message}")]
    FetchStatus {
        /// URL fetched.
        url: String,
        /// Why it failed.
        message: String,
    },
}

impl Error {
    /// Whether this is a write conflict, which a fresh read may resolve.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// Result with canaryd's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
