//! Raw policy → typed [`Policy`], collecting every problem with its location.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::error::{PolicyError, PolicyErrors};
use super::raw::*;
use super::tree::Node;
use super::types::*;
use super::values::*;

/// Defaults documented in docs/policy.md.
const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_KEEP_OLD_FOR: Duration = Duration::from_secs(600);
const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(600);
/// Default `analysis.alpha`: the rollout's whole false-rollback budget.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Default `analysis.minRequestsPerStep` when a metric counts requests: a
/// step whose canary served fewer requests has not been tested by traffic.
pub const DEFAULT_MIN_REQUESTS_PER_STEP: u64 = 50;
const DEFAULT_PASS_SCORE: f64 = 95.0;
const DEFAULT_MARGINAL_SCORE: f64 = 75.0;
const DEFAULT_VERSION_LABEL: &str = "version";
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

// ---------------------------------------------------------------- names

/// Which Kubernetes naming rule a field follows.
#[derive(Clone, Copy)]
enum NameRule {
    /// RFC 1123 label: namespaces, Services, Ingresses, HTTPRoutes.
    Label,
    /// RFC 1123 subdomain: Deployments.
    Subdomain,
}

fn check_name(
    ctx: &mut Ctx<'_>,
    v: &Spanned<String>,
    path: &str,
    rule: NameRule,
) -> Option<String> {
    let (ok, expected) = match rule {
        NameRule::Label => (
            is_dns_label(&v.value),
            "a Kubernetes name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)",
        ),
        NameRule::Subdomain => (
            is_dns_subdomain(&v.value),
            "a Kubernetes name (lowercase letters, digits, '-' and '.', at most 253 characters)",
        ),
    };
    if ok {
        Some(v.value.clone())
    } else {
        ctx.err(
            v.referenced,
            path,
            format!("expected {expected}, found {:?}", v.value),
        );
        None
    }
}

/// Longest RFC 1123 subdomain (Deployment, ReplicaSet and Ingress names).
const MAX_SUBDOMAIN: usize = 253;

/// A name canaryd derives by appending to one from the policy.
struct Derived {
    /// Characters appended.
    len: usize,
    /// The derived name, for messages.
    shape: &'static str,
}

/// The longest name derived from the Deployment's: the baseline's
/// ReplicaSet, `<deployment>-baseline-<10-character template hash>`.
const BASELINE_RS_SUFFIX: Derived = Derived {
    len: "-baseline-".len() + 10,
    shape: "<deployment>-baseline-<template hash>",
};

/// The canary Ingress, `<ingress>-canary`.
const CANARY_INGRESS_SUFFIX: Derived = Derived {
    len: "-canary".len(),
    shape: "<ingress>-canary",
};

/// Whether a name stays within Kubernetes' limit once canaryd appends to it
/// (reported here, at load, instead of as a 422 mid-rollout).
fn derived_fits(
    ctx: &mut Ctx<'_>,
    v: Option<&Spanned<String>>,
    path: &str,
    derived: Derived,
) -> bool {
    let Some(v) = v else { return true };
    let len = v.value.len();
    if len + derived.len <= MAX_SUBDOMAIN {
        return true;
    }
    ctx.err(
        v.referenced,
        path,
        format!(
            "name is {len} characters; canaryd's {} would be {}, above the {MAX_SUBDOMAIN} Kubernetes allows; use at most {}",
            derived.shape,
            len + derived.len,
            MAX_SUBDOMAIN - derived.len
        ),
    );
    false
}

fn required_name(
    ctx: &mut Ctx<'_>,
    v: &Option<Spanned<String>>,
    parent_at: Location,
    path: &str,
    rule: NameRule,
) -> Option<String> {
    match v {
        None => {
            missing(ctx, parent_at, path, "a Kubernetes name");
            None
        }
        Some(v) => check_name(ctx, v, path, rule),
    }
}

