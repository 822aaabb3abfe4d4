//! Raw policy → typed [`Policy`], collecting every problem with its location.

use std::path::Path;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::defaults::{DEFAULT_INTERVAL, DEFAULT_PROGRESS_DEADLINE};
use super::error::{PolicyError, PolicyErrors};
use super::raw::*;
use super::tree::Node;
use super::types::*;
use super::values::*;

mod alerts;
mod analysis;
mod durations;
mod metrics;
mod names;
mod scalars;
mod strategy;
mod traffic;

use alerts::{validate_alerts, validate_notifications};
use analysis::validate_analysis;
use durations::{duration, duration_or};
use names::{derived_fits, required_name, NameRule, BASELINE_RS_SUFFIX};
use scalars::one_of;
use strategy::{total_observe, validate_strategy};
use traffic::validate_traffic;

/// Shortest `analysis.interval`.
const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Longest metric name: names are keys in the rollout state and appear in
/// every verdict reason.
pub const MAX_METRIC_NAME_BYTES: usize = 63;

/// A validated policy and where its `deployment` value is, for duplicate checks
/// across files.
pub(crate) struct Validated {
    pub policy: Policy,
    pub deployment_at: Location,
}

/// Collects errors for one file.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    /// The file's text, for scalars' written form.
    pub src: &'a str,
    pub errors: Vec<PolicyError>,
    /// Paths of values left out for having the wrong kind (already reported),
    /// so they are not reported as missing too.
    pub dropped: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Ctx {
            file,
            src,
            errors: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn was_dropped(&self, path: &str) -> bool {
        self.dropped.iter().any(|d| d == path)
    }

    pub fn err(&mut self, at: Location, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(located(self.file, at, path, message));
    }
}

/// Builds a [`PolicyError`] at a serde-saphyr location (unknown → whole file).
pub(crate) fn located(
    file: &Path,
    at: Location,
    path: impl Into<String>,
    message: impl Into<String>,
) -> PolicyError {
    PolicyError {
        file: file.to_path_buf(),
        line: usize::try_from(at.line()).unwrap_or(usize::MAX),
        column: usize::try_from(at.column()).unwrap_or(usize::MAX),
        path: path.into(),
        message: message.into(),
    }
}

fn missing(ctx: &mut Ctx<'_>, parent_at: Location, path: &str, what: &str) {
    if ctx.was_dropped(path) {
        return;
    }
    let field = path.rsplit('.').next().unwrap_or(path);
    ctx.err(
        parent_at,
        path,
        format!("missing required field {field} ({what})"),
    );
}

/// Reads and validates a whole policy from its node tree (`src` is the text it
/// was parsed from); every problem is reported, sorted by position.
pub(crate) fn validate(
    tree: &Spanned<Node>,
    src: &str,
    file: &Path,
) -> Result<Validated, PolicyErrors> {
    let mut ctx = Ctx::new(file, src);
    let Some(raw) = read::<RawPolicy>(tree, "", &mut ctx) else {
        return Err(PolicyErrors(ctx.errors));
    };
    let top = raw.referenced;
    let r = &raw.value;

    let service = required_name(&mut ctx, &r.service, top, "service", NameRule::Label);
    let namespace = required_name(&mut ctx, &r.namespace, top, "namespace", NameRule::Label);
    let deployment = required_name(
        &mut ctx,
        &r.deployment,
        top,
        "deployment",
        NameRule::Subdomain,
    )
    .filter(|_| {
        derived_fits(
            &mut ctx,
            r.deployment.as_ref(),
            "deployment",
            BASELINE_RS_SUFFIX,
        )
    });
    let progress_deadline = duration_or(
        &mut ctx,
        &r.progress_deadline,
        "progressDeadline",
        DEFAULT_PROGRESS_DEADLINE,
    );
    let traffic = validate_traffic(&mut ctx, &r.traffic);

    // The interval bounds every observe duration, so read it before the strategy.
    let analysis_raw = r.analysis.as_ref();
    let interval = match analysis_raw.and_then(|a| a.value.interval.as_ref()) {
        None => Some(DEFAULT_INTERVAL),
        Some(v) => {
            let d = duration(&mut ctx, v, "analysis.interval");
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
    };

    let strategy = validate_strategy(&mut ctx, &r.strategy, traffic.as_ref(), interval);
    let observe_total = strategy.as_ref().map(|s| total_observe(&s.0));
    // Blue-green never creates baseline pods: it compares with the stable ones.
    let blue_green = matches!(strategy, Some((Strategy::BlueGreen(_), _)));
    let baseline = match &r.baseline {
        None if blue_green => Some(BaselineMode::Stable),
        None => Some(BaselineMode::Fresh),
        Some(b) => match one_of(
            &mut ctx,
            b,
            "baseline",
            &[
                ("fresh", BaselineMode::Fresh),
                ("stable", BaselineMode::Stable),
            ],
        ) {
            Some(BaselineMode::Fresh) if blue_green => {
                ctx.err(
                    b.referenced,
                    "baseline",
                    "blue-green creates no baseline pods; use stable (the default for blue-green)",
                );
                None
            }
            mode => mode,
        },
    };

    let analysis = match analysis_raw {
        None => {
            missing(&mut ctx, top, "analysis", "at least prometheus.url");
            None
        }
        Some(a) => validate_analysis(&mut ctx, a, interval, observe_total),
    };
    let alerts = validate_alerts(&mut ctx, &r.alerts);
    let notifications = validate_notifications(&mut ctx, &r.notifications);

    let deployment_at = r.deployment.as_ref().map_or(top, |d| d.referenced);
    match (
        service,
        namespace,
        deployment,
        progress_deadline,
        baseline,
        traffic,
        strategy,
        analysis,
        alerts,
        notifications,
    ) {
        (
            Some(service),
            Some(namespace),
            Some(deployment),
            Some(progress_deadline),
            Some(baseline),
            Some(traffic),
            Some((strategy, _)),
            Some(analysis),
            Some(alerts),
            Some(notifications),
        ) if ctx.errors.is_empty() => Ok(Validated {
            policy: Policy {
                source: file.to_path_buf(),
                service,
                namespace,
                deployment,
                strategy,
                traffic,
                baseline,
                progress_deadline,
                analysis,
                alerts,
                notifications,
            },
            deployment_at,
        }),
        _ => {
            let mut errors = ctx.errors;
            errors.sort_by_key(|e| (e.line, e.column));
            if errors.is_empty() {
                // Every `None` above is paired with a pushed error; this is a safety net.
                errors.push(located(file, top, "", "policy is incomplete"));
            }
            Err(PolicyErrors(errors))
        }
    }
}
