//! `canaryd judge FILE`: judge a JSON observations document.
//!
//! The document (see `docs/judge.md`) carries the policy settings per metric
//! and, per arm, cumulative counter readings, per-window increases, histogram
//! buckets, raw latency samples or gauge values. Windows are replayed through
//! [`Evidence::record`] and [`evaluate_with`] as the daemon would; the first
//! rollback stops the replay. Every input problem is reported with its JSON
//! path; nothing here panics on bad input.

use std::time::Duration;

use serde_json::Value;

use crate::judge::{
    evaluate_with, ClassicMetricConfig, Decision, Evidence, JudgeOptions, NanStrategy,
    OutlierStrategy, Verdict, DEFAULT_MIN_EFFECT,
};
use crate::observation::{ArmValue, Histogram, MetricWindow, Sample, WindowObservation};
use crate::policy::{
    Analysis, Bounds, ClassicSettings, Direction, JudgeMode, MetricKind, MetricSpec, OnNoData,
    PrometheusConfig, Template,
};
use crate::Error;

/// Largest document accepted (bytes).
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Prometheus' default histogram buckets, used for raw samples without `le`.
pub use crate::observation::DEFAULT_BUCKETS;

/// A parsed document: the settings and the windows to replay.
#[derive(Debug, Clone)]
pub struct Document {
    /// Analysis settings built from the document.
    pub analysis: Analysis,
    /// Per-metric classic settings.
    pub options: JudgeOptions,
    /// Windows in order.
    pub windows: Vec<WindowObservation>,
}

/// Replays the windows and returns the verdict after the last one, or the
/// first rollback.
pub fn judge_document(doc: &Document) -> Verdict {
    let mut evidence = Evidence::default();
    let mut verdict = evaluate_with(&doc.analysis, &doc.options, &evidence);
    for w in &doc.windows {
        evidence.record(w);
        verdict = evaluate_with(&doc.analysis, &doc.options, &evidence);
        if verdict.decision == Decision::Rollback {
            break;
        }
    }
    verdict
}

fn err(path: &str, msg: impl std::fmt::Display) -> Error {
    Error::ParseJudgeInput(format!("{path}: {msg}"))
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

fn number(v: &Value, path: &str) -> Result<f64, Error> {
    let x = v
        .as_f64()
        .ok_or_else(|| err(path, format!("expected a number, got {}", describe(v))))?;
    if !x.is_finite() {
        return Err(err(path, format!("not a finite number: {x}")));
    }
    Ok(x)
}

fn count(v: &Value, path: &str) -> Result<f64, Error> {
    let x = number(v, path)?;
    if x < 0.0 {
        return Err(err(path, format!("negative count {x}")));
    }
    Ok(x)
}

fn opt_field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, Error> {
    v.as_array()
        .ok_or_else(|| err(path, format!("expected an array, got {}", describe(v))))
}

fn probability(v: &Value, path: &str) -> Result<f64, Error> {
    let x = number(v, path)?;
    if !(x > 0.0 && x < 1.0) {
        return Err(err(
            path,
            format!("must be between 0 and 1 (exclusive), got {x}"),
        ));
    }
    Ok(x)
}

/// Longest window a document may ask for (one day).
const MAX_INTERVAL_SECS: f64 = 86_400.0;

/// Parses a document; errors name the JSON path of the problem.
pub fn parse_document(text: &str) -> Result<Document, Error> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| Error::ParseJudgeInput(format!("malformed JSON: {e}")))?;
    if !root.is_object() {
        return Err(err("$", "expected a JSON object"));
    }
    let alpha = match opt_field(&root, "alpha") {
        Some(v) => probability(v, "alpha")?,
        None => crate::policy::DEFAULT_ALPHA,
    };
    let interval = parse_interval(&root)?;
    let mode = parse_mode(&root)?;
    let metrics = parse_metrics(&root)?;
    let n_windows = metrics.window_count();
    let shares = parse_shares(&root, n_windows)?;
    let windows = (0..n_windows)
        .map(|w| metrics.window(w, interval * (w + 1) as f64, shares[w]))
        .collect();
    let analysis = Analysis {
        prometheus: PrometheusConfig {
            url: String::new(),
            auth: None,
            ca_file: None,
        },
        interval: Duration::from_secs_f64(interval),
        max_duration: Duration::from_secs_f64(interval * n_windows.max(1) as f64),
        alpha,
        on_no_data: OnNoData::Hold,
        min_requests_per_step: 0,
        mode,
        metrics: metrics.specs,
    };
    Ok(Document {
        analysis,
        options: metrics.options,
        windows,
    })
}

