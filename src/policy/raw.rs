//! Raw shapes of a policy file, exactly as written (camelCase YAML), read out of
//! the located node tree.
//!
//! The `mappings!` declarations below are the schema: each names a mapping's
//! fields, their YAML keys and their types, in the order the "expected one of"
//! hint lists them. Reading never stops early: an unknown key, a duplicate key
//! or a value of the wrong kind (a mapping where a string belongs) is reported
//! and left out, and reading goes on with the rest. Numbers, durations and sizes
//! are read as a loose [`Scalar`] so `validate` reports their type errors.

use serde_saphyr::Spanned;

pub(crate) use super::tree::Scalar;
use super::tree::{found, scalar_text, Node, S};
use super::validate::Ctx;

/// A list; an item of the wrong kind is `None` (already reported) so the
/// others keep their index in messages.
pub(crate) type List<T> = Vec<Option<S<T>>>;

/// A type that can be read from a tree node.
pub(crate) trait FromNode: Sized {
    /// What a value of this type is called in "expected …, found …".
    const EXPECTED: &'static str;

    /// Reads `node` at field path `path`; `None` when it has the wrong kind.
    /// Problems inside a container are reported to `ctx` as they are found.
    fn from_node(node: &S<Node>, path: &str, ctx: &mut Ctx<'_>) -> Option<Self>;
}

/// Reads a value with its location. A value of the wrong kind is reported as
/// `expected …, found …`, and its path is remembered so `validate` does not
/// also call it missing.
pub(crate) fn read<T: FromNode>(node: &S<Node>, path: &str, ctx: &mut Ctx<'_>) -> Option<S<T>> {
    match T::from_node(node, path, ctx) {
        Some(value) => Some(Spanned {
            value,
            referenced: node.referenced,
            defined: node.defined,
        }),
        None => {
            let found = found(node, ctx.src);
            ctx.err(
                node.referenced,
                path,
                format!("expected {}, found {found}", T::EXPECTED),
            );
            ctx.dropped.push(path.to_owned());
            None
        }
    }
}

impl FromNode for String {
    const EXPECTED: &'static str = "a string";
    fn from_node(node: &S<Node>, _: &str, ctx: &mut Ctx<'_>) -> Option<Self> {
        scalar_text(node, ctx.src)
    }
}

impl FromNode for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_node(node: &S<Node>, _: &str, _: &mut Ctx<'_>) -> Option<Self> {
        match &node.value {
            Node::Scalar(Scalar::Bool(b)) => Some(*b),
            // A quoted "true" is still clearly meant as a boolean.
            Node::Scalar(Scalar::Str(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Node::Scalar(Scalar::Str(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

impl FromNode for Scalar {
    const EXPECTED: &'static str = "a value";
    fn from_node(node: &S<Node>, _: &str, _: &mut Ctx<'_>) -> Option<Self> {
        match &node.value {
            Node::Null => None,
            Node::Scalar(s) => Some(s.clone()),
            other => Some(Scalar::Nested(other.kind_name())),
        }
    }
}

impl<T: FromNode> FromNode for List<T> {
    const EXPECTED: &'static str = "a list";
    fn from_node(node: &S<Node>, path: &str, ctx: &mut Ctx<'_>) -> Option<Self> {
        let Node::Seq(items) = &node.value else {
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| read(item, &format!("{path}[{i}]"), ctx))
                .collect(),
        )
    }
}

/// The entries of one mapping being read: hands out fields by key, then
/// reports every key that was not asked for and every repeated key.
struct Fields<'n> {
    entries: &'n [(S<Node>, S<Node>)],
    path: &'n str,
    known: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn new(entries: &'n [(S<Node>, S<Node>)], path: &'n str) -> Self {
        Fields {
            entries,
            path,
            known: Vec::new(),
        }
    }

    /// The first value under `key`; a null value counts as absent.
    fn take<T: FromNode>(&mut self, key: &'static str, ctx: &mut Ctx<'_>) -> Option<S<T>> {
        self.known.push(key);
        let (_, value) = self
            .entries
            .iter()
            .find(|(k, _)| matches!(&k.value, Node::Scalar(Scalar::Str(s)) if s == key))?;
        if matches!(value.value, Node::Null) {
            return None;
        }
        read(value, &join(self.path, key), ctx)
    }

    /// Reports unknown, repeated and non-scalar keys, in document order.
    fn finish(self, ctx: &mut Ctx<'_>) {
        for (i, (key, _)) in self.entries.iter().enumerate() {
            let Some(name) = scalar_text(key, ctx.src) else {
                let found = found(key, ctx.src);
                ctx.err(
                    key.referenced,
                    self.path,
                    format!("expected a field name, found {found}"),
                );
                continue;
            };
            let path = join(self.path, &name);
            if !self.known.contains(&name.as_str()) {
                ctx.err(key.referenced, path, unknown_field(&name, &self.known));
            } else if self.entries[..i]
                .iter()
                .any(|(k, _)| scalar_text(k, ctx.src).as_deref() == Some(name.as_str()))
            {
                ctx.err(
                    key.referenced,
                    path,
                    format!("duplicate key {name:?}; each key may appear once"),
                );
            }
        }
    }
}

/// `parent.field`, or `field` at the top level.
pub(crate) fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn unknown_field(field: &str, expected: &[&str]) -> String {
    let close = expected
        .iter()
        .find(|c| c.eq_ignore_ascii_case(field) || edit_distance(c, field) <= 2);
    let hint = close.map_or(String::new(), |c| format!(" (did you mean {c:?}?)"));
    format!(
        "unknown field {field:?}{hint}; expected one of: {}",
        expected.join(", ")
    )
}

/// Levenshtein distance, for "did you mean" hints on short field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Declares raw mapping types: each field is `name: Type = "yamlKey"` and
/// becomes `Option<S<Type>>` (absent or null → `None`). The declaration is the
/// single source of the allowed keys, for reading and for the hint alike.
macro_rules! mappings {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($field:ident: $ty:ty = $key:literal,)* }
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name {
            $(pub $field: Option<S<$ty>>,)*
        }

        impl FromNode for $name {
            const EXPECTED: &'static str = "a mapping";
            fn from_node(node: &S<Node>, path: &str, ctx: &mut Ctx<'_>) -> Option<Self> {
                let Node::Map(entries) = &node.value else {
                    return None;
                };
                let mut fields = Fields::new(entries, path);
                let raw = $name {
                    $($field: fields.take($key, ctx),)*
                };
                fields.finish(ctx);
                Some(raw)
            }
        }
    )*};
}

mappings! {
    /// Top level of a policy file.
    RawPolicy {
        service: String = "service",
        namespace: String = "namespace",
        deployment: String = "deployment",
        progress_deadline: Scalar = "progressDeadline",
        baseline: String = "baseline",
        traffic: RawTraffic = "traffic",
        strategy: RawStrategy = "strategy",
        analysis: RawAnalysis = "analysis",
        alerts: RawAlerts = "alerts",
        notifications: List<RawNotification> = "notifications",
    }

    /// `traffic:`
    RawTraffic {
        kind: String = "type",
        ingress: String = "ingress",
        http_route: String = "httpRoute",
    }

    /// `strategy:`
    RawStrategy {
        canary: RawCanary = "canary",
        blue_green: RawBlueGreen = "blueGreen",
    }

    /// `strategy.canary:`
    RawCanary {
        steps: List<RawStep> = "steps",
    }

    /// `strategy.canary.steps[i]:`
    RawStep {
        size: Scalar = "size",
        weight: Scalar = "weight",
        observe: Scalar = "observe",
        gate: bool = "gate",
    }

    /// `strategy.blueGreen:`
    RawBlueGreen {
        active_service: String = "activeService",
        preview_service: String = "previewService",
        version_label: String = "versionLabel",
        observe: Scalar = "observe",
        gate: bool = "gate",
        keep_old_for: Scalar = "keepOldFor",
    }

    /// `analysis:`
    RawAnalysis {
        prometheus: RawPrometheus = "prometheus",
        interval: Scalar = "interval",
        max_duration: Scalar = "maxDuration",
        alpha: Scalar = "alpha",
        on_no_data: String = "onNoData",
        min_requests_per_step: Scalar = "minRequestsPerStep",
        mode: String = "mode",
        classic: RawClassic = "classic",
        metrics: List<RawMetric> = "metrics",
    }

    /// `analysis.prometheus:`
    RawPrometheus {
        url: String = "url",
        bearer_token_file: String = "bearerTokenFile",
        basic_auth: RawBasicAuth = "basicAuth",
        ca_file: String = "caFile",
    }

    /// `analysis.prometheus.basicAuth:`
    RawBasicAuth {
        username: String = "username",
        password_file: String = "passwordFile",
    }

    /// `analysis.classic:`
    RawClassic {
        pass_score: Scalar = "passScore",
        marginal_score: Scalar = "marginalScore",
    }

    /// `analysis.metrics[i]:`
    RawMetric {
        name: String = "name",
        kind: String = "kind",
        errors: String = "errors",
        total: String = "total",
        buckets: String = "buckets",
        query: String = "query",
        direction: String = "direction",
        critical: bool = "critical",
        min_effect: Scalar = "minEffect",
        weight: Scalar = "weight",
        bounds: RawBounds = "bounds",
    }

    /// `analysis.metrics[i].bounds:`
    RawBounds {
        min: Scalar = "min",
        max: Scalar = "max",
    }

    /// `alerts:`
    RawAlerts {
        matchers: List<String> = "matchers",
        guard_window: Scalar = "guardWindow",
    }

    /// `notifications[i]:`
    RawNotification {
        kind: String = "type",
        url: String = "url",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("interval", "intervall"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn unknown_field_suggests_close_names() {
        assert_eq!(
            unknown_field("intervall", &["interval", "alpha"]),
            "unknown field \"intervall\" (did you mean \"interval\"?); expected one of: interval, alpha"
        );
        assert_eq!(
            unknown_field("zzz", &["interval"]),
            "unknown field \"zzz\"; expected one of: interval"
        );
    }
}