fn non_empty(ctx: &mut Ctx<'_>, v: &Spanned<String>, path: &str) -> Option<String> {
    if v.value.trim().is_empty() {
        ctx.err(v.referenced, path, "must not be empty");
        None
    } else {
        Some(v.value.clone())
    }
}

fn http_url(ctx: &mut Ctx<'_>, v: &Spanned<String>, path: &str) -> Option<String> {
    let s = v.value.as_str();
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    let ok = host.is_some_and(|h| !h.is_empty()) && !s.chars().any(char::is_whitespace);
    if ok {
        Some(s.to_owned())
    } else {
        ctx.err(
            v.referenced,
            path,
            format!("expected an http:// or https:// URL, found {s:?}"),
        );
        None
    }
}

// ---------------------------------------------------------------- scalars

fn one_of<T: Copy>(
    ctx: &mut Ctx<'_>,
    v: &Spanned<String>,
    path: &str,
    options: &[(&str, T)],
) -> Option<T> {
    if let Some((_, t)) = options.iter().find(|(name, _)| *name == v.value) {
        return Some(*t);
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    ctx.err(
        v.referenced,
        path,
        format!("expected {}, found {:?}", choices(&names), v.value),
    );
    None
}

fn number(ctx: &mut Ctx<'_>, v: &Spanned<Scalar>, path: &str) -> Option<f64> {
    let x = match &v.value {
        Scalar::Int(i) => *i as f64,
        Scalar::Float(f) => *f,
        other => {
            ctx.err(
                v.referenced,
                path,
                format!("expected a number, found {other}"),
            );
            return None;
        }
    };
    if x.is_finite() {
        Some(x)
    } else {
        ctx.err(
            v.referenced,
            path,
            format!("expected a finite number, found {x}"),
        );
        None
    }
}

/// A number in a range; `what` describes the range for the message.
fn number_where(
    ctx: &mut Ctx<'_>,
    v: &Spanned<Scalar>,
    path: &str,
    ok: impl Fn(f64) -> bool,
    what: &str,
) -> Option<f64> {
    let x = number(ctx, v, path)?;
    if ok(x) {
        Some(x)
    } else {
        let field = path.rsplit('.').next().unwrap_or(path);
        ctx.err(
            v.referenced,
            path,
            format!("{field} must be {what}, found {}", v.value),
        );
        None
    }
}

fn bool_or(v: &Option<Spanned<bool>>, default: bool) -> bool {
    v.as_ref().map_or(default, |b| b.value)
}

// ---------------------------------------------------------------- durations

fn duration(ctx: &mut Ctx<'_>, v: &Spanned<Scalar>, path: &str) -> Option<Duration> {
    let parsed = match &v.value {
        Scalar::Str(s) => parse_duration(s),
        other => Err(format!("expected {DURATION_HINT}, found {other}")),
    };
    match parsed {
        Ok(d) => Some(d),
        Err(msg) => {
            ctx.err(v.referenced, path, msg);
            None
        }
    }
}

fn duration_or(
    ctx: &mut Ctx<'_>,
    v: &Option<Spanned<Scalar>>,
    path: &str,
    default: Duration,
) -> Option<Duration> {
    match v {
        None => Some(default),
        Some(v) => duration(ctx, v, path),
    }
}

/// An observe duration: required and at least one analysis interval.
fn observe(
    ctx: &mut Ctx<'_>,
    v: &Option<Spanned<Scalar>>,
    parent_at: Location,
    path: &str,
    interval: Option<Duration>,
) -> Option<Duration> {
    let Some(v) = v else {
        missing(ctx, parent_at, path, "how long to observe, e.g. 2m");
        return None;
    };
    let d = duration(ctx, v, path)?;
    match interval {
        Some(i) if d < i => {
            ctx.err(
                v.referenced,
                path,
                format!(
                    "observe {} is shorter than analysis.interval {}",
                    format_duration(d),
                    format_duration(i)
                ),
            );
            None
        }
        _ => Some(d),
    }
}

// ---------------------------------------------------------------- sizes

// ---------------------------------------------------------------- traffic & strategy

fn validate_traffic(ctx: &mut Ctx<'_>, t: &Option<Spanned<RawTraffic>>) -> Option<Traffic> {
    let Some(t) = t else {
        return Some(Traffic::Replicas);
    };
    let at = t.referenced;
    let t = &t.value;
    let Some(kind) = &t.kind else {
        missing(
            ctx,
            at,
            "traffic.type",
            "replicas, ingress-nginx or gateway-api",
        );
        return None;
    };
    #[derive(Clone, Copy)]
    enum K {
        Replicas,
        Nginx,
        Gateway,
    }
    let k = one_of(
        ctx,
        kind,
        "traffic.type",
        &[
            ("replicas", K::Replicas),
            ("ingress-nginx", K::Nginx),
            ("gateway-api", K::Gateway),
        ],
    )?;
    let unused = |ctx: &mut Ctx<'_>, v: &Option<Spanned<String>>, field: &str, owner: &str| {
        if let Some(v) = v {
            ctx.err(
                v.referenced,
                format!("traffic.{field}"),
                format!(
                    "{field} is only used with traffic.type {owner}, but the type is {}",
                    kind.value
                ),
            );
        }
    };
    match k {
        K::Replicas => {
            unused(ctx, &t.ingress, "ingress", "ingress-nginx");
            unused(ctx, &t.http_route, "httpRoute", "gateway-api");
            Some(Traffic::Replicas)
        }
        K::Nginx => {
            unused(ctx, &t.http_route, "httpRoute", "gateway-api");
            match &t.ingress {
                None => {
                    missing(
                        ctx,
                        at,
                        "traffic.ingress",
                        "the Ingress to split, needed by type ingress-nginx",
                    );
                    None
                }
                Some(i) => check_name(ctx, i, "traffic.ingress", NameRule::Subdomain)
                    .filter(|_| {
                        derived_fits(ctx, Some(i), "traffic.ingress", CANARY_INGRESS_SUFFIX)
                    })
                    .map(|ingress| Traffic::IngressNginx { ingress }),
            }
        }
        K::Gateway => {
            unused(ctx, &t.ingress, "ingress", "ingress-nginx");
            match &t.http_route {
                None => {
                    missing(
                        ctx,
                        at,
                        "traffic.httpRoute",
                        "the HTTPRoute to weight, needed by type gateway-api",
                    );
                    None
                }
                Some(r) => check_name(ctx, r, "traffic.httpRoute", NameRule::Subdomain)
                    .map(|route| Traffic::GatewayApi { route }),
            }
        }
    }
}