/// `intervalSecs`: the window length in seconds (60 when absent).
fn parse_interval(root: &Value) -> Result<f64, Error> {
    let Some(v) = opt_field(root, "intervalSecs") else {
        return Ok(crate::policy::defaults::DEFAULT_INTERVAL.as_secs_f64());
    };
    let s = number(v, "intervalSecs")?;
    if s <= 0.0 || s > MAX_INTERVAL_SECS {
        return Err(err(
            "intervalSecs",
            format!("must be in (0, 86400], got {s}"),
        ));
    }
    Ok(s)
}

/// `mode` and, in classic mode, the `classic` scores.
fn parse_mode(root: &Value) -> Result<JudgeMode, Error> {
    match opt_field(root, "mode").map(|v| (v, v.as_str())) {
        None | Some((_, Some("sequential"))) => Ok(JudgeMode::Sequential),
        Some((_, Some("classic"))) => {
            let c = opt_field(root, "classic");
            let pass_score =
                parse_score(c, "passScore", crate::policy::defaults::DEFAULT_PASS_SCORE)?;
            let marginal_score = parse_score(
                c,
                "marginalScore",
                crate::policy::defaults::DEFAULT_MARGINAL_SCORE,
            )?;
            if marginal_score > pass_score {
                return Err(err("classic.marginalScore", "must not exceed passScore"));
            }
            Ok(JudgeMode::Classic(ClassicSettings {
                pass_score,
                marginal_score,
            }))
        }
        Some((v, _)) => Err(err(
            "mode",
            format!(
                "expected \"sequential\" or \"classic\", got {}",
                describe(v)
            ),
        )),
    }
}

/// A score `classic.KEY` in 0..=100, `default` when absent.
fn parse_score(classic: Option<&Value>, key: &str, default: f64) -> Result<f64, Error> {
    let Some(v) = classic.and_then(|c| opt_field(c, key)) else {
        return Ok(default);
    };
    let path = format!("classic.{key}");
    let x = number(v, &path)?;
    if !(0.0..=100.0).contains(&x) {
        return Err(err(&path, format!("must be within 0..=100, got {x}")));
    }
    Ok(x)
}

/// The `metrics` list: specs, classic settings and each metric's per-arm
/// values per window, in document order.
struct Metrics {
    specs: Vec<MetricSpec>,
    options: JudgeOptions,
    /// Per metric: name, canary values, baseline values.
    series: Vec<(String, Vec<ArmValue>, Vec<ArmValue>)>,
}

impl Metrics {
    /// Windows to replay: the longest arm's series.
    fn window_count(&self) -> usize {
        self.series
            .iter()
            .map(|(_, c, b)| c.len().max(b.len()))
            .max()
            .unwrap_or(0)
    }

    /// Window `w` (0-based) ending `at_secs` after the start; an arm whose
    /// series is shorter has no data in it.
    fn window(&self, w: usize, at_secs: f64, share: Option<f64>) -> WindowObservation {
        let missing = || ArmValue::NoData("no value for this window in the document".into());
        WindowObservation {
            at_secs,
            expected_canary_share: share,
            metrics: self
                .series
                .iter()
                .map(|(name, c, b)| MetricWindow {
                    name: name.clone(),
                    canary: c.get(w).cloned().unwrap_or_else(missing),
                    baseline: b.get(w).cloned().unwrap_or_else(missing),
                })
                .collect(),
        }
    }
}

fn parse_metrics(root: &Value) -> Result<Metrics, Error> {
    let metrics_v = array(
        opt_field(root, "metrics").ok_or_else(|| err("metrics", "missing"))?,
        "metrics",
    )?;
    if metrics_v.is_empty() {
        return Err(err("metrics", "empty: at least one metric is needed"));
    }
    let mut out = Metrics {
        specs: Vec::new(),
        options: JudgeOptions::default(),
        series: Vec::new(),
    };
    for (i, mv) in metrics_v.iter().enumerate() {
        let path = format!("metrics[{i}]");
        let m = parse_metric(mv, &path)?;
        if out.specs.iter().any(|s| s.name == m.spec.name) {
            return Err(err(
                &format!("{path}.name"),
                format!("duplicate metric name {:?}", m.spec.name),
            ));
        }
        out.options.classic.push((m.spec.name.clone(), m.classic));
        out.series.push((m.spec.name.clone(), m.canary, m.baseline));
        out.specs.push(m.spec);
    }
    Ok(out)
}

