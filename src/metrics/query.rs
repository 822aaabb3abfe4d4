//! Building one batched PromQL query per metric and window, and reading its
//! answer back into one value per arm. Pure: no I/O.
//!
//! Each rendered template is wrapped in `label_replace` calls that add the
//! labels [`ARM_LABEL`] (`canary`/`baseline`/`stable`) and, for error metrics,
//! [`PART_LABEL`] (`errors`/`total`); the wrapped terms are joined with `or`.
//! Because the added labels differ, `or` keeps every term's series, so one
//! instant query returns both arms (and both parts) at once.
//!
//! Before that, every `window_increase(SELECTOR)` in a rendered template is
//! expanded into [`window_increase`]: the exact per-window counter increase.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_http_query::response::{Data, InstantVector};

use crate::observation::{ArmValue, Histogram, Sample};
use crate::policy::{
    window_increase_calls, MetricKind, MetricSpec, Policy, Template, TemplateVars,
};

use super::{pod_regex, MetricsError, Role};

/// Label added to every series with the arm's role.
pub const ARM_LABEL: &str = "canaryd_arm";
/// Label added to error-metric series: `errors` or `total`.
pub const PART_LABEL: &str = "canaryd_part";

const PART_ERRORS: &str = "errors";
const PART_TOTAL: &str = "total";

/// A window length as a PromQL duration: `60s`, or `1500ms` when not whole seconds.
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Evaluation step of [`window_increase`]'s subquery: at most one scrape
/// per step for any scrape interval of 1 s or more.
pub const WINDOW_INCREASE_STEP: &str = "1s";
/// How far back [`window_increase`] looks for a series' previous sample
/// (Prometheus' default lookback delta). A series with no sample in this
/// long before a step starts there: that sample is its reference.
pub const WINDOW_INCREASE_LOOKBACK: &str = "5m";

/// The exact increase of every series of `selector` over the window
/// `(end - window, end]` when evaluated at `end`: the expansion of
/// `window_increase(selector)`.
///
/// A subquery steps through the window every [`WINDOW_INCREASE_STEP`]. At
/// step `t`, `cur` is the series' last sample in the second up to `t`
/// (absent when none was scraped then) and `prev` its last sample before
/// that, within [`WINDOW_INCREASE_LOOKBACK`] (`last_over_time` skips
/// staleness markers). The step adds `cur - prev`, or `cur` itself when that
/// is negative (a counter reset: the process restarted from zero), and
/// nothing without a `prev` (a new series' first sample is its reference, as
/// for `increase`: a new pod's requests before its first scrape are not
/// placed in a window they may not belong to). The steps tile the window, so
/// without resets the sum telescopes to "last sample in the window minus
/// last sample before it": no extrapolation, and consecutive windows neither
/// overlap nor leave gaps. A vanished pod keeps what it was scraped with
/// before it vanished; a scrape gap (staleness markers) is bridged.
///
/// `cur * 1` drops the metric name (as the subtraction does), so a series
/// keeps one label set across steps. The subquery range is one millisecond
/// short of the window because Prometheus 2 ranges include their start.
pub fn window_increase(selector: &str, window: Duration) -> String {
    let range = promql_duration(
        window
            .saturating_sub(Duration::from_millis(1))
            .max(Duration::from_millis(1)),
    );
    let (step, lookback) = (WINDOW_INCREASE_STEP, WINDOW_INCREASE_LOOKBACK);
    let cur = format!("last_over_time({selector}[{step}])");
    let prev = format!("last_over_time({selector}[{lookback}] offset {step})");
    format!("sum_over_time((({cur} - {prev}) >= 0 or {cur} * 1 and {prev})[{range}:{step}])")
}

/// Replaces every `window_increase(SELECTOR)` in `query` with
/// [`window_increase`] over `window`. A malformed call (rejected when the
/// policy is loaded) is left as written, for Prometheus to report.
pub fn expand_window_increase(query: &str, window: Duration) -> String {
    let Ok(calls) = window_increase_calls(query) else {
        return query.to_owned();
    };
    let mut out = String::with_capacity(query.len());
    let mut done = 0;
    for call in calls {
        out.push_str(&query[done..call.call.start]);
        out.push_str(&window_increase(&query[call.selector], window));
        done = call.call.end;
    }
    out.push_str(&query[done..]);
    out
}