/// The classic plan: 1 pod for 10m, then 10%, 50%, 100% for 2m each.
pub(crate) fn default_steps() -> Vec<Step> {
    let step = |size, secs| Step {
        size: Some(size),
        weight: None,
        observe: Duration::from_secs(secs),
        gate: false,
    };
    vec![
        step(CanarySize::Replicas(1), 600),
        step(CanarySize::Percent(10.0), 120),
        step(CanarySize::Percent(50.0), 120),
        step(CanarySize::Percent(100.0), 120),
    ]
}

fn total_observe(s: &Strategy) -> Duration {
    match s {
        Strategy::Canary(c) => c.steps.iter().map(|s| s.observe).sum(),
        Strategy::BlueGreen(b) => b.observe,
    }
}

/// The strategy and a flag for whether it came from defaults.
fn validate_strategy(
    ctx: &mut Ctx<'_>,
    s: &Option<Spanned<RawStrategy>>,
    traffic: Option<&Traffic>,
    interval: Option<Duration>,
) -> Option<(Strategy, bool)> {
    let Some(s) = s else {
        return Some((
            Strategy::Canary(CanaryStrategy {
                steps: default_steps(),
            }),
            true,
        ));
    };
    match (&s.value.canary, &s.value.blue_green) {
        (Some(_), Some(bg)) => {
            ctx.err(
                bg.referenced,
                "strategy",
                "expected exactly one of canary or blueGreen, found both",
            );
            None
        }
        // A canary or blueGreen of the wrong kind is already reported.
        (None, None)
            if ctx.was_dropped("strategy.canary") || ctx.was_dropped("strategy.blueGreen") =>
        {
            None
        }
        (None, None) => {
            ctx.err(
                s.referenced,
                "strategy",
                "expected exactly one of canary or blueGreen, found neither",
            );
            None
        }
        (Some(c), None) => {
            validate_canary(ctx, c, traffic, interval).map(|c| (Strategy::Canary(c), false))
        }
        (None, Some(bg)) => {
            if let Some(t) = traffic.filter(|t| t.has_router()) {
                let name = match t {
                    Traffic::IngressNginx { .. } => "ingress-nginx",
                    _ => "gateway-api",
                };
                ctx.err(
                    bg.referenced,
                    "strategy.blueGreen",
                    format!(
                        "blueGreen switches a Service selector and needs traffic.type replicas, found {name}"
                    ),
                );
            }
            validate_blue_green(ctx, bg, interval).map(|b| (Strategy::BlueGreen(b), false))
        }
    }
}

