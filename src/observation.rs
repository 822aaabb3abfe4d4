//! What one observation window yields for each metric and arm.
//!
//! Produced by the metric source (from Prometheus) or by the simulator, and
//! folded into the judge's evidence. Plain data: no I/O here.

use serde::{Deserialize, Serialize};

/// Every metric's values for one closed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WindowObservation {
    /// Seconds since the analysis started, at the close of this window.
    pub at_secs: f64,
    /// The canary's intended share of canary+baseline traffic in this window
    /// (from pod counts or router weights), for the sample-ratio-mismatch check.
    pub expected_canary_share: Option<f64>,
    /// One entry per policy metric, in policy order.
    pub metrics: Vec<MetricWindow>,
}

/// One metric's values in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricWindow {
    /// The policy metric's name.
    pub name: String,
    /// The canary's value, or why there is none.
    pub canary: ArmValue,
    /// The baseline's value, or why there is none.
    pub baseline: ArmValue,
}

/// A value for one arm, or the reason it is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArmValue {
    /// Data was read.
    Sample(Sample),
    /// No usable data; the text says why (no series, NaN, source down…).
    NoData(String),
}

/// One arm's data for one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Sample {
    /// Error and request counts that happened within the window.
    Counts {
        /// Errors in the window.
        errors: f64,
        /// Requests in the window.
        total: f64,
    },
    /// Histogram bucket increases within the window.
    Buckets(Histogram),
    /// One gauge value for the window.
    Gauge(f64),
}

/// Prometheus-style cumulative histogram buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds (`le`), ascending; the last is `f64::INFINITY`.
    pub le: Vec<f64>,
    /// Cumulative count of observations `<= le[i]`.
    pub counts: Vec<f64>,
}

/// Prometheus client libraries' default histogram buckets (finite bounds):
/// the simulator's latency buckets and the judge document's default `le`.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