/// Renders `template` for `role`'s pods of `policy`'s deployment over
/// `window`, with `window_increase(...)` expanded.
pub fn render(template: &Template, policy: &Policy, role: Role, window: Duration) -> String {
    let regex = pod_regex(&policy.deployment, role);
    let length = promql_duration(window);
    let query = template.render(&TemplateVars {
        namespace: &policy.namespace,
        service: &policy.service,
        deployment: &policy.deployment,
        role: role.as_str(),
        pod_regex: &regex,
        window: &length,
    });
    expand_window_increase(&query, window)
}

fn tagged(expr: &str, label: &str, value: &str) -> String {
    format!("label_replace({expr}, \"{label}\", \"{value}\", \"\", \"\")")
}

/// The single query fetching `spec` for the canary and `baseline` over `window`.
pub fn batched_query(
    policy: &Policy,
    spec: &MetricSpec,
    baseline: Role,
    window: Duration,
) -> String {
    let mut terms = Vec::new();
    for arm in [Role::Canary, baseline] {
        let arm_term =
            |t: &Template| tagged(&render(t, policy, arm, window), ARM_LABEL, arm.as_str());
        match &spec.kind {
            MetricKind::Errors { errors, total } => {
                terms.push(tagged(&arm_term(errors), PART_LABEL, PART_ERRORS));
                terms.push(tagged(&arm_term(total), PART_LABEL, PART_TOTAL));
            }
            MetricKind::Latency { buckets } => terms.push(arm_term(buckets)),
            MetricKind::Gauge { query } => terms.push(arm_term(query)),
        }
    }
    terms.join(" or ")
}

/// Reads the answer to [`batched_query`] into `(canary, baseline)` values.
///
/// Never fails: every problem becomes `ArmValue::NoData` with the error text.
pub fn parse_batched(spec: &MetricSpec, baseline: Role, data: &Data) -> (ArmValue, ArmValue) {
    let series = match data {
        Data::Vector(v) => v,
        other => {
            let found = match other {
                Data::Matrix(_) => "matrix",
                _ => "scalar",
            };
            let err = MetricsError::ResultType {
                metric: spec.name.clone(),
                found: found.into(),
            };
            return (
                ArmValue::NoData(err.to_string()),
                ArmValue::NoData(err.to_string()),
            );
        }
    };
    let arm = |role: Role| {
        let mine: Vec<&InstantVector> = series
            .iter()
            .filter(|s| s.metric().get(ARM_LABEL).map(String::as_str) == Some(role.as_str()))
            .collect();
        match parse_arm(spec, role, &mine) {
            Ok(sample) => ArmValue::Sample(sample),
            Err(e) => ArmValue::NoData(e.to_string()),
        }
    };
    (arm(Role::Canary), arm(baseline))
}

fn parse_arm(
    spec: &MetricSpec,
    role: Role,
    series: &[&InstantVector],
) -> Result<Sample, MetricsError> {
    match &spec.kind {
        MetricKind::Errors { .. } => {
            let part = |p: &str| -> Vec<&InstantVector> {
                series
                    .iter()
                    .copied()
                    .filter(|s| s.metric().get(PART_LABEL).map(String::as_str) == Some(p))
                    .collect()
            };
            let total_name = format!("{}/{PART_TOTAL}", spec.name);
            let total = single(&total_name, role, &part(PART_TOTAL))?;
            let total = count(&total_name, role, total)?;
            // An error counter that never fired has no series at all: with a
            // total present, that is zero errors, not missing data.
            let errors_series = part(PART_ERRORS);
            let errors_name = format!("{}/{PART_ERRORS}", spec.name);
            let errors = if errors_series.is_empty() {
                0.0
            } else {
                count(
                    &errors_name,
                    role,
                    single(&errors_name, role, &errors_series)?,
                )?
            };
            Ok(Sample::Counts { errors, total })
        }
        MetricKind::Gauge { .. } => {
            let v = single(&spec.name, role, series)?;
            if v.is_nan() {
                return Err(bad_value(&spec.name, role, v));
            }
            Ok(Sample::Gauge(v))
        }
        MetricKind::Latency { .. } => buckets(&spec.name, role, series).map(Sample::Buckets),
    }
}

