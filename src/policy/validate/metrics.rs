//! `analysis.metrics`: metric names, kinds, query templates and bounds.

use serde_saphyr::{Location, Spanned};

use super::names::non_empty;
use super::scalars::{bool_or, number, number_where, one_of};
use super::{missing, Ctx, MAX_METRIC_NAME_BYTES};
use crate::policy::defaults::{
    DEFAULT_CRITICAL, DEFAULT_DIRECTION, DEFAULT_ERRORS_MIN_EFFECT, DEFAULT_METRIC_WEIGHT,
    DEFAULT_MIN_EFFECT,
};
use crate::policy::raw::*;
use crate::policy::types::*;
use crate::policy::values::*;

pub(super) fn template(ctx: &mut Ctx<'_>, v: &Spanned<String>, path: &str) -> Option<Template> {
    let problems = check_template(&v.value);
    let ok = problems.is_empty();
    for p in problems {
        ctx.err(v.referenced, path, p);
    }
    ok.then(|| Template(v.value.clone()))
}

pub(super) fn validate_metrics(
    ctx: &mut Ctx<'_>,
    metrics: &List<RawMetric>,
) -> Option<Vec<MetricSpec>> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut all_ok = true;
    for (i, m) in metrics.iter().enumerate() {
        let Some(m) = m else {
            all_ok = false;
            continue;
        };
        let path = format!("analysis.metrics[{i}]");
        if let Some(name) = &m.value.name {
            if let Some((_, j)) = seen.iter().find(|(n, _)| *n == name.value) {
                ctx.err(
                    name.referenced,
                    join(&path, "name"),
                    format!(
                        "duplicate metric name {:?}; analysis.metrics[{j}] already uses it",
                        name.value
                    ),
                );
                all_ok = false;
            } else {
                seen.push((name.value.clone(), i));
            }
        }
        match validate_metric(ctx, m, &path) {
            Some(spec) => out.push(spec),
            None => all_ok = false,
        }
    }
    all_ok.then_some(out)
}

/// A metric name: non-empty, at most [`MAX_METRIC_NAME_BYTES`].
pub(super) fn metric_name(ctx: &mut Ctx<'_>, n: &Spanned<String>, path: &str) -> Option<String> {
    let name = non_empty(ctx, n, path)?;
    if name.len() > MAX_METRIC_NAME_BYTES {
        ctx.err(
            n.referenced,
            path,
            format!(
                "name is {} bytes; use at most {MAX_METRIC_NAME_BYTES}",
                name.len()
            ),
        );
        return None;
    }
    Some(name)
}

pub(super) fn validate_metric(
    ctx: &mut Ctx<'_>,
    m: &Spanned<RawMetric>,
    path: &str,
) -> Option<MetricSpec> {
    let at = m.referenced;
    let m = &m.value;
    let name = match &m.name {
        None => {
            missing(ctx, at, &join(path, "name"), "a unique metric name");
            None
        }
        Some(n) => metric_name(ctx, n, &join(path, "name")),
    };
    let kind = match &m.kind {
        None => {
            missing(ctx, at, &join(path, "kind"), "errors, latency or gauge");
            None
        }
        Some(k) => one_of(
            ctx,
            k,
            &join(path, "kind"),
            &[
                ("errors", Kind::Errors),
                ("latency", Kind::Latency),
                ("gauge", Kind::Gauge),
            ],
        ),
    };
    let templates = kind.map(|kind| metric_templates(ctx, m, at, path, kind));
    let direction = match &m.direction {
        None => Some(DEFAULT_DIRECTION),
        Some(d) => one_of(
            ctx,
            d,
            &join(path, "direction"),
            &[
                ("increase", Direction::Increase),
                ("decrease", Direction::Decrease),
                ("either", Direction::Either),
            ],
        ),
    };
    let default_effect = if kind == Some(Kind::Errors) {
        DEFAULT_ERRORS_MIN_EFFECT
    } else {
        DEFAULT_MIN_EFFECT
    };
    let min_effect = match &m.min_effect {
        None => Some(default_effect),
        Some(v) => number_where(ctx, v, &join(path, "minEffect"), |x| x > 0.0, "above 0"),
    };
    let weight = match &m.weight {
        None => Some(DEFAULT_METRIC_WEIGHT),
        Some(v) => number_where(ctx, v, &join(path, "weight"), |x| x > 0.0, "above 0"),
    };
    let bounds = match &m.bounds {
        None => Some(None),
        Some(b) => validate_bounds(ctx, b, &join(path, "bounds")).map(Some),
    };
    Some(MetricSpec {
        name: name?,
        kind: metric_kind(kind?, &templates?)?,
        direction: direction?,
        bounds: bounds?,
        critical: bool_or(&m.critical, DEFAULT_CRITICAL),
        min_effect: min_effect?,
        weight: weight?,
    })
}