/// `expectedCanaryShare`: one share for all windows, one per window (`null`:
/// unknown) or absent.
fn parse_shares(root: &Value, n_windows: usize) -> Result<Vec<Option<f64>>, Error> {
    match opt_field(root, "expectedCanaryShare") {
        None => Ok(vec![None; n_windows]),
        Some(v) if v.is_array() => {
            let a = array(v, "expectedCanaryShare")?;
            if a.len() != n_windows {
                return Err(err(
                    "expectedCanaryShare",
                    format!("{} entries for {n_windows} windows", a.len()),
                ));
            }
            a.iter()
                .enumerate()
                .map(|(w, x)| {
                    if x.is_null() {
                        Ok(None)
                    } else {
                        probability(x, &format!("expectedCanaryShare[{w}]")).map(Some)
                    }
                })
                .collect()
        }
        Some(v) => Ok(vec![
            Some(probability(v, "expectedCanaryShare")?);
            n_windows
        ]),
    }
}

/// One metric of the document.
struct ParsedMetric {
    spec: MetricSpec,
    classic: ClassicMetricConfig,
    canary: Vec<ArmValue>,
    baseline: Vec<ArmValue>,
}

fn parse_metric(mv: &Value, path: &str) -> Result<ParsedMetric, Error> {
    if !mv.is_object() {
        return Err(err(path, "expected an object"));
    }
    let name = parse_name(mv, path)?;
    let kind = parse_kind(mv, path)?;
    let direction = parse_direction(mv, path)?;
    let critical = match opt_field(mv, "critical") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(err(
                &format!("{path}.critical"),
                format!("expected true or false, got {}", describe(v)),
            ))
        }
    };
    let min_effect = parse_min_effect(mv, path)?;
    let weight = parse_weight(mv, path)?;
    let bounds = parse_bounds(mv, path)?;
    let classic = parse_classic(mv, path)?;
    let canary = parse_arm(mv, path, "canary", &kind)?;
    let baseline = parse_arm(mv, path, "baseline", &kind)?;
    let spec = MetricSpec {
        name,
        kind,
        direction,
        bounds,
        critical,
        min_effect,
        weight,
    };
    Ok(ParsedMetric {
        spec,
        classic,
        canary,
        baseline,
    })
}

fn parse_name(mv: &Value, path: &str) -> Result<String, Error> {
    match opt_field(mv, "name") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(v) => Err(err(
            &format!("{path}.name"),
            format!("expected a non-empty string, got {}", describe(v)),
        )),
        None => Err(err(&format!("{path}.name"), "missing")),
    }
}

/// The metric's kind; a document has no queries, so its templates are empty.
fn parse_kind(mv: &Value, path: &str) -> Result<MetricKind, Error> {
    let kind_s = match opt_field(mv, "kind") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(err(
                &format!("{path}.kind"),
                format!("expected a string, got {}", describe(v)),
            ))
        }
        None => {
            return Err(err(
                &format!("{path}.kind"),
                "missing (errors, latency or gauge)",
            ))
        }
    };
    let empty = || Template(String::new());
    match kind_s {
        "errors" => Ok(MetricKind::Errors {
            errors: empty(),
            total: empty(),
        }),
        "latency" => Ok(MetricKind::Latency { buckets: empty() }),
        "gauge" => Ok(MetricKind::Gauge { query: empty() }),
        other => Err(err(
            &format!("{path}.kind"),
            format!("unknown kind {other:?} (errors, latency or gauge)"),
        )),
    }
}

fn parse_direction(mv: &Value, path: &str) -> Result<Direction, Error> {
    match opt_field(mv, "direction").map(|v| (v, v.as_str())) {
        None | Some((_, Some("increase"))) => Ok(Direction::Increase),
        Some((_, Some("decrease"))) => Ok(Direction::Decrease),
        Some((_, Some("either"))) => Ok(Direction::Either),
        Some((v, _)) => Err(err(
            &format!("{path}.direction"),
            format!("expected increase, decrease or either, got {}", describe(v)),
        )),
    }
}

