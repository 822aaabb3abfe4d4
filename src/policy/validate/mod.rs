//! Raw policy → typed [`Policy`], collecting every problem with its location.

use std::path::Path;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::defaults::DEFAULT_PROGRESS_DEADLINE;
use super::error::{PolicyError, PolicyErrors};
use super::raw::*;
use super::tree::Node;
use super::types::*;

mod alerts;
mod analysis;
mod durations;
mod metrics;
mod names;
mod scalars;
mod strategy;
mod traffic;

use alerts::{validate_alerts, validate_notifications};
use analysis::{validate_analysis, validate_interval};
use durations::duration_or;
use names::{derived_fits, required_name, NameRule, BASELINE_RS_SUFFIX};
use strategy::{total_observe, validate_baseline, validate_strategy};
use traffic::validate_traffic;

/// Longest metric name: names are keys in the rollout state and appear in
/// every verdict reason.
pub const MAX_METRIC_NAME_BYTES: usize = 63;

/// A validated policy and where its file names its Deployment, so that a
/// second policy for that Deployment is reported there (see `set.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The policy.
    pub policy: Policy,
    /// Where the `deployment` value is (the top of the file when absent).
    pub(crate) deployment_at: Location,
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
    let deployment = deployment_name(&mut ctx, r, top);
    let progress_deadline = duration_or(
        &mut ctx,
        &r.progress_deadline,
        "progressDeadline",
        DEFAULT_PROGRESS_DEADLINE,
    );
    let traffic = validate_traffic(&mut ctx, &r.traffic);

    // The interval bounds every observe duration, so read it before the strategy.
    let analysis_raw = r.analysis.as_ref();
    let interval = validate_interval(&mut ctx, analysis_raw);

    let strategy = validate_strategy(&mut ctx, &r.strategy, traffic.as_ref(), interval);
    let observe_total = strategy.as_ref().map(|s| total_observe(&s.0));
    let blue_green = matches!(strategy, Some((Strategy::BlueGreen(_), _)));
    let baseline = validate_baseline(&mut ctx, &r.baseline, blue_green);

    let analysis = match analysis_raw {
        None => {
            missing(&mut ctx, top, "analysis", "at least prometheus.url");
            None
        }
        Some(a) => validate_analysis(&mut ctx, a, interval, observe_total),
    };
    let alerts = validate_alerts(&mut ctx, &r.alerts);
    let notifications = validate_notifications(&mut ctx, &r.notifications);

    let sections = Sections {
        service,
        namespace,
        deployment,
        progress_deadline,
        baseline,
        traffic,
        strategy: strategy.map(|(s, _)| s),
        analysis,
        alerts,
        notifications,
    };
    let deployment_at = r.deployment.as_ref().map_or(top, |d| d.referenced);
    match sections.into_policy(file) {
        Some(policy) if ctx.errors.is_empty() => Ok(Validated {
            policy,
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

/// `deployment`: a Kubernetes name short enough for the baseline's
/// ReplicaSet name derived from it.
fn deployment_name(ctx: &mut Ctx<'_>, r: &RawPolicy, top: Location) -> Option<String> {
    required_name(ctx, &r.deployment, top, "deployment", NameRule::Subdomain)
        .filter(|_| derived_fits(ctx, r.deployment.as_ref(), "deployment", BASELINE_RS_SUFFIX))
}

/// Each section of a policy as validated (`None`: its errors are reported).
struct Sections {
    service: Option<String>,
    namespace: Option<String>,
    deployment: Option<String>,
    progress_deadline: Option<Duration>,
    baseline: Option<BaselineMode>,
    traffic: Option<Traffic>,
    strategy: Option<Strategy>,
    analysis: Option<Analysis>,
    alerts: Option<AlertPolicy>,
    notifications: Option<Vec<Notification>>,
}

impl Sections {
    /// The policy read from `source`, when every section is valid.
    fn into_policy(self, source: &Path) -> Option<Policy> {
        Some(Policy {
            source: source.to_path_buf(),
            service: self.service?,
            namespace: self.namespace?,
            deployment: self.deployment?,
            strategy: self.strategy?,
            traffic: self.traffic?,
            baseline: self.baseline?,
            progress_deadline: self.progress_deadline?,
            analysis: self.analysis?,
            alerts: self.alerts?,
            notifications: self.notifications?,
        })
    }
}
