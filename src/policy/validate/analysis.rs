//! The `analysis` section: Prometheus, interval, alpha, judge mode and request floor.

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::durations::duration;
use super::metrics::validate_metrics;
use super::names::{http_url, non_empty};
use super::scalars::{number_where, one_of};
use super::{missing, Ctx};
use crate::policy::defaults::DEFAULT_INTERVAL;
use crate::policy::defaults::{
    DEFAULT_ALPHA, DEFAULT_MARGINAL_SCORE, DEFAULT_MAX_DURATION_FACTOR,
    DEFAULT_MIN_REQUESTS_PER_STEP, DEFAULT_ON_NO_DATA, DEFAULT_PASS_SCORE,
};
use crate::policy::raw::*;
use crate::policy::types::*;
use crate::policy::values::*;

/// Shortest `analysis.interval`.
const MIN_INTERVAL: Duration = Duration::from_secs(5);

pub(super) fn validate_analysis(
    ctx: &mut Ctx<'_>,
    a: &Spanned<RawAnalysis>,
    interval: Option<Duration>,
    observe_total: Option<Duration>,
) -> Option<Analysis> {
    let at = a.referenced;
    let a = &a.value;
    let prometheus = match &a.prometheus {
        None => {
            missing(ctx, at, "analysis.prometheus", "at least url");
            None
        }
        Some(p) => validate_prometheus(ctx, p),
    };
    let max_duration = max_duration(ctx, a, observe_total);
    let alpha = match &a.alpha {
        None => Some(DEFAULT_ALPHA),
        Some(v) => number_where(
            ctx,
            v,
            "analysis.alpha",
            |x| x > 0.0 && x < 0.5,
            "above 0 and below 0.5",
        ),
    };
    let on_no_data = match &a.on_no_data {
        None => Some(DEFAULT_ON_NO_DATA),
        Some(v) => one_of(
            ctx,
            v,
            "analysis.onNoData",
            &[("hold", OnNoData::Hold), ("rollback", OnNoData::Rollback)],
        ),
    };
    let mode = validate_mode(ctx, a);
    let metrics = analysis_metrics(ctx, a);
    let min_requests_per_step = min_requests(ctx, a, metrics.as_deref());
    Some(Analysis {
        prometheus: prometheus?,
        interval: interval?,
        max_duration: max_duration?,
        alpha: alpha?,
        on_no_data: on_no_data?,
        min_requests_per_step: min_requests_per_step?,
        mode: mode?,
        metrics: metrics?,
    })
}

/// `analysis.interval`, which bounds every observe duration (so it is read
/// before the strategy).
pub(super) fn validate_interval(
    ctx: &mut Ctx<'_>,
    a: Option<&Spanned<RawAnalysis>>,
) -> Option<Duration> {
    match a.and_then(|a| a.value.interval.as_ref()) {
        None => Some(DEFAULT_INTERVAL),
        Some(v) => {
            let d = duration(ctx, v, "analysis.interval");
            match d {
                Some(d) if d < MIN_INTERVAL => {
                    ctx.err(
                        v.referenced,
                        "analysis.interval",
                        format!("interval must be at least 5s, found {}", format_duration(d)),
                    );
                    None
                }
                d => d,
            }
        }
    }
}

/// `analysis.maxDuration`: at least what the strategy observes in total, by
/// default [`DEFAULT_MAX_DURATION_FACTOR`] times that.
fn max_duration(
    ctx: &mut Ctx<'_>,
    a: &RawAnalysis,
    observe_total: Option<Duration>,
) -> Option<Duration> {
    match (&a.max_duration, observe_total) {
        (None, Some(total)) => Some(total * DEFAULT_MAX_DURATION_FACTOR),
        (None, None) => None,
        (Some(v), total) => {
            let d = duration(ctx, v, "analysis.maxDuration");
            match (d, total) {
                (Some(d), Some(total)) if d < total => {
                    ctx.err(
                        v.referenced,
                        "analysis.maxDuration",
                        format!(
                            "maxDuration {} is shorter than the {} the strategy observes in total",
                            format_duration(d),
                            format_duration(total)
                        ),
                    );
                    None
                }
                (d, _) => d,
            }
        }
    }
}

/// `analysis.metrics`: the default ones when left out, never an empty list,
/// and few enough for the rollout state to fit.
fn analysis_metrics(ctx: &mut Ctx<'_>, a: &RawAnalysis) -> Option<Vec<MetricSpec>> {
    match &a.metrics {
        None => Some(crate::policy::default_metrics()),
        Some(m) if m.value.is_empty() => {
            ctx.err(
            m.referenced,
            "analysis.metrics",
            "expected at least one metric; omit metrics to use the default errors and latency metrics",
        );
            None
        }
        Some(m) => {
            validate_metrics(ctx, &m.value).filter(|specs| state_fits(ctx, m.referenced, specs))
        }
    }
}

/// Whether the worst-case rollout state for these metrics fits in
/// [`crate::rollout::MAX_STATE_BYTES`]; reports an error if not.
pub(super) fn state_fits(ctx: &mut Ctx<'_>, at: Location, metrics: &[MetricSpec]) -> bool {
    let bound = crate::rollout::state_bytes_bound(metrics);
    let max = crate::rollout::MAX_STATE_BYTES;
    if bound <= max {
        return true;
    }
    let latency = metrics
        .iter()
        .filter(|m| matches!(m.kind, MetricKind::Latency { .. }))
        .count();
    ctx.err(
        at,
        "analysis.metrics",
        format!(
            "{} metrics ({latency} latency) could make the rollout state {bound} bytes, above the {max} canaryd stores in its annotation; use fewer metrics (a latency metric takes about 4 times an errors or gauge metric)",
            metrics.len()
        ),
    );
    false
}