fn validate_canary(
    ctx: &mut Ctx<'_>,
    c: &Spanned<RawCanary>,
    traffic: Option<&Traffic>,
    interval: Option<Duration>,
) -> Option<CanaryStrategy> {
    let Some(steps) = &c.value.steps else {
        return Some(CanaryStrategy {
            steps: default_steps(),
        });
    };
    if steps.value.is_empty() {
        ctx.err(
            steps.referenced,
            "strategy.canary.steps",
            "expected at least one step; omit steps to use the default plan",
        );
        return None;
    }
    let router = traffic.map(Traffic::has_router);
    let errors_before = ctx.errors.len();
    let mut out = Vec::new();
    // Latest size per unit and latest weight, with the step index, for growth checks.
    let mut last_pods: Option<(u32, usize)> = None;
    let mut last_percent: Option<(f64, usize)> = None;
    let mut last_weight: Option<(u8, usize)> = None;
    for (i, raw) in steps.value.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("strategy.canary.steps[{i}]");
        let at = raw.referenced;
        let step = &raw.value;
        let size = step.size.as_ref().and_then(|v| match parse_size(&v.value) {
            Ok(s) => Some((s, v.referenced)),
            Err(m) => {
                ctx.err(v.referenced, join(&path, "size"), m);
                None
            }
        });
        let weight = step.weight.as_ref().and_then(|v| {
            if router == Some(false) {
                ctx.err(
                    v.referenced,
                    join(&path, "weight"),
                    "weight needs traffic.type ingress-nginx or gateway-api, but traffic.type is replicas",
                );
                return None;
            }
            match parse_weight(&v.value) {
                Ok(w) => Some((w, v.referenced)),
                Err(m) => {
                    ctx.err(v.referenced, join(&path, "weight"), m);
                    None
                }
            }
        });
        let observe = observe(ctx, &step.observe, at, &join(&path, "observe"), interval);
        if step.size.is_none() && step.weight.is_none() {
            if router == Some(true) {
                ctx.err(at, &path, "expected a size, a weight or both in each step");
            } else {
                missing(
                    ctx,
                    at,
                    &join(&path, "size"),
                    "pods like 1 or a share like \"10%\"",
                );
            }
        } else if i == 0 && step.size.is_none() {
            ctx.err(
                at,
                join(&path, "size"),
                "the first step needs a size: the canary has no pods yet",
            );
        }

        // Growth: within a unit a size must not shrink, and each step must grow
        // the size or the weight.
        let prev_same_unit = size.map(|(s, _)| match s {
            CanarySize::Replicas(n) => {
                last_pods.map(|(p, j)| (f64::from(n), f64::from(p), j, CanarySize::Replicas(p)))
            }
            CanarySize::Percent(p) => last_percent.map(|(q, j)| (p, q, j, CanarySize::Percent(q))),
        });
        let size_grows = match prev_same_unit {
            None => size.is_some(),
            Some(None) => true,
            Some(Some((new, old, _, _))) => new > old,
        };
        let weight_grows = match (weight, last_weight) {
            (Some(_), None) => true,
            (Some((w, _)), Some((p, _))) => w > p,
            _ => false,
        };
        if i > 0 {
            if let (Some((s, loc)), Some(Some((new, old, j, prev)))) = (size, prev_same_unit) {
                if new < old {
                    ctx.err(
                        loc,
                        join(&path, "size"),
                        format!(
                            "size {} is smaller than the previous size {} (steps[{j}]); sizes must not shrink",
                            format_size(s),
                            format_size(prev)
                        ),
                    );
                } else if new == old && !weight_grows && step.weight.is_none() {
                    // With a weight present the weight message below says it once.
                    ctx.err(
                        loc,
                        join(&path, "size"),
                        format!(
                            "size {} does not grow: the previous size is also {} (steps[{j}]); each step must grow the size or the weight",
                            format_size(s),
                            format_size(prev)
                        ),
                    );
                }
            }
            if let (Some((w, loc)), Some((p, j))) = (weight, last_weight) {
                if w < p {
                    ctx.err(
                        loc,
                        join(&path, "weight"),
                        format!("weight {w} is lower than the previous weight {p} (steps[{j}]); weights must not shrink"),
                    );
                } else if w == p && !size_grows {
                    ctx.err(
                        loc,
                        join(&path, "weight"),
                        format!("weight {w} does not grow: the previous weight is also {p} (steps[{j}]); each step must grow the size or the weight"),
                    );
                }
            }
        }
        if let Some((s, _)) = size {
            match s {
                CanarySize::Replicas(n) => last_pods = Some((n, i)),
                CanarySize::Percent(p) => last_percent = Some((p, i)),
            }
        }
        if let Some((w, _)) = weight {
            last_weight = Some((w, i));
        }
        if let Some(observe) = observe {
            out.push(Step {
                size: size.map(|(s, _)| s),
                weight: weight.map(|(w, _)| w),
                observe,
                gate: bool_or(&step.gate, false),
            });
        }
    }
    (ctx.errors.len() == errors_before).then_some(CanaryStrategy { steps: out })
}

