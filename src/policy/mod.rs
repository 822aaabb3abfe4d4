//! Policy files: raw serde types → `validate()` (collects every error) → typed [`Policy`].
//!
//! Entry points: [`parse_str`], [`load_file`] and [`load_paths`]. Every problem
//! is a [`PolicyError`] located as `file:line:column: field.path: message`.

mod error;
mod load;
mod raw;
mod types;
mod validate;

pub use error::{PolicyError, PolicyErrors};
pub use load::{load_file, load_paths, parse_str, MAX_POLICY_BYTES};
pub use types::*;

/// The metrics judged when a policy omits `analysis.metrics`: the 5xx error
/// ratio (critical) and the request latency histogram, per pod role.
pub fn default_metrics() -> Vec<MetricSpec> {
    let sel = r#"namespace="{{namespace}}",pod=~"{{podRegex}}""#;
    vec![
        MetricSpec {
            name: "errors".into(),
            kind: MetricKind::Errors {
                errors: Template(format!(
                    r#"sum(increase(http_requests_total{{{sel},code=~"5.."}}[{{{{window}}}}]))"#
                )),
                total: Template(format!(
                    "sum(increase(http_requests_total{{{sel}}}[{{{{window}}}}]))"
                )),
            },
            direction: Direction::Increase,
            bounds: None,
            critical: true,
            min_effect: 0.5,
            weight: 1.0,
        },
        MetricSpec {
            name: "latency".into(),
            kind: MetricKind::Latency {
                buckets: Template(format!(
                    "sum by (le) (increase(http_request_duration_seconds_bucket{{{sel}}}[{{{{window}}}}]))"
                )),
            },
            direction: Direction::Increase,
            bounds: None,
            critical: false,
            min_effect: 0.1,
            weight: 1.0,
        },
    ]
}
