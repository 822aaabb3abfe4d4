//! Raw serde shapes of a policy file, exactly as written (camelCase YAML).
//!
//! Every leaf is wrapped in [`Spanned`] so `validate` can point at the value it
//! rejects. Numbers, durations and sizes are read as a loose [`Scalar`] so that a
//! wrong type becomes a collected validation error instead of stopping serde.

use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value with its source location.
pub(crate) type S<T> = Spanned<T>;

/// Top level of a policy file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub service: Option<S<String>>,
    pub namespace: Option<S<String>>,
    pub deployment: Option<S<String>>,
    pub progress_deadline: Option<S<Scalar>>,
    pub baseline: Option<S<String>>,
    pub traffic: Option<S<RawTraffic>>,
    pub strategy: Option<S<RawStrategy>>,
    pub analysis: Option<S<RawAnalysis>>,
    pub alerts: Option<S<RawAlerts>>,
    pub notifications: Option<S<Vec<S<RawNotification>>>>,
}

/// `traffic:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawTraffic {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub ingress: Option<S<String>>,
    pub http_route: Option<S<String>>,
}

/// `strategy:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawStrategy {
    pub canary: Option<S<RawCanary>>,
    pub blue_green: Option<S<RawBlueGreen>>,
}

/// `strategy.canary:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawCanary {
    pub steps: Option<S<Vec<S<RawStep>>>>,
}

/// `strategy.canary.steps[i]:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawStep {
    pub size: Option<S<Scalar>>,
    pub weight: Option<S<Scalar>>,
    pub observe: Option<S<Scalar>>,
    pub gate: Option<S<bool>>,
}

/// `strategy.blueGreen:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawBlueGreen {
    pub active_service: Option<S<String>>,
    pub preview_service: Option<S<String>>,
    pub version_label: Option<S<String>>,
    pub observe: Option<S<Scalar>>,
    pub gate: Option<S<bool>>,
    pub keep_old_for: Option<S<Scalar>>,
}

/// `analysis:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawAnalysis {
    pub prometheus: Option<S<RawPrometheus>>,
    pub interval: Option<S<Scalar>>,
    pub max_duration: Option<S<Scalar>>,
    pub alpha: Option<S<Scalar>>,
    pub on_no_data: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub classic: Option<S<RawClassic>>,
    pub metrics: Option<S<Vec<S<RawMetric>>>>,
}

/// `analysis.prometheus:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawPrometheus {
    pub url: Option<S<String>>,
    pub bearer_token_file: Option<S<String>>,
    pub basic_auth: Option<S<RawBasicAuth>>,
    pub ca_file: Option<S<String>>,
}

/// `analysis.prometheus.basicAuth:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawBasicAuth {
    pub username: Option<S<String>>,
    pub password_file: Option<S<String>>,
}

/// `analysis.classic:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawClassic {
    pub pass_score: Option<S<Scalar>>,
    pub marginal_score: Option<S<Scalar>>,
}

/// `analysis.metrics[i]:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawMetric {
    pub name: Option<S<String>>,
    pub kind: Option<S<String>>,
    pub errors: Option<S<String>>,
    pub total: Option<S<String>>,
    pub buckets: Option<S<String>>,
    pub query: Option<S<String>>,
    pub direction: Option<S<String>>,
    pub critical: Option<S<bool>>,
    pub min_effect: Option<S<Scalar>>,
    pub weight: Option<S<Scalar>>,
    pub bounds: Option<S<RawBounds>>,
}

/// `analysis.metrics[i].bounds:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawBounds {
    pub min: Option<S<Scalar>>,
    pub max: Option<S<Scalar>>,
}

/// `alerts:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub matchers: Option<S<Vec<S<String>>>>,
    pub guard_window: Option<S<Scalar>>,
}

/// `notifications[i]:`
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawNotification {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub url: Option<S<String>>,
}

/// Any YAML scalar; the validator decides which types it accepts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                // Too large for i64: keep it as a (huge) float so range checks reject it.
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any YAML node with locations; used to find the field path of a serde error
/// and to classify the top-level value.
#[derive(Debug)]
pub(crate) enum Node {
    Null,
    /// The scalar's text (numbers and booleans formatted).
    Scalar(String),
    Seq(Vec<S<Node>>),
    Map(Vec<(S<Node>, S<Node>)>),
}

impl Node {
    /// The YAML kind, for "found a sequence" style messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Scalar(_) => "a scalar",
            Node::Seq(_) => "a sequence",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(v.to_owned()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar(String::from_utf8_lossy(v).into_owned()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(kv) = a.next_entry::<S<Node>, S<Node>>()? {
                    entries.push(kv);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}