fn validate_blue_green(
    ctx: &mut Ctx<'_>,
    bg: &Spanned<RawBlueGreen>,
    interval: Option<Duration>,
) -> Option<BlueGreenStrategy> {
    let at = bg.referenced;
    let b = &bg.value;
    let p = "strategy.blueGreen";
    let active = required_name(
        ctx,
        &b.active_service,
        at,
        &join(p, "activeService"),
        NameRule::Label,
    );
    let preview = match &b.preview_service {
        None => Some(None),
        Some(v) => check_name(ctx, v, &join(p, "previewService"), NameRule::Label).map(Some),
    };
    let label = match &b.version_label {
        None => Some(DEFAULT_VERSION_LABEL.to_owned()),
        Some(v) if is_label_key(&v.value) => Some(v.value.clone()),
        Some(v) => {
            ctx.err(
                v.referenced,
                join(p, "versionLabel"),
                format!(
                    "expected a label key like version or app.kubernetes.io/version, found {:?}",
                    v.value
                ),
            );
            None
        }
    };
    let observe = observe(ctx, &b.observe, at, &join(p, "observe"), interval);
    let keep = duration_or(
        ctx,
        &b.keep_old_for,
        &join(p, "keepOldFor"),
        DEFAULT_KEEP_OLD_FOR,
    );
    Some(BlueGreenStrategy {
        active_service: active?,
        preview_service: preview?,
        version_label: label?,
        observe: observe?,
        gate: bool_or(&b.gate, false),
        keep_old_for: keep?,
    })
}

