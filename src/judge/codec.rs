//! Compact, exact encodings of the evidence's long float vectors.
//!
//! The state annotation is bounded (see `docs/judge.md`, *Size of the
//! state*), and a float in JSON takes up to 24 characters. The grids of log
//! likelihood ratios and the per-window series are therefore written as
//! base64 (standard alphabet, padded) of their IEEE-754 `f64` values in
//! little-endian order: 10⅔ characters per value and bit-exact, so a state
//! read back judges exactly as the one written. Readers also accept the
//! plain JSON arrays written by earlier builds.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SeriesPoint;

/// Bytes of one encoded value.
const F64_BYTES: usize = 8;

/// Length of the base64 text of `values` floats.
pub const fn encoded_len(values: usize) -> usize {
    (values * F64_BYTES).div_ceil(3) * 4
}

/// Base64 of the floats' little-endian bytes.
pub fn encode_f64s(values: &[f64]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

/// Inverse of [`encode_f64s`].
pub fn decode_f64s(text: &str) -> Result<Vec<f64>, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("invalid base64: {e}"))?;
    if !bytes.len().is_multiple_of(F64_BYTES) {
        return Err(format!("{} bytes are not whole f64 values", bytes.len()));
    }
    Ok(bytes
        .chunks(F64_BYTES)
        .map(|c| {
            let mut b = [0u8; F64_BYTES];
            b.copy_from_slice(c);
            f64::from_le_bytes(b)
        })
        .collect())
}

/// A float vector as written now (base64) or by earlier builds (array).
#[derive(Deserialize)]
#[serde(untagged)]
enum Floats {
    Base64(String),
    Array(Vec<f64>),
}

impl Floats {
    fn into_vec<E: serde::de::Error>(self) -> Result<Vec<f64>, E> {
        match self {
            Floats::Base64(s) => decode_f64s(&s).map_err(E::custom),
            Floats::Array(v) => Ok(v),
        }
    }
}

/// Serde adapter: a `Vec<f64>` as base64 (see the module docs).
pub mod floats {
    use super::*;

    /// Writes base64.
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        encode_f64s(v).serialize(s)
    }

    /// Reads base64 or a JSON array.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Floats::deserialize(d)?.into_vec()
    }
}

/// The per-window series as columns: `n` points, canary and baseline values
/// and (latency only) the canary's p99, each a base64 column in which NaN
/// stands for "no value" (recorded values are always finite).
#[derive(Serialize, Deserialize)]
struct Columns {
    c: Floats64,
    b: Floats64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c99: Option<Floats64>,
}

/// One column, written as base64.
#[derive(Serialize, Deserialize)]
struct Floats64(#[serde(with = "floats")] Vec<f64>);

/// The series as written now (columns) or by earlier builds (points).
#[derive(Deserialize)]
#[serde(untagged)]
enum SeriesForm {
    Columns(Columns),
    Points(Vec<SeriesPoint>),
}

fn to_nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn from_nan(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

/// Serde adapter for `MetricEvidence::series` (see [`Columns`]).
pub mod series {
    use super::*;

    /// Writes columns.
    pub fn serialize<S: Serializer>(points: &[SeriesPoint], s: S) -> Result<S::Ok, S::Error> {
        let column = |f: fn(&SeriesPoint) -> Option<f64>| {
            Floats64(points.iter().map(|p| to_nan(f(p))).collect())
        };
        let has_c99 = points.iter().any(|p| p.c99.is_some());
        Columns {
            c: column(|p| p.c),
            b: column(|p| p.b),
            c99: has_c99.then(|| column(|p| p.c99)),
        }
        .serialize(s)
    }

    /// Reads columns or an array of points.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SeriesPoint>, D::Error> {
        let cols = match SeriesForm::deserialize(d)? {
            SeriesForm::Points(p) => return Ok(p),
            SeriesForm::Columns(cols) => cols,
        };
        let n = cols.c.0.len();
        let c99 = cols.c99.map_or_else(|| vec![f64::NAN; n], |c| c.0);
        if cols.b.0.len() != n || c99.len() != n {
            return Err(serde::de::Error::custom("series columns differ in length"));
        }
        Ok((0..n)
            .map(|i| SeriesPoint {
                c: from_nan(cols.c.0[i]),
                b: from_nan(cols.b.0[i]),
                c99: from_nan(c99[i]),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_bit_exactly() {
        for n in 0..5 {
            let v: Vec<f64> = (0..n)
                .map(|i| -1.0 / 3.0 * f64::from(i) + 1e-300)
                .chain([f64::MAX, -0.0, f64::MIN_POSITIVE])
                .collect();
            let text = encode_f64s(&v);
            assert_eq!(text.len(), encoded_len(v.len()));
            let back = decode_f64s(&text).unwrap();
            assert_eq!(
                back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
        assert_eq!(encode_f64s(&[1.0]), "AAAAAAAA8D8=");
        assert!(decode_f64s("AAA*").is_err());
        assert!(decode_f64s("AAAA").is_err());
    }
}
