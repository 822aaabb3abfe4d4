//! The located node tree: a policy file parsed without a schema into nested
//! mappings, sequences and typed scalars, every node and key with its location.
//!
//! This is the only serde pass over the text; [`super::raw`] reads the policy
//! fields out of the tree so that unknown keys and wrong kinds are collected as
//! errors instead of stopping a typed deserializer.

use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value with its source location.
pub(crate) type S<T> = Spanned<T>;

/// A YAML scalar as YAML 1.2 resolves it; the validator decides which types a
/// field accepts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A mapping or sequence found where a scalar belongs, by kind name
    /// ("a mapping"), so the validator's "expected …, found …" can name it.
    Nested(&'static str),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Nested(kind) => f.write_str(kind),
        }
    }
}

/// Any YAML node; mapping entries keep their order and duplicates.
#[derive(Debug)]
pub(crate) enum Node {
    Null,
    Scalar(Scalar),
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

/// The text of a scalar node as written: strings as parsed, other scalars
/// (numbers, booleans) from the source so `1.50` stays `1.50` and `yes` stays
/// `yes`. `None` for null and containers.
pub(crate) fn scalar_text(node: &S<Node>, src: &str) -> Option<String> {
    let Node::Scalar(s) = &node.value else {
        return None;
    };
    if let Scalar::Str(text) = s {
        return Some(text.clone());
    }
    // `defined`: an alias's text is at its anchor, not at `*name`.
    let span = node.defined.span();
    let written = span
        .byte_offset()
        .zip(span.byte_len())
        .and_then(|(at, len)| {
            let start = usize::try_from(at).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            src.get(start..end)
        });
    Some(written.map_or_else(|| s.to_string(), |t| t.trim().to_owned()))
}

/// What was found, for "expected …, found …": a scalar's text quoted, else the kind.
pub(crate) fn found(node: &S<Node>, src: &str) -> String {
    match scalar_text(node, src) {
        Some(text) => format!("{text:?}"),
        None => node.value.kind_name().to_owned(),
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
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                // Too large for i64: keep it as a (huge) float so range checks reject it.
                Ok(Node::Scalar(
                    i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int),
                ))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Scalar(
                    i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int),
                ))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
                Ok(Node::Scalar(
                    i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int),
                ))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Str(v.to_owned())))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar::Str(
                    String::from_utf8_lossy(v).into_owned(),
                )))
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
