//! The `traffic` section: how traffic reaches the canary.

use serde_saphyr::{Location, Spanned};

use super::names::{check_name, derived_fits, NameRule, CANARY_INGRESS_SUFFIX};
use super::scalars::one_of;
use super::{missing, Ctx};
use crate::policy::raw::*;
use crate::policy::types::*;

pub(super) fn validate_traffic(
    ctx: &mut Ctx<'_>,
    t: &Option<Spanned<RawTraffic>>,
) -> Option<Traffic> {
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
    let kind = kind.value.as_str();
    match k {
        K::Replicas => {
            unused(ctx, &t.ingress, "ingress", "ingress-nginx", kind);
            unused(ctx, &t.http_route, "httpRoute", "gateway-api", kind);
            Some(Traffic::Replicas)
        }
        K::Nginx => {
            unused(ctx, &t.http_route, "httpRoute", "gateway-api", kind);
            ingress(ctx, t, at)
        }
        K::Gateway => {
            unused(ctx, &t.ingress, "ingress", "ingress-nginx", kind);
            http_route(ctx, t, at)
        }
    }
}

/// Reports `traffic.<field>`, used only by traffic type `owner`, when set
/// for type `kind`.
fn unused(ctx: &mut Ctx<'_>, v: &Option<Spanned<String>>, field: &str, owner: &str, kind: &str) {
    if let Some(v) = v {
        ctx.err(
            v.referenced,
            format!("traffic.{field}"),
            format!("{field} is only used with traffic.type {owner}, but the type is {kind}"),
        );
    }
}

/// `traffic.ingress` for type ingress-nginx.
fn ingress(ctx: &mut Ctx<'_>, t: &RawTraffic, at: Location) -> Option<Traffic> {
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
            .filter(|_| derived_fits(ctx, Some(i), "traffic.ingress", CANARY_INGRESS_SUFFIX))
            .map(|ingress| Traffic::IngressNginx { ingress }),
    }
}

/// `traffic.httpRoute` for type gateway-api.
fn http_route(ctx: &mut Ctx<'_>, t: &RawTraffic, at: Location) -> Option<Traffic> {
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