fn parse_min_effect(mv: &Value, path: &str) -> Result<f64, Error> {
    let Some(v) = opt_field(mv, "minEffect") else {
        return Ok(DEFAULT_MIN_EFFECT);
    };
    let p = format!("{path}.minEffect");
    let x = number(v, &p)?;
    if x <= 0.0 || x > 100.0 {
        return Err(err(&p, format!("must be in (0, 100], got {x}")));
    }
    Ok(x)
}

fn parse_weight(mv: &Value, path: &str) -> Result<f64, Error> {
    let Some(v) = opt_field(mv, "weight") else {
        return Ok(1.0);
    };
    let p = format!("{path}.weight");
    let x = number(v, &p)?;
    if x < 0.0 {
        return Err(err(&p, format!("negative weight {x}")));
    }
    Ok(x)
}

fn parse_bounds(mv: &Value, path: &str) -> Result<Option<Bounds>, Error> {
    let Some(b) = opt_field(mv, "bounds") else {
        return Ok(None);
    };
    let p = format!("{path}.bounds");
    if !b.is_object() {
        return Err(err(&p, "expected an object with min and/or max"));
    }
    let min = opt_field(b, "min")
        .map(|v| number(v, &format!("{p}.min")))
        .transpose()?;
    let max = opt_field(b, "max")
        .map(|v| number(v, &format!("{p}.max")))
        .transpose()?;
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(err(&p, format!("min {lo} above max {hi}")));
        }
    }
    Ok(Some(Bounds { min, max }))
}

fn parse_classic(mv: &Value, path: &str) -> Result<ClassicMetricConfig, Error> {
    let mut cfg = ClassicMetricConfig::default();
    let Some(c) = opt_field(mv, "classic") else {
        return Ok(cfg);
    };
    let p = format!("{path}.classic");
    if !c.is_object() {
        return Err(err(&p, "expected an object"));
    }
    if let Some(v) = opt_field(c, "group") {
        cfg.group = Some(
            v.as_str()
                .ok_or_else(|| err(&format!("{p}.group"), "expected a string"))?
                .to_string(),
        );
    }
    let positive = |key: &str| -> Result<Option<f64>, Error> {
        opt_field(c, key)
            .map(|v| non_negative(v, &format!("{p}.{key}")))
            .transpose()
    };
    if let Some(x) = positive("allowedIncrease")? {
        cfg.allowed_increase = x;
    }
    if let Some(x) = positive("allowedDecrease")? {
        cfg.allowed_decrease = x;
    }
    if let Some(x) = positive("tolerance")? {
        cfg.tolerance = x;
    }
    if let Some(v) = opt_field(c, "confidence") {
        cfg.confidence = Some(probability(v, &format!("{p}.confidence"))?);
    }
    cfg.nan = parse_nan(c, &p)?;
    cfg.outliers = parse_outliers(c, &p)?;
    Ok(cfg)
}

fn non_negative(v: &Value, path: &str) -> Result<f64, Error> {
    let x = number(v, path)?;
    if x < 0.0 {
        return Err(err(path, format!("must not be negative, got {x}")));
    }
    Ok(x)
}

/// `classic.nanStrategy` of metric path `p` (`remove` when absent).
fn parse_nan(c: &Value, p: &str) -> Result<NanStrategy, Error> {
    match opt_field(c, "nanStrategy").map(|v| (v, v.as_str())) {
        None | Some((_, Some("remove"))) => Ok(NanStrategy::Remove),
        Some((_, Some("replace"))) => Ok(NanStrategy::Replace),
        Some((v, _)) => Err(err(
            &format!("{p}.nanStrategy"),
            format!("expected remove or replace, got {}", describe(v)),
        )),
    }
}

/// `classic.outliers` of metric path `p`: `"keep"` (or absent) or
/// `{"iqr": factor}`.
fn parse_outliers(c: &Value, p: &str) -> Result<OutlierStrategy, Error> {
    match opt_field(c, "outliers") {
        None => Ok(OutlierStrategy::Keep),
        Some(Value::String(s)) if s == "keep" => Ok(OutlierStrategy::Keep),
        Some(v) => match opt_field(v, "iqr") {
            Some(f) => {
                non_negative(f, &format!("{p}.outliers.iqr")).map(OutlierStrategy::RemoveIqr)
            }
            None => Err(err(
                &format!("{p}.outliers"),
                format!(
                    "expected \"keep\" or {{\"iqr\": factor}}, got {}",
                    describe(v)
                ),
            )),
        },
    }
}

