//! The `strategy` section: canary steps or blue-green.

use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::durations::{duration_or, observe};
use super::names::{check_name, required_name, NameRule};
use super::scalars::{bool_or, one_of};
use super::{missing, Ctx};
use crate::policy::defaults::{
    default_steps, DEFAULT_GATE, DEFAULT_KEEP_OLD_FOR, DEFAULT_VERSION_LABEL,
};
use crate::policy::raw::*;
use crate::policy::types::*;
use crate::policy::values::*;

pub(super) fn total_observe(s: &Strategy) -> Duration {
    match s {
        Strategy::Canary(c) => c.steps.iter().map(|s| s.observe).sum(),
        Strategy::BlueGreen(b) => b.observe,
    }
}

/// The strategy and a flag for whether it came from defaults.
pub(super) fn validate_strategy(
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

/// `baseline`: fresh pods by default; blue-green never creates baseline pods,
/// as it compares with the stable ones.
pub(super) fn validate_baseline(
    ctx: &mut Ctx<'_>,
    b: &Option<Spanned<String>>,
    blue_green: bool,
) -> Option<BaselineMode> {
    match b {
        None if blue_green => Some(BaselineMode::Stable),
        None => Some(BaselineMode::Fresh),
        Some(b) => match one_of(
            ctx,
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
    }
}

pub(super) fn validate_canary(
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
    let mut growth = Growth::default();
    for (i, raw) in steps.value.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("strategy.canary.steps[{i}]");
        let at = raw.referenced;
        let step = &raw.value;
        let size = step_size(ctx, step, &path);
        let weight = step_weight(ctx, step, &path, router);
        let observe = observe(ctx, &step.observe, at, &join(&path, "observe"), interval);
        step_has_size(ctx, raw, i, &path, router);
        growth.check(ctx, i, &path, step.weight.is_some(), size, weight);
        if let Some(observe) = observe {
            out.push(Step {
                size: size.map(|(s, _)| s),
                weight: weight.map(|(w, _)| w),
                observe,
                gate: bool_or(&step.gate, DEFAULT_GATE),
            });
        }
    }
    (ctx.errors.len() == errors_before).then_some(CanaryStrategy { steps: out })
}

/// A step's size, with where it is written.
fn step_size(ctx: &mut Ctx<'_>, step: &RawStep, path: &str) -> Option<(CanarySize, Location)> {
    step.size.as_ref().and_then(|v| match parse_size(&v.value) {
        Ok(s) => Some((s, v.referenced)),
        Err(m) => {
            ctx.err(v.referenced, join(path, "size"), m);
            None
        }
    })
}

/// A step's weight, with where it is written; only a traffic router has one.
fn step_weight(
    ctx: &mut Ctx<'_>,
    step: &RawStep,
    path: &str,
    router: Option<bool>,
) -> Option<(u8, Location)> {
    step.weight.as_ref().and_then(|v| {
        if router == Some(false) {
            ctx.err(
                v.referenced,
                join(path, "weight"),
                "weight needs traffic.type ingress-nginx or gateway-api, but traffic.type is replicas",
            );
            return None;
        }
        match parse_weight(&v.value) {
            Ok(w) => Some((w, v.referenced)),
            Err(m) => {
                ctx.err(v.referenced, join(path, "weight"), m);
                None
            }
        }
    })
}

/// Every step needs a size or a weight, and the first one a size.
fn step_has_size(
    ctx: &mut Ctx<'_>,
    raw: &Spanned<RawStep>,
    i: usize,
    path: &str,
    router: Option<bool>,
) {
    let (at, step) = (raw.referenced, &raw.value);
    if step.size.is_none() && step.weight.is_none() {
        if router == Some(true) {
            ctx.err(at, path, "expected a size, a weight or both in each step");
        } else {
            missing(
                ctx,
                at,
                &join(path, "size"),
                "pods like 1 or a share like \"10%\"",
            );
        }
    } else if i == 0 && step.size.is_none() {
        ctx.err(
            at,
            join(path, "size"),
            "the first step needs a size: the canary has no pods yet",
        );
    }
}

/// The latest size per unit and the latest weight, each with its step index,
/// for the growth checks: within a unit a size must not shrink, and each step
/// must grow the size or the weight.
#[derive(Default)]
struct Growth {
    pods: Option<(u32, usize)>,
    percent: Option<(f64, usize)>,
    weight: Option<(u8, usize)>,
}

/// The previous size in the same unit as a new one: `(new, old, step index,
/// old size)`, all comparable as numbers.
type SameUnit = Option<(f64, f64, usize, CanarySize)>;

impl Growth {
    /// Checks step `i` against the previous ones, then records it.
    /// `has_weight` is whether the step writes a weight, valid or not.
    fn check(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        path: &str,
        has_weight: bool,
        size: Option<(CanarySize, Location)>,
        weight: Option<(u8, Location)>,
    ) {
        let prev_same_unit = size.map(|(s, _)| self.same_unit(s));
        let size_grows = match prev_same_unit {
            None => size.is_some(),
            Some(None) => true,
            Some(Some((new, old, _, _))) => new > old,
        };
        let weight_grows = match (weight, self.weight) {
            (Some(_), None) => true,
            (Some((w, _)), Some((p, _))) => w > p,
            _ => false,
        };
        if i > 0 {
            if let (Some((s, at)), Some(prev)) = (size, prev_same_unit) {
                // With a weight present the weight message says it once.
                let say_no_growth = !weight_grows && !has_weight;
                size_growth(ctx, path, s, at, prev, say_no_growth);
            }
            if let (Some((w, at)), Some(prev)) = (weight, self.weight) {
                weight_growth(ctx, path, (w, at), prev, size_grows);
            }
        }
        self.record(i, size, weight);
    }

    fn same_unit(&self, s: CanarySize) -> SameUnit {
        match s {
            CanarySize::Replicas(n) => self
                .pods
                .map(|(p, j)| (f64::from(n), f64::from(p), j, CanarySize::Replicas(p))),
            CanarySize::Percent(p) => self.percent.map(|(q, j)| (p, q, j, CanarySize::Percent(q))),
        }
    }

    fn record(
        &mut self,
        i: usize,
        size: Option<(CanarySize, Location)>,
        weight: Option<(u8, Location)>,
    ) {
        if let Some((s, _)) = size {
            match s {
                CanarySize::Replicas(n) => self.pods = Some((n, i)),
                CanarySize::Percent(p) => self.percent = Some((p, i)),
            }
        }
        if let Some((w, _)) = weight {
            self.weight = Some((w, i));
        }
    }
}

/// A size against the previous one of its unit: it must not shrink, and
/// (when `say_no_growth`) an equal one is reported as not growing.
fn size_growth(
    ctx: &mut Ctx<'_>,
    path: &str,
    s: CanarySize,
    at: Location,
    prev: SameUnit,
    say_no_growth: bool,
) {
    let Some((new, old, j, prev)) = prev else {
        return;
    };
    if new < old {
        ctx.err(
            at,
            join(path, "size"),
            format!(
                "size {} is smaller than the previous size {} (steps[{j}]); sizes must not shrink",
                format_size(s),
                format_size(prev)
            ),
        );
    } else if new == old && say_no_growth {
        ctx.err(
            at,
            join(path, "size"),
            format!(
                "size {} does not grow: the previous size is also {} (steps[{j}]); each step must grow the size or the weight",
                format_size(s),
                format_size(prev)
            ),
        );
    }
}

/// A weight against the previous one: it must not shrink, nor stay equal
/// unless the size grows.
fn weight_growth(
    ctx: &mut Ctx<'_>,
    path: &str,
    (w, at): (u8, Location),
    (p, j): (u8, usize),
    size_grows: bool,
) {
    if w < p {
        ctx.err(
            at,
            join(path, "weight"),
            format!("weight {w} is lower than the previous weight {p} (steps[{j}]); weights must not shrink"),
        );
    } else if w == p && !size_grows {
        ctx.err(
            at,
            join(path, "weight"),
            format!("weight {w} does not grow: the previous weight is also {p} (steps[{j}]); each step must grow the size or the weight"),
        );
    }
}

pub(super) fn validate_blue_green(
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
        gate: bool_or(&b.gate, DEFAULT_GATE),
        keep_old_for: keep?,
    })
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
