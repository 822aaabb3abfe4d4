//! Upper bounds on the JSON size of [`super::Evidence`], so a policy whose
//! rollout state could outgrow its annotation is refused at load.
//!
//! Every float is counted at the longest JSON form of an `f64` (24 bytes,
//! e.g. `-2.2250738585072014e-308`), every integer at 20 bytes, every key
//! with its quotes and punctuation; the unit test in `src/rollout/state.rs`
//! checks the bound against a state filled through [`super::Evidence::record`].

use super::codec::encoded_len;
use super::grid::GRID_LEN;
use super::{MAX_BUCKET_BOUNDS, MAX_PROBLEM_BYTES, MAX_SERIES};
use crate::policy::{MetricKind, MetricSpec};

/// Longest JSON number canaryd writes for an `f64`.
pub const FLOAT_BYTES: usize = 24;
/// Longest JSON number for an integer (u64, i64 or usize).
pub const INT_BYTES: usize = 20;
/// Allowance for the keys, quotes, braces and commas of one JSON object.
const KEYS_BYTES: usize = 160;

/// JSON size of a grid of log likelihood ratios (quoted base64, comma).
pub const GRID_BYTES: usize = encoded_len(GRID_LEN) + 3;

/// JSON size of one series column (quoted base64, comma, key).
const COLUMN_BYTES: usize = encoded_len(MAX_SERIES) + 10;

/// Most bytes of the JSON form of a string of `bytes` bytes without control
/// characters (each `"` or `\` doubles), with its quotes.
pub const fn text_bytes(bytes: usize) -> usize {
    2 * bytes + 2
}

/// JSON size of `s` as a string.
pub fn json_string_bytes(s: &str) -> usize {
    serde_json::to_string(s).map_or(6 * s.len() + 2, |j| j.len())
}

/// Most bytes the evidence's traffic-split part takes.
pub const SRM_BYTES: usize = KEYS_BYTES + 4 * FLOAT_BYTES + INT_BYTES + GRID_BYTES;

/// Most bytes one metric's evidence takes, whatever the rollout's length.
pub fn metric_bytes(spec: &MetricSpec) -> usize {
    let common =
        KEYS_BYTES + json_string_bytes(&spec.name) + 3 * INT_BYTES + text_bytes(MAX_PROBLEM_BYTES);
    let (kind, columns) = match spec.kind {
        MetricKind::Errors { .. } => (KEYS_BYTES + 4 * FLOAT_BYTES + GRID_BYTES, 2),
        MetricKind::Gauge { .. } => (KEYS_BYTES + 2 * FLOAT_BYTES + 2 * INT_BYTES + GRID_BYTES, 2),
        MetricKind::Latency { .. } => {
            let b = MAX_BUCKET_BOUNDS;
            let vectors = (b + 2 * (b + 1)) * (FLOAT_BYTES + 1);
            (KEYS_BYTES + vectors + (b + 1) * GRID_BYTES, 3)
        }
    };
    common + kind + KEYS_BYTES + columns * COLUMN_BYTES
}

/// Most bytes the evidence of a rollout judged on `metrics` takes.
pub fn evidence_bytes(metrics: &[MetricSpec]) -> usize {
    KEYS_BYTES
        + INT_BYTES
        + FLOAT_BYTES
        + SRM_BYTES
        + metrics.iter().map(metric_bytes).sum::<usize>()
}