/// Per-window increases of cumulative readings, handling counter resets as
/// Prometheus' `increase` does: a drop means the counter restarted from zero,
/// so the increase is the new reading.
fn increases(readings: &[f64]) -> Vec<f64> {
    readings
        .windows(2)
        .map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] })
        .collect()
}

fn parse_arm(mv: &Value, path: &str, arm: &str, kind: &MetricKind) -> Result<Vec<ArmValue>, Error> {
    let p = format!("{path}.{arm}");
    let a = opt_field(mv, arm).ok_or_else(|| err(&p, "missing"))?;
    if !a.is_object() {
        return Err(err(&p, "expected an object"));
    }
    match kind {
        MetricKind::Errors { .. } => parse_counts_arm(a, &p),
        MetricKind::Latency { .. } => parse_latency_arm(a, &p),
        MetricKind::Gauge { .. } => parse_gauge_arm(a, &p),
    }
}

fn non_empty<'a>(a: &'a Value, key: &str, p: &str, min: usize) -> Result<&'a Vec<Value>, Error> {
    let q = format!("{p}.{key}");
    let v = array(opt_field(a, key).ok_or_else(|| err(&q, "missing"))?, &q)?;
    if v.len() < min {
        return Err(err(
            &q,
            if v.is_empty() {
                "empty series".to_string()
            } else {
                format!("needs at least {min} entries, has {}", v.len())
            },
        ));
    }
    Ok(v)
}

fn parse_counts_arm(a: &Value, p: &str) -> Result<Vec<ArmValue>, Error> {
    let (key, cumulative) = if opt_field(a, "counts").is_some() {
        ("counts", true)
    } else if opt_field(a, "increases").is_some() {
        ("increases", false)
    } else {
        return Err(err(
            p,
            "expected \"counts\" (cumulative readings) or \"increases\"",
        ));
    };
    let list = non_empty(a, key, p, if cumulative { 2 } else { 1 })?;
    let mut errors = Vec::with_capacity(list.len());
    let mut totals = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let q = format!("{p}.{key}[{i}]");
        if !e.is_object() {
            return Err(err(
                &q,
                format!(
                    "expected {{\"errors\": n, \"total\": n}}, got {}",
                    describe(e)
                ),
            ));
        }
        let f = |k: &str| -> Result<f64, Error> {
            let r = format!("{q}.{k}");
            count(opt_field(e, k).ok_or_else(|| err(&r, "missing"))?, &r)
        };
        errors.push(f("errors")?);
        totals.push(f("total")?);
    }
    let (errors, totals) = if cumulative {
        (increases(&errors), increases(&totals))
    } else {
        (errors, totals)
    };
    Ok(errors
        .into_iter()
        .zip(totals)
        .map(|(errors, total)| ArmValue::Sample(Sample::Counts { errors, total }))
        .collect())
}

fn parse_le(a: &Value, p: &str) -> Result<Vec<f64>, Error> {
    let Some(v) = opt_field(a, "le") else {
        let mut le = DEFAULT_BUCKETS.to_vec();
        le.push(f64::INFINITY);
        return Ok(le);
    };
    let q = format!("{p}.le");
    let list = array(v, &q)?;
    if list.is_empty() {
        return Err(err(&q, "empty series"));
    }
    let mut le = Vec::with_capacity(list.len() + 1);
    for (i, x) in list.iter().enumerate() {
        let r = format!("{q}[{i}]");
        let b = match x {
            Value::String(s) if s == "+Inf" || s == "Inf" || s == "inf" => f64::INFINITY,
            Value::String(s) => s
                .parse::<f64>()
                .ok()
                .filter(|b| b.is_finite())
                .ok_or_else(|| err(&r, format!("not a bucket bound: {s:?}")))?,
            other => number(other, &r)?,
        };
        if let Some(prev) = le.last() {
            if b <= *prev {
                return Err(err(
                    &r,
                    format!("bucket bounds must ascend: {b} after {prev}"),
                ));
            }
        }
        le.push(b);
    }
    if le.last() != Some(&f64::INFINITY) {
        le.push(f64::INFINITY);
    }
    Ok(le)
}

