//! Durations and observe times.

use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::{missing, Ctx};
use crate::policy::raw::*;
use crate::policy::values::*;

pub(super) fn duration(ctx: &mut Ctx<'_>, v: &Spanned<Scalar>, path: &str) -> Option<Duration> {
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

pub(super) fn duration_or(
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
pub(super) fn observe(
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