// ---------------------------------------------------------------- analysis

fn validate_analysis(
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
    let max_duration = match (&a.max_duration, observe_total) {
        (None, Some(total)) => Some(total * 3),
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
    };
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
        None => Some(OnNoData::Hold),
        Some(v) => one_of(
            ctx,
            v,
            "analysis.onNoData",
            &[("hold", OnNoData::Hold), ("rollback", OnNoData::Rollback)],
        ),
    };
    let mode = validate_mode(ctx, a);
    let metrics = match &a.metrics {
        None => Some(super::default_metrics()),
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
    };
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

/// Whether the worst-case rollout state for these metrics fits in
/// [`crate::rollout::MAX_STATE_BYTES`]; reports an error if not.
fn state_fits(ctx: &mut Ctx<'_>, at: Location, metrics: &[MetricSpec]) -> bool {
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
fn min_requests(ctx: &mut Ctx<'_>, a: &RawAnalysis, metrics: Option<&[MetricSpec]>) -> Option<u64> {
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

fn validate_prometheus(ctx: &mut Ctx<'_>, p: &Spanned<RawPrometheus>) -> Option<PrometheusConfig> {
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

fn validate_mode(ctx: &mut Ctx<'_>, a: &RawAnalysis) -> Option<JudgeMode> {
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

// ---------------------------------------------------------------- metrics & templates

fn template(ctx: &mut Ctx<'_>, v: &Spanned<String>, path: &str) -> Option<Template> {
    let problems = check_template(&v.value);
    let ok = problems.is_empty();
    for p in problems {
        ctx.err(v.referenced, path, p);
    }
    ok.then(|| Template(v.value.clone()))
}

fn validate_metrics(ctx: &mut Ctx<'_>, metrics: &List<RawMetric>) -> Option<Vec<MetricSpec>> {
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
fn metric_name(ctx: &mut Ctx<'_>, n: &Spanned<String>, path: &str) -> Option<String> {
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

fn validate_metric(ctx: &mut Ctx<'_>, m: &Spanned<RawMetric>, path: &str) -> Option<MetricSpec> {
    let at = m.referenced;
    let m = &m.value;
    let name = match &m.name {
        None => {
            missing(ctx, at, &join(path, "name"), "a unique metric name");
            None
        }
        Some(n) => metric_name(ctx, n, &join(path, "name")),
    };
    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Errors,
        Latency,
        Gauge,
    }
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
                ("errors", K::Errors),
                ("latency", K::Latency),
                ("gauge", K::Gauge),
            ],
        ),
    };
    // Which query fields each kind uses, so stray ones are reported.
    let fields: [(&str, &Option<Spanned<String>>, K, &str); 4] = [
        ("errors", &m.errors, K::Errors, "the error-count query"),
        ("total", &m.total, K::Errors, "the request-count query"),
        (
            "buckets",
            &m.buckets,
            K::Latency,
            "the histogram bucket query",
        ),
        ("query", &m.query, K::Gauge, "the gauge query"),
    ];
    let mut templates: Vec<Option<Template>> = Vec::new();
    if let Some(kind) = kind {
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
    }
    let direction = match &m.direction {
        None => Some(Direction::Increase),
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
    let default_effect = if kind == Some(K::Errors) { 0.5 } else { 0.1 };
    let min_effect = match &m.min_effect {
        None => Some(default_effect),
        Some(v) => number_where(ctx, v, &join(path, "minEffect"), |x| x > 0.0, "above 0"),
    };
    let weight = match &m.weight {
        None => Some(1.0),
        Some(v) => number_where(ctx, v, &join(path, "weight"), |x| x > 0.0, "above 0"),
    };
    let bounds = match &m.bounds {
        None => Some(None),
        Some(b) => validate_bounds(ctx, b, &join(path, "bounds")).map(Some),
    };

    let kind = match (kind?, templates.as_slice()) {
        (K::Errors, [Some(errors), Some(total)]) => MetricKind::Errors {
            errors: errors.clone(),
            total: total.clone(),
        },
        (K::Latency, [Some(buckets)]) => MetricKind::Latency {
            buckets: buckets.clone(),
        },
        (K::Gauge, [Some(query)]) => MetricKind::Gauge {
            query: query.clone(),
        },
        _ => return None,
    };
    Some(MetricSpec {
        name: name?,
        kind,
        direction: direction?,
        bounds: bounds?,
        critical: bool_or(&m.critical, false),
        min_effect: min_effect?,
        weight: weight?,
    })
}

fn validate_bounds(ctx: &mut Ctx<'_>, b: &Spanned<RawBounds>, path: &str) -> Option<Bounds> {
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

// ---------------------------------------------------------------- alerts & notifications

fn validate_alerts(ctx: &mut Ctx<'_>, a: &Option<Spanned<RawAlerts>>) -> Option<AlertPolicy> {
    let Some(a) = a else {
        return Some(AlertPolicy {
            matchers: Vec::new(),
            guard_window: DEFAULT_GUARD_WINDOW,
        });
    };
    let mut matchers = Some(Vec::new());
    for (i, m) in a
        .value
        .matchers
        .iter()
        .flat_map(|m| m.value.iter())
        .enumerate()
    {
        let Some(m) = m else {
            matchers = None;
            continue;
        };
        match parse_matcher(&m.value) {
            Ok(lm) => {
                if let Some(v) = matchers.as_mut() {
                    v.push(lm);
                }
            }
            Err(msg) => {
                ctx.err(m.referenced, format!("alerts.matchers[{i}]"), msg);
                matchers = None;
            }
        }
    }
    let guard = duration_or(
        ctx,
        &a.value.guard_window,
        "alerts.guardWindow",
        DEFAULT_GUARD_WINDOW,
    );
    Some(AlertPolicy {
        matchers: matchers?,
        guard_window: guard?,
    })
}

fn validate_notifications(
    ctx: &mut Ctx<'_>,
    n: &Option<Spanned<List<RawNotification>>>,
) -> Option<Vec<Notification>> {
    let Some(n) = n else {
        return Some(Vec::new());
    };
    let mut out = Some(Vec::new());
    for (i, item) in n.value.iter().enumerate() {
        let Some(item) = item else {
            out = None;
            continue;
        };
        let path = format!("notifications[{i}]");
        let kind = match &item.value.kind {
            None => {
                missing(
                    ctx,
                    item.referenced,
                    &join(&path, "type"),
                    "slack or webhook",
                );
                None
            }
            Some(k) => one_of(
                ctx,
                k,
                &join(&path, "type"),
                &[
                    ("slack", NotificationKind::Slack),
                    ("webhook", NotificationKind::Webhook),
                ],
            ),
        };
        let url = match &item.value.url {
            None => {
                missing(ctx, item.referenced, &join(&path, "url"), "where to post");
                None
            }
            Some(u) => http_url(ctx, u, &join(&path, "url")),
        };
        match (kind, url, out.as_mut()) {
            (Some(kind), Some(url), Some(v)) => v.push(Notification { kind, url }),
            _ => out = None,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_is_the_classic_one() {
        let steps = default_steps();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].size, Some(CanarySize::Replicas(1)));
        assert_eq!(steps[0].observe, Duration::from_secs(600));
        assert_eq!(steps[3].size, Some(CanarySize::Percent(100.0)));
        assert_eq!(
            total_observe(&Strategy::Canary(CanaryStrategy { steps })),
            Duration::from_secs(960)
        );
    }
}
