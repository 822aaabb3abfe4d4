//! Choices, numbers and booleans.

use serde_saphyr::Spanned;

use super::Ctx;
use crate::policy::raw::*;
use crate::policy::values::*;

pub(super) fn one_of<T: Copy>(
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

pub(super) fn number(ctx: &mut Ctx<'_>, v: &Spanned<Scalar>, path: &str) -> Option<f64> {
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
pub(super) fn number_where(
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

pub(super) fn bool_or(v: &Option<Spanned<bool>>, default: bool) -> bool {
    v.as_ref().map_or(default, |b| b.value)
}
