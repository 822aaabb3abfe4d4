//! Kubernetes names, non-empty strings and URLs.

use serde_saphyr::{Location, Spanned};

use super::{missing, Ctx};
use crate::policy::values::*;

/// Which Kubernetes naming rule a field follows.
#[derive(Clone, Copy)]
pub(super) enum NameRule {
    /// RFC 1123 label: namespaces, Services, Ingresses, HTTPRoutes.
    Label,
    /// RFC 1123 subdomain: Deployments.
    Subdomain,
}

pub(super) fn check_name(
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
pub(super) const MAX_SUBDOMAIN: usize = 253;

/// A name canaryd derives by appending to one from the policy.
pub(super) struct Derived {
    /// Characters appended.
    len: usize,
    /// The derived name, for messages.
    shape: &'static str,
}

/// The longest name derived from the Deployment's: the baseline's
/// ReplicaSet, `<deployment>-baseline-<10-character template hash>`.
pub(super) const BASELINE_RS_SUFFIX: Derived = Derived {
    len: "-baseline-".len() + 10,
    shape: "<deployment>-baseline-<template hash>",
};

/// The canary Ingress, `<ingress>-canary`.
pub(super) const CANARY_INGRESS_SUFFIX: Derived = Derived {
    len: "-canary".len(),
    shape: "<ingress>-canary",
};

/// Whether a name stays within Kubernetes' limit once canaryd appends to it
/// (reported here, at load, instead of as a 422 mid-rollout).
pub(super) fn derived_fits(
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

pub(super) fn required_name(
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

pub(super) fn non_empty(ctx: &mut Ctx<'_>, v: &Spanned<String>, path: &str) -> Option<String> {
    if v.value.trim().is_empty() {
        ctx.err(v.referenced, path, "must not be empty");
        None
    } else {
        Some(v.value.clone())
    }
}

pub(super) fn http_url(ctx: &mut Ctx<'_>, v: &Spanned<String>, path: &str) -> Option<String> {
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
