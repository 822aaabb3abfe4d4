//! The `alerts` and `notifications` sections.

use serde_saphyr::Spanned;

use super::durations::duration_or;
use super::names::http_url;
use super::scalars::one_of;
use super::{missing, Ctx};
use crate::policy::defaults::DEFAULT_GUARD_WINDOW;
use crate::policy::raw::*;
use crate::policy::types::*;
use crate::policy::values::*;

pub(super) fn validate_alerts(
    ctx: &mut Ctx<'_>,
    a: &Option<Spanned<RawAlerts>>,
) -> Option<AlertPolicy> {
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

pub(super) fn validate_notifications(
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