fn single(metric: &str, role: Role, series: &[&InstantVector]) -> Result<f64, MetricsError> {
    match series {
        [] => Err(MetricsError::NoSeries {
            metric: metric.into(),
            arm: role.as_str().into(),
        }),
        [one] => Ok(one.sample().value()),
        many => Err(MetricsError::SeveralSeries {
            metric: metric.into(),
            arm: role.as_str().into(),
            count: many.len(),
        }),
    }
}

fn bad_value(metric: &str, role: Role, v: f64) -> MetricsError {
    MetricsError::BadValue {
        metric: metric.into(),
        arm: role.as_str().into(),
        value: v.to_string(),
    }
}

fn count(metric: &str, role: Role, v: f64) -> Result<f64, MetricsError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(bad_value(metric, role, v))
    }
}

/// Parses an `le` label value as Prometheus writes it (`0.25`, `+Inf`).
fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

fn buckets(metric: &str, role: Role, series: &[&InstantVector]) -> Result<Histogram, MetricsError> {
    let bad = |detail: String| MetricsError::BadBuckets {
        metric: metric.into(),
        arm: role.as_str().into(),
        detail,
    };
    if series.is_empty() {
        return Err(MetricsError::NoSeries {
            metric: metric.into(),
            arm: role.as_str().into(),
        });
    }
    let mut by_le: Vec<(f64, f64)> = Vec::with_capacity(series.len());
    let mut seen = BTreeMap::new();
    for s in series {
        let raw = s
            .metric()
            .get("le")
            .ok_or_else(|| bad("a series has no le label".into()))?;
        let le = parse_le(raw).ok_or_else(|| bad(format!("le=\"{raw}\" is not a number")))?;
        if seen.insert(raw.clone(), ()).is_some() {
            return Err(bad(format!("le=\"{raw}\" appears twice")));
        }
        by_le.push((le, count(metric, role, s.sample().value())?));
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    if by_le.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad("two le labels with the same bound".into()));
    }
    if by_le.last().map(|b| b.0) != Some(f64::INFINITY) {
        return Err(bad("no le=\"+Inf\" bucket".into()));
    }
    // `window_increase` counts are exact, but a template using `increase`
    // extrapolates each bucket on its own, which can leave a bucket a hair
    // below the one before it; cumulative counts never shrink.
    let mut running = 0.0_f64;
    let (le, counts) = by_le
        .into_iter()
        .map(|(le, c)| {
            running = running.max(c);
            (le, running)
        })
        .unzip();
    Ok(Histogram { le, counts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::*;
    use serde_json::json;

    pub(crate) fn policy_with(kind: MetricKind) -> Policy {
        Policy {
            source: "test.yaml".into(),
            service: "web".into(),
            namespace: "prod".into(),
            deployment: "web".into(),
            strategy: Strategy::Canary(CanaryStrategy { steps: vec![] }),
            traffic: Traffic::Replicas,
            baseline: BaselineMode::Fresh,
            progress_deadline: Duration::from_secs(600),
            analysis: Analysis {
                prometheus: PrometheusConfig {
                    url: "http://127.0.0.1:9".into(),
                    auth: None,
                    ca_file: None,
                },
                interval: Duration::from_secs(60),
                max_duration: Duration::from_secs(3600),
                alpha: 0.05,
                on_no_data: OnNoData::Hold,
                min_requests_per_step: 0,
                mode: JudgeMode::Sequential,
                metrics: vec![MetricSpec {
                    name: "m".into(),
                    kind,
                    direction: Direction::Increase,
                    bounds: None,
                    critical: false,
                    min_effect: 0.5,
                    weight: 1.0,
                }],
            },
            alerts: AlertPolicy {
                matchers: vec![],
                guard_window: Duration::from_secs(0),
            },
            notifications: vec![],
        }
    }

    fn errors_kind() -> MetricKind {
        MetricKind::Errors {
            errors: Template(
                r#"sum(increase(http_requests_total{namespace="{{namespace}}",pod=~"{{podRegex}}",code=~"5.."}[{{window}}]))"#.into(),
            ),
            total: Template(
                r#"sum(increase(http_requests_total{namespace="{{namespace}}",pod=~"{{podRegex}}"}[{{window}}]))"#.into(),
            ),
        }
    }

    fn vector(series: serde_json::Value) -> Data {
        serde_json::from_value(json!({"resultType": "vector", "result": series}))
            .unwrap_or_else(|e| panic!("bad test vector: {e}"))
    }

    fn s(labels: serde_json::Value, v: &str) -> serde_json::Value {
        json!({"metric": labels, "value": [1700000000.0, v]})
    }

    #[test]
    fn durations_render_as_promql() {
        assert_eq!(promql_duration(Duration::from_secs(60)), "60s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn renders_role_regex_and_window() {
        let p = policy_with(errors_kind());
        let MetricKind::Errors { total, .. } = &p.analysis.metrics[0].kind else {
            panic!("kind")
        };
        let q = render(total, &p, Role::Canary, Duration::from_secs(60));
        assert_eq!(
            q,
            format!(
                r#"sum(increase(http_requests_total{{namespace="prod",pod=~"{}"}}[60s]))"#,
                pod_regex("web", Role::Canary)
            )
        );
    }

    #[test]
    fn window_increase_expands_to_an_exact_subquery() {
        assert_eq!(
            window_increase(r#"x{pod=~"a"}"#, Duration::from_secs(60)),
            r#"sum_over_time(((last_over_time(x{pod=~"a"}[1s]) - last_over_time(x{pod=~"a"}[5m] offset 1s)) >= 0 or last_over_time(x{pod=~"a"}[1s]) * 1 and last_over_time(x{pod=~"a"}[5m] offset 1s))[59999ms:1s])"#
        );
        assert!(window_increase("x", Duration::from_secs(5)).ends_with("[4999ms:1s])"));
    }

    #[test]
    fn only_window_increase_calls_are_expanded() {
        let w = Duration::from_secs(10);
        let x = window_increase(r#"x{a="window_increase(y)"}"#, w);
        let z = window_increase("z", w);
        assert_eq!(
            expand_window_increase(
                r#"sum(window_increase(x{a="window_increase(y)"})) / sum(window_increase ( z )) + window_increase_total + window_increase"#,
                w
            ),
            format!("sum({x}) / sum({z}) + window_increase_total + window_increase")
        );
        // Malformed calls are left for Prometheus to reject.
        for bad in [
            "sum(window_increase(x[1m]))",
            "window_increase(x",
            "window_increase(rate(x[1m]))",
        ] {
            assert_eq!(expand_window_increase(bad, w), bad);
        }
    }

    #[test]
    fn default_metrics_render_without_the_helper() {
        let mut p = policy_with(errors_kind());
        p.analysis.metrics = default_metrics();
        for spec in &p.analysis.metrics {
            let q = batched_query(&p, spec, Role::Baseline, Duration::from_secs(60));
            assert!(!q.contains("window_increase") && !q.contains("{{"), "{q}");
            assert!(
                q.contains("[59999ms:1s]") && !q.contains("increase("),
                "{q}"
            );
            assert!(q.contains(&pod_regex("web", Role::Canary)), "{q}");
        }
    }

    #[test]
    fn error_metrics_batch_four_terms_in_one_query() {
        let p = policy_with(errors_kind());
        let q = batched_query(
            &p,
            &p.analysis.metrics[0],
            Role::Baseline,
            Duration::from_secs(30),
        );
        assert_eq!(q.matches(" or ").count(), 3, "{q}");
        assert_eq!(q.matches("label_replace(").count(), 8, "{q}");
        assert!(q.contains(&pod_regex("web", Role::Baseline)));
        assert!(q.contains("[30s]"));
        assert!(!q.contains("{{"));
    }

    #[test]
    fn parses_counts_and_treats_missing_error_series_as_zero() {
        let p = policy_with(errors_kind());
        let data = vector(json!([
            s(
                json!({"canaryd_arm": "canary", "canaryd_part": "errors"}),
                "5"
            ),
            s(
                json!({"canaryd_arm": "canary", "canaryd_part": "total"}),
                "100"
            ),
            s(
                json!({"canaryd_arm": "baseline", "canaryd_part": "total"}),
                "90"
            ),
        ]));
        let (c, b) = parse_batched(&p.analysis.metrics[0], Role::Baseline, &data);
        assert_eq!(
            c,
            ArmValue::Sample(Sample::Counts {
                errors: 5.0,
                total: 100.0
            })
        );
        assert_eq!(
            b,
            ArmValue::Sample(Sample::Counts {
                errors: 0.0,
                total: 90.0
            })
        );
    }

    #[test]
    fn missing_total_nan_and_several_series_are_no_data() {
        let p = policy_with(errors_kind());
        let data = vector(json!([
            s(
                json!({"canaryd_arm": "canary", "canaryd_part": "errors"}),
                "5"
            ),
            s(
                json!({"canaryd_arm": "baseline", "canaryd_part": "total", "pod": "a"}),
                "NaN"
            ),
        ]));
        let (c, b) = parse_batched(&p.analysis.metrics[0], Role::Baseline, &data);
        assert!(
            matches!(&c, ArmValue::NoData(r) if r.contains("no series")),
            "{c:?}"
        );
        assert!(
            matches!(&b, ArmValue::NoData(r) if r.contains("NaN")),
            "{b:?}"
        );
        let data = vector(json!([
            s(
                json!({"canaryd_arm": "canary", "canaryd_part": "total", "pod": "a"}),
                "1"
            ),
            s(
                json!({"canaryd_arm": "canary", "canaryd_part": "total", "pod": "b"}),
                "2"
            ),
        ]));
        let (c, b) = parse_batched(&p.analysis.metrics[0], Role::Baseline, &data);
        assert!(
            matches!(&c, ArmValue::NoData(r) if r.contains("2 series")),
            "{c:?}"
        );
        assert!(
            matches!(&b, ArmValue::NoData(r) if r.contains("no series")),
            "{b:?}"
        );
    }

    #[test]
    fn parses_buckets_sorted_and_monotone() {
        let p = policy_with(MetricKind::Latency {
            buckets: Template("x[{{window}}]".into()),
        });
        let data = vector(json!([
            s(json!({"canaryd_arm": "canary", "le": "+Inf"}), "10"),
            s(json!({"canaryd_arm": "canary", "le": "0.1"}), "4"),
            s(json!({"canaryd_arm": "canary", "le": "0.25"}), "3.9"),
            s(json!({"canaryd_arm": "baseline", "le": "0.1"}), "4"),
        ]));
        let (c, b) = parse_batched(&p.analysis.metrics[0], Role::Baseline, &data);
        assert_eq!(
            c,
            ArmValue::Sample(Sample::Buckets(Histogram {
                le: vec![0.1, 0.25, f64::INFINITY],
                counts: vec![4.0, 4.0, 10.0],
            }))
        );
        assert!(
            matches!(&b, ArmValue::NoData(r) if r.contains("+Inf")),
            "{b:?}"
        );
    }

    #[test]
    fn bad_le_labels_are_no_data() {
        let p = policy_with(MetricKind::Latency {
            buckets: Template("x".into()),
        });
        let data = vector(json!([
            s(json!({"canaryd_arm": "canary", "le": "fast"}), "1"),
            s(json!({"canaryd_arm": "baseline"}), "1"),
        ]));
        let (c, b) = parse_batched(&p.analysis.metrics[0], Role::Baseline, &data);
        assert!(
            matches!(&c, ArmValue::NoData(r) if r.contains("le=\"fast\"")),
            "{c:?}"
        );
        assert!(
            matches!(&b, ArmValue::NoData(r) if r.contains("no le label")),
            "{b:?}"
        );
    }

    #[test]
    fn gauges_and_result_types() {
        let p = policy_with(MetricKind::Gauge {
            query: Template("g".into()),
        });
        let data = vector(json!([
            s(json!({"canaryd_arm": "canary"}), "0.5"),
            s(json!({"canaryd_arm": "stable"}), "NaN"),
        ]));
        let (c, b) = parse_batched(&p.analysis.metrics[0], Role::Stable, &data);
        assert_eq!(c, ArmValue::Sample(Sample::Gauge(0.5)));
        assert!(matches!(b, ArmValue::NoData(_)));
        let scalar: Data =
            serde_json::from_value(json!({"resultType": "scalar", "result": [1.0, "3"]}))
                .unwrap_or_else(|e| panic!("{e}"));
        let (c, _) = parse_batched(&p.analysis.metrics[0], Role::Stable, &scalar);
        assert!(
            matches!(&c, ArmValue::NoData(r) if r.contains("scalar")),
            "{c:?}"
        );
    }
}