fn parse_latency_arm(a: &Value, p: &str) -> Result<Vec<ArmValue>, Error> {
    let le = parse_le(a, p)?;
    if opt_field(a, "samples").is_some() {
        return samples_histograms(a, p, &le);
    }
    let (key, cumulative) = if opt_field(a, "buckets").is_some() {
        ("buckets", true)
    } else if opt_field(a, "increases").is_some() {
        ("increases", false)
    } else {
        return Err(err(
            p,
            "expected \"buckets\" (cumulative readings), \"increases\" or \"samples\"",
        ));
    };
    let rows = bucket_rows(a, p, key, le.len(), if cumulative { 2 } else { 1 })?;
    let per_window: Vec<Vec<f64>> = if cumulative {
        // each bucket is its own counter series (resets handled per series)
        let mut out = vec![vec![0.0; le.len()]; rows.len() - 1];
        for b in 0..le.len() {
            let series: Vec<f64> = rows.iter().map(|r| r[b]).collect();
            for (w, inc) in increases(&series).into_iter().enumerate() {
                out[w][b] = inc;
            }
        }
        out
    } else {
        rows
    };
    Ok(per_window
        .into_iter()
        .map(|counts| {
            ArmValue::Sample(Sample::Buckets(Histogram {
                le: le.clone(),
                counts,
            }))
        })
        .collect())
}

/// `samples`: per window, raw latencies counted into cumulative buckets `le`.
fn samples_histograms(a: &Value, p: &str, le: &[f64]) -> Result<Vec<ArmValue>, Error> {
    let list = non_empty(a, "samples", p, 1)?;
    let mut out = Vec::with_capacity(list.len());
    for (w, win) in list.iter().enumerate() {
        let q = format!("{p}.samples[{w}]");
        let xs = array(win, &q)?;
        let mut counts = vec![0.0; le.len()];
        for (i, x) in xs.iter().enumerate() {
            let v = number(x, &format!("{q}[{i}]"))?;
            for (c, b) in counts.iter_mut().zip(le) {
                if v <= *b {
                    *c += 1.0;
                }
            }
        }
        out.push(ArmValue::Sample(Sample::Buckets(Histogram {
            le: le.to_vec(),
            counts,
        })));
    }
    Ok(out)
}

/// The rows of `key` (at least `min`), each with one count per bound of `n_le`.
fn bucket_rows(
    a: &Value,
    p: &str,
    key: &str,
    n_le: usize,
    min: usize,
) -> Result<Vec<Vec<f64>>, Error> {
    let list = non_empty(a, key, p, min)?;
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(list.len());
    for (w, row) in list.iter().enumerate() {
        let q = format!("{p}.{key}[{w}]");
        let xs = array(row, &q)?;
        if xs.len() != n_le {
            return Err(err(
                &q,
                format!(
                    "{} counts for {} bucket bounds (incl. +Inf)",
                    xs.len(),
                    n_le
                ),
            ));
        }
        let r: Vec<f64> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| count(x, &format!("{q}[{i}]")))
            .collect::<Result<_, _>>()?;
        rows.push(r);
    }
    Ok(rows)
}

fn parse_gauge_arm(a: &Value, p: &str) -> Result<Vec<ArmValue>, Error> {
    let list = non_empty(a, "values", p, 1)?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            if v.is_null() {
                Ok(ArmValue::NoData("null value".into()))
            } else {
                number(v, &format!("{p}.values[{i}]")).map(|x| ArmValue::Sample(Sample::Gauge(x)))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_reset_counts_the_new_reading() {
        assert_eq!(increases(&[10.0, 15.0, 3.0, 8.0]), vec![5.0, 3.0, 5.0]);
    }

    #[test]
    fn negative_count_names_its_path() {
        let doc = r#"{"metrics":[{"name":"e","kind":"errors",
            "canary":{"counts":[{"errors":0,"total":0},{"errors":-2,"total":5}]},
            "baseline":{"counts":[{"errors":0,"total":0},{"errors":1,"total":5}]}}]}"#;
        let e = parse_document(doc)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, "metrics[0].canary.counts[1].errors: negative count -2");
    }
}