/// `analysis.minRequestsPerStep`: requests are counted by errors and latency
/// metrics, so a gauge-only policy defaults to 0 and may not ask for more.
pub(super) fn min_requests(
    ctx: &mut Ctx<'_>,
    a: &RawAnalysis,
    metrics: Option<&[MetricSpec]>,
) -> Option<u64> {
    let counts = metrics.is_none_or(|m| {
        m.iter()
            .any(|m| !matches!(m.kind, MetricKind::Gauge { .. }))
    });
    let Some(v) = &a.min_requests_per_step else {
        return Some(if counts {
            DEFAULT_MIN_REQUESTS_PER_STEP
        } else {
            0
        });
    };
    let path = "analysis.minRequestsPerStep";
    let n = number_where(
        ctx,
        v,
        path,
        |x| x >= 0.0 && x.fract() == 0.0 && x <= 1e12,
        "a whole number of requests from 0 to 10^12",
    )?;
    if n > 0.0 && !counts {
        ctx.err(
            v.referenced,
            path,
            "only errors and latency metrics count requests, and this policy has gauges only; set 0",
        );
        return None;
    }
    Some(n as u64)
}

pub(super) fn validate_prometheus(
    ctx: &mut Ctx<'_>,
    p: &Spanned<RawPrometheus>,
) -> Option<PrometheusConfig> {
    let at = p.referenced;
    let p = &p.value;
    let url = match &p.url {
        None => {
            missing(
                ctx,
                at,
                "analysis.prometheus.url",
                "e.g. http://prometheus.monitoring:9090",
            );
            None
        }
        Some(u) => http_url(ctx, u, "analysis.prometheus.url"),
    };
    let auth = match (&p.bearer_token_file, &p.basic_auth) {
        (Some(_), Some(b)) => {
            ctx.err(
                b.referenced,
                "analysis.prometheus.basicAuth",
                "expected bearerTokenFile or basicAuth, found both",
            );
            None
        }
        (Some(t), None) => non_empty(ctx, t, "analysis.prometheus.bearerTokenFile")
            .map(|t| Some(PrometheusAuth::BearerTokenFile(PathBuf::from(t)))),
        (None, Some(b)) => {
            let p = "analysis.prometheus.basicAuth";
            let user = match &b.value.username {
                None => {
                    missing(ctx, b.referenced, &join(p, "username"), "the user name");
                    None
                }
                Some(u) => non_empty(ctx, u, &join(p, "username")),
            };
            let pass = match &b.value.password_file {
                None => {
                    missing(
                        ctx,
                        b.referenced,
                        &join(p, "passwordFile"),
                        "a file holding the password",
                    );
                    None
                }
                Some(f) => non_empty(ctx, f, &join(p, "passwordFile")),
            };
            match (user, pass) {
                (Some(username), Some(pass)) => Some(Some(PrometheusAuth::Basic {
                    username,
                    password_file: PathBuf::from(pass),
                })),
                _ => None,
            }
        }
        (None, None) => Some(None),
    };
    let ca_file = match &p.ca_file {
        None => Some(None),
        Some(f) => non_empty(ctx, f, "analysis.prometheus.caFile").map(|f| Some(PathBuf::from(f))),
    };
    Some(PrometheusConfig {
        url: url?,
        auth: auth?,
        ca_file: ca_file?,
    })
}

pub(super) fn validate_mode(ctx: &mut Ctx<'_>, a: &RawAnalysis) -> Option<JudgeMode> {
    #[derive(Clone, Copy, PartialEq)]
    enum M {
        Sequential,
        Classic,
    }
    let mode = match &a.mode {
        None => Some(M::Sequential),
        Some(v) => one_of(
            ctx,
            v,
            "analysis.mode",
            &[("sequential", M::Sequential), ("classic", M::Classic)],
        ),
    }?;
    match (mode, &a.classic) {
        (M::Sequential, None) => Some(JudgeMode::Sequential),
        (M::Sequential, Some(c)) => {
            ctx.err(
                c.referenced,
                "analysis.classic",
                "classic settings are only used with mode: classic, but the mode is sequential",
            );
            None
        }
        (M::Classic, None) => Some(JudgeMode::Classic(ClassicSettings {
            pass_score: DEFAULT_PASS_SCORE,
            marginal_score: DEFAULT_MARGINAL_SCORE,
        })),
        (M::Classic, Some(c)) => {
            let score =
                |ctx: &mut Ctx<'_>, v: &Option<Spanned<Scalar>>, field: &str, default: f64| match v
                {
                    None => Some(default),
                    Some(v) => number_where(
                        ctx,
                        v,
                        &format!("analysis.classic.{field}"),
                        |x| (0.0..=100.0).contains(&x),
                        "from 0 to 100",
                    ),
                };
            let pass = score(ctx, &c.value.pass_score, "passScore", DEFAULT_PASS_SCORE);
            let marginal = score(
                ctx,
                &c.value.marginal_score,
                "marginalScore",
                DEFAULT_MARGINAL_SCORE,
            );
            let (pass, marginal) = (pass?, marginal?);
            if marginal > pass {
                let at = c
                    .value
                    .marginal_score
                    .as_ref()
                    .map_or(c.referenced, |m| m.referenced);
                ctx.err(
                    at,
                    "analysis.classic.marginalScore",
                    format!("marginalScore {marginal} must not be above passScore {pass}"),
                );
                return None;
            }
            Some(JudgeMode::Classic(ClassicSettings {
                pass_score: pass,
                marginal_score: marginal,
            }))
        }
    }
}