/// A metric's `kind` as written, before its queries are checked.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Errors,
    Latency,
    Gauge,
}

/// The query templates `kind` uses, in field order (`None` for one missing
/// or invalid); a query field of another kind is reported as stray.
fn metric_templates(
    ctx: &mut Ctx<'_>,
    m: &RawMetric,
    at: Location,
    path: &str,
    kind: Kind,
) -> Vec<Option<Template>> {
    // Which query fields each kind uses, so stray ones are reported.
    let fields: [(&str, &Option<Spanned<String>>, Kind, &str); 4] = [
        ("errors", &m.errors, Kind::Errors, "the error-count query"),
        ("total", &m.total, Kind::Errors, "the request-count query"),
        (
            "buckets",
            &m.buckets,
            Kind::Latency,
            "the histogram bucket query",
        ),
        ("query", &m.query, Kind::Gauge, "the gauge query"),
    ];
    let mut templates: Vec<Option<Template>> = Vec::new();
    let kind_name = m.kind.as_ref().map_or("", |k| k.value.as_str());
    for (field, value, owner, what) in fields {
        let p = join(path, field);
        match (value, owner == kind) {
            (Some(v), true) => templates.push(template(ctx, v, &p)),
            (None, true) => {
                missing(ctx, at, &p, &format!("{what}, needed by kind {kind_name}"));
                templates.push(None);
            }
            (Some(v), false) => {
                ctx.err(
                    v.referenced,
                    p,
                    format!(
                        "{field} is not used by kind {kind_name}; remove it or change the kind"
                    ),
                );
                templates.push(None);
            }
            (None, false) => {}
        }
    }
    templates
}

/// The typed kind, when every template it needs is valid.
fn metric_kind(kind: Kind, templates: &[Option<Template>]) -> Option<MetricKind> {
    match (kind, templates) {
        (Kind::Errors, [Some(errors), Some(total)]) => Some(MetricKind::Errors {
            errors: errors.clone(),
            total: total.clone(),
        }),
        (Kind::Latency, [Some(buckets)]) => Some(MetricKind::Latency {
            buckets: buckets.clone(),
        }),
        (Kind::Gauge, [Some(query)]) => Some(MetricKind::Gauge {
            query: query.clone(),
        }),
        _ => None,
    }
}

pub(super) fn validate_bounds(
    ctx: &mut Ctx<'_>,
    b: &Spanned<RawBounds>,
    path: &str,
) -> Option<Bounds> {
    let min = b
        .value
        .min
        .as_ref()
        .map(|v| number(ctx, v, &join(path, "min")));
    let max = b
        .value
        .max
        .as_ref()
        .map(|v| number(ctx, v, &join(path, "max")));
    match (min, max) {
        (None, None) => {
            ctx.err(b.referenced, path, "expected min, max or both");
            None
        }
        (Some(Some(lo)), Some(Some(hi))) if lo > hi => {
            let at = b.value.min.as_ref().map_or(b.referenced, |m| m.referenced);
            ctx.err(
                at,
                join(path, "min"),
                format!("min {lo} must not be above max {hi}"),
            );
            None
        }
        (Some(None), _) | (_, Some(None)) => None,
        (min, max) => Some(Bounds {
            min: min.flatten(),
            max: max.flatten(),
        }),
    }
}
