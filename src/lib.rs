//! canaryd: unattended progressive delivery for plain Kubernetes Deployments.
//!
//! The core is pure: [`policy`] validation, the [`judge`] and the [`rollout`]
//! state machine do no I/O. Metric queries, Kubernetes calls and HTTP live at
//! the edges.

pub mod alerts;
pub mod cli;
pub mod demo;
pub mod judge;
pub mod metrics;
pub mod observation;
pub mod policy;
pub mod rollout;
pub mod server;
pub mod simulate;
pub mod telemetry;

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
}

/// Result with canaryd's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
