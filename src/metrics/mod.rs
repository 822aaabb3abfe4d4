//! Metric sources: the [`MetricSource`] trait and its Prometheus implementation.
//!
//! A source turns a policy's metric templates into one [`WindowObservation`]
//! per closed observation window. Problems with one arm's data (no series,
//! NaN, several series, bad `le` labels) become [`ArmValue::NoData`] with the
//! reason; problems with the source itself (unreachable, timeout, HTTP error
//! status, a Prometheus error response) are a typed [`MetricsError`] that the
//! engine maps to HOLD.
//!
//! [`ArmValue::NoData`]: crate::observation::ArmValue::NoData

mod error;
mod prometheus_source;
mod query;
pub mod range;

use std::time::Duration;

use futures::future::BoxFuture;

use crate::observation::WindowObservation;
use crate::policy::{BaselineMode, Policy};

pub use error::MetricsError;
pub use prometheus_source::{
    PrometheusSource, SourceOptions, CONNECT_TIMEOUT, EVAL_TIMEOUT, INITIAL_BACKOFF, MAX_ATTEMPTS,
    QUERY_TIMEOUT, READY_TIMEOUT,
};
pub use query::{
    batched_query, expand_window_increase, parse_batched, promql_duration, render, window_increase,
    ARM_LABEL, PART_LABEL, WINDOW_INCREASE_LOOKBACK, WINDOW_INCREASE_STEP,
};

/// Alphabet Kubernetes uses for ReplicaSet pod-template hashes and pod-name
/// suffixes (`k8s.io/apimachinery/pkg/util/rand`): no vowels, so it can never
/// spell `canary` or `baseline`.
pub const POD_NAME_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

/// Which set of pods a query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The new release: pods of `<deployment>-canary`.
    Canary,
    /// A fresh copy of the stable release: pods of `<deployment>-baseline`.
    Baseline,
    /// The stable release: pods of `<deployment>` itself.
    Stable,
}

impl Role {
    /// The value substituted for `{{role}}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Canary => "canary",
            Role::Baseline => "baseline",
            Role::Stable => "stable",
        }
    }

    /// The role the canary is compared against under `mode`.
    pub fn comparison(mode: BaselineMode) -> Role {
        match mode {
            BaselineMode::Fresh => Role::Baseline,
            BaselineMode::Stable => Role::Stable,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PromQL regex (RE2, fully anchored by Prometheus) matching the names of
/// the pods of `role` for `deployment`.
///
/// Pods are named `<deployment>-canary-<hash>-<suffix>`,
/// `<deployment>-baseline-<hash>-<suffix>` and `<deployment>-<hash>-<suffix>`,
/// where hash and suffix use [`POD_NAME_ALPHABET`]. The stable regex allows
/// exactly two such segments after the deployment name, so it never matches
/// canary or baseline pods. Dots in the name are written `[.]`, so the regex
/// needs no backslashes inside a PromQL string literal.
pub fn pod_regex(deployment: &str, role: Role) -> String {
    let name = deployment.replace('.', "[.]");
    let seg = format!("[{POD_NAME_ALPHABET}]+");
    match role {
        Role::Canary => format!("{name}-canary-{seg}-{seg}"),
        Role::Baseline => format!("{name}-baseline-{seg}-{seg}"),
        Role::Stable => format!("{name}-{seg}-{seg}"),
    }
}

/// One observation window to query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Unix time in seconds at which the window closes; queries are evaluated
    /// at this instant and look back [`Window::length`].
    pub end_unix_secs: i64,
    /// Window length (normally the policy's `analysis.interval`).
    pub length: Duration,
    /// Seconds since the analysis started, at the close of this window.
    pub at_secs: f64,
    /// The canary's intended share of canary+baseline traffic, if known.
    pub expected_canary_share: Option<f64>,
}

/// Where the engine reads canary and baseline metrics from.
///
/// Object-safe so the engine can hold a `Box<dyn MetricSource>`.
pub trait MetricSource: Send + Sync {
    /// Reads every metric of `policy` for `window`.
    ///
    /// Per-arm data problems are reported as `ArmValue::NoData(reason)`; an
    /// `Err` means the source as a whole failed for this window (the engine
    /// holds and tries again next window).
    fn observe<'a>(
        &'a self,
        policy: &'a Policy,
        window: &'a Window,
    ) -> BoxFuture<'a, Result<WindowObservation, MetricsError>>;

    /// Whether the source answers right now (Prometheus: `GET /-/ready`).
    fn is_online(&self) -> BoxFuture<'_, bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(re: &str, s: &str) -> bool {
        regex::Regex::new(&format!("^(?:{re})$"))
            .map(|r| r.is_match(s))
            .unwrap_or(false)
    }

    #[test]
    fn pod_regexes_select_exactly_their_role() {
        let canary = "web-canary-7d9f8b6c5d-x2k4p";
        let baseline = "web-baseline-5c8d7f9b4-qwzrt";
        let stable = "web-6b7c9d8f5-lmn2p";
        let other = "webapp-6b7c9d8f5-lmn2p";
        let cases = [
            (Role::Canary, [true, false, false, false]),
            (Role::Baseline, [false, true, false, false]),
            (Role::Stable, [false, false, true, false]),
        ];
        for (role, want) in cases {
            let re = pod_regex("web", role);
            let got = [canary, baseline, stable, other].map(|p| matches(&re, p));
            assert_eq!(got, want, "{role}: {re}");
        }
    }

    #[test]
    fn dotted_names_need_no_backslashes() {
        let re = pod_regex("web.v1", Role::Stable);
        assert!(!re.contains('\\'));
        assert!(matches(&re, "web.v1-6b7c9d8f5-lmn2p"));
        assert!(!matches(&re, "webxv1-6b7c9d8f5-lmn2p"));
    }

    #[test]
    fn comparison_role_follows_baseline_mode() {
        assert_eq!(Role::comparison(BaselineMode::Fresh), Role::Baseline);
        assert_eq!(Role::comparison(BaselineMode::Stable), Role::Stable);
    }
}
