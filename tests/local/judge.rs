//! Judge tests: the `canaryd judge` binary on fixture documents, scipy
//! Mann-Whitney vectors, and statistical properties of the sequential judge.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use canaryd::judge::document::parse_document;
use canaryd::judge::grid::LogLik;
use canaryd::judge::mannwhitney::{hodges_lehmann, mann_whitney};
use canaryd::judge::sequential::{bounds_log_e, errors_log_e, latency_log_e, shift_log_e};
use canaryd::judge::{evaluate, Decision, Evidence, MetricStatus};
use canaryd::observation::{ArmValue, Histogram, MetricWindow, Sample, WindowObservation};
use canaryd::policy::{
    Analysis, Bounds, Direction, JudgeMode, MetricKind, MetricSpec, OnNoData, PrometheusConfig,
    Template,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, Poisson};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/judge")
        .join(name)
}

/// Runs `canaryd judge FIXTURE`; returns exit code, stdout, stderr.
fn judge(name: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("judge")
        .arg(fixture(name))
        .output()
        .expect("run canaryd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn decision_of(stdout: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(stdout).expect("verdict JSON");
    v["decision"].as_str().unwrap_or_default().to_string()
}

#[test]
fn five_times_errors_rolls_back_with_exit_1() {
    let (code, out, _) = judge("bad-5x-errors.json");
    assert_eq!(code, 1);
    assert_eq!(decision_of(&out), "rollback");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &v["metrics"][0];
    assert_eq!(m["status"], "fail");
    assert!(m["eValue"].as_f64().unwrap() >= m["threshold"].as_f64().unwrap());
    assert!(m["test"].as_str().unwrap().contains("mixture"));
    assert!(v["reason"].as_str().unwrap().contains("errors"));
}

#[test]
fn good_release_continues_with_exit_0() {
    let (code, out, _) = judge("good.json");
    assert_eq!(code, 0, "{out}");
    assert_eq!(decision_of(&out), "continue");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Continue explains how much more traffic would detect min_effect.
    assert!(v["metrics"][0]["needed"]["moreEvents"].as_f64().is_some());
    assert!(v["metrics"][1]["canary"]["p99"].as_f64().is_some());
    assert_eq!(v["metrics"][1]["boundaries"].as_array().unwrap().len(), 5);
}

#[test]
fn lots_of_equal_data_promotes() {
    let (code, out, _) = judge("promote.json");
    assert_eq!(code, 0);
    assert_eq!(decision_of(&out), "promote");
}

#[test]
fn zero_baseline_errors_still_judged() {
    let (code, out, _) = judge("zero-baseline-errors.json");
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["metrics"][0]["baseline"]["errors"].as_f64(), Some(0.0));
}

#[test]
fn malformed_json_is_input_error() {
    let (code, out, err) = judge("malformed.json");
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("malformed JSON"), "{err}");
}

#[test]
fn negative_count_names_json_path() {
    let (code, _, err) = judge("negative-count.json");
    assert_eq!(code, 2);
    assert!(
        err.contains("metrics[0].canary.counts[3].errors: negative count -2"),
        "{err}"
    );
}

#[test]
fn counter_reset_is_an_increase_not_a_negative_window() {
    let (code, out, _) = judge("counter-reset.json");
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // increases 5,4(reset),5,5 errors and 1000,900,1000,1000 requests
    assert_eq!(v["metrics"][0]["canary"]["errors"].as_f64(), Some(19.0));
    assert_eq!(v["metrics"][0]["canary"]["total"].as_f64(), Some(3900.0));
}

#[test]
fn differing_buckets_are_inconclusive_with_reason() {
    let (code, out, _) = judge("differing-buckets.json");
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "inconclusive");
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .contains("differing bucket boundaries"));
}

#[test]
fn broken_split_is_inconclusive() {
    let (code, out, _) = judge("srm-broken-split.json");
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["srm"]["mismatch"], true);
    assert!(v["reason"].as_str().unwrap().contains("mismatch"));
}

#[test]
fn stdin_input_works() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["judge", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let doc = std::fs::read(fixture("good.json")).unwrap();
    child.stdin.take().unwrap().write_all(&doc).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn mann_whitney_matches_scipy_vectors() {
    let text = std::fs::read_to_string(fixture("mannwhitney.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 100);
    let vec = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let mut exact = 0;
    for (i, c) in cases.iter().enumerate() {
        let (x, y) = (vec(&c["x"]), vec(&c["y"]));
        let r = mann_whitney(&x, &y).unwrap();
        let h = hodges_lehmann(&x, &y, c["confidence"].as_f64().unwrap()).unwrap();
        for (what, got, key) in [
            ("U", r.u1, "u"),
            ("p", r.p_value, "p"),
            ("HL", h.estimate, "hl"),
            ("lower", h.lower, "lower"),
            ("upper", h.upper, "upper"),
        ] {
            let want = c[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-6,
                "case {i}: {what} {got} vs {want} (exact {})",
                r.exact
            );
        }
        exact += usize::from(r.exact);
    }
    // both branches of method="auto" are covered
    assert!(exact > 10 && exact < cases.len());
}

/// Checks each metric of `canaryd judge DOC`'s verdict against scipy's
/// numbers for the arms left after Kayenta's per-arm NaN strategy
/// (`classic-expected.json`, from `scripts/gen-mannwhitney-vectors.py`).
fn assert_classic_matches_scipy(doc: &str, verdict: &serde_json::Value) {
    let text = std::fs::read_to_string(fixture("classic-expected.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want = &want["documents"][doc];
    // every window was replayed (no early rollback changed the arms)
    assert_eq!(verdict["windows"], want["windows"], "{verdict}");
    let metrics = want["metrics"].as_object().unwrap();
    assert_eq!(verdict["metrics"].as_array().unwrap().len(), metrics.len());
    for (name, w) in metrics {
        let m = verdict["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from {verdict}"));
        let n = |arm: &str| w[arm].as_array().unwrap().len() as f64;
        assert_eq!(m["canary"]["n"].as_f64(), Some(n("canary")), "{name}: {m}");
        assert_eq!(
            m["baseline"]["n"].as_f64(),
            Some(n("baseline")),
            "{name}: {m}"
        );
        for (what, got, key) in [
            ("U", &m["statistic"], "u"),
            ("p", &m["pValue"], "p"),
            ("HL", &m["estimate"], "hl"),
            ("lower", &m["interval"]["lower"], "lower"),
            ("upper", &m["interval"]["upper"], "upper"),
            ("level", &m["interval"]["level"], "confidence"),
            ("canary mean", &m["canary"]["mean"], "meanCanary"),
            ("baseline mean", &m["baseline"]["mean"], "meanBaseline"),
        ] {
            let got = got.as_f64().unwrap_or(f64::NAN);
            let want = w[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                "{doc} {name}: {what} {got} vs scipy {want}"
            );
        }
    }
}

#[test]
fn classic_drops_missing_values_per_arm_and_matches_scipy() {
    // Nulls in one arm's windows (10 vs 7 and 3 vs 12 values), baseline
    // windows without requests, and the same data with nanStrategy replace.
    let (code, out, err) = judge("classic-per-arm.json");
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mode"], "classic");
    assert_eq!(decision_of(&out), "continue", "{out}");
    assert_classic_matches_scipy("classic-per-arm.json", &v);
    // A window where only one arm had data is not a paired window.
    let cpu = &v["metrics"][0];
    assert_eq!(
        (cpu["windows"].as_u64(), cpu["noDataWindows"].as_u64()),
        (Some(5), Some(7)),
        "{cpu}"
    );
}

#[test]
fn classic_arms_of_unequal_length_match_scipy_but_a_short_arm_is_stale() {
    // The canary's series ends 4 windows before the baseline's: its 7 values
    // are judged against the baseline's 10, but the metric has no paired
    // data in its latest windows, so the verdict is inconclusive.
    let (code, out, err) = judge("classic-unequal-length.json");
    assert_eq!(code, 3, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(decision_of(&out), "inconclusive");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("no usable data for latency-ms: no usable data in the last 4 window(s)"),
        "{reason}"
    );
    assert_classic_matches_scipy("classic-unequal-length.json", &v);
}

fn spec(name: &str, kind: MetricKind, direction: Direction) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        kind,
        direction,
        bounds: None,
        critical: false,
        min_effect: 0.5,
        weight: 1.0,
    }
}

fn errors_kind() -> MetricKind {
    MetricKind::Errors {
        errors: Template(String::new()),
        total: Template(String::new()),
    }
}

fn latency_kind() -> MetricKind {
    MetricKind::Latency {
        buckets: Template(String::new()),
    }
}

fn analysis(metrics: Vec<MetricSpec>) -> Analysis {
    Analysis {
        prometheus: PrometheusConfig {
            url: "http://prometheus:9090".into(),
            auth: None,
            ca_file: None,
        },
        interval: Duration::from_secs(60),
        max_duration: Duration::from_secs(1800),
        alpha: 0.05,
        on_no_data: OnNoData::Hold,
        min_requests_per_step: 0,
        mode: JudgeMode::Sequential,
        metrics,
    }
}

fn counts_window(
    name: &str,
    c: (f64, f64),
    b: (f64, f64),
    share: Option<f64>,
) -> WindowObservation {
    WindowObservation {
        at_secs: 60.0,
        expected_canary_share: share,
        metrics: vec![MetricWindow {
            name: name.into(),
            canary: ArmValue::Sample(Sample::Counts {
                errors: c.0,
                total: c.1,
            }),
            baseline: ArmValue::Sample(Sample::Counts {
                errors: b.0,
                total: b.1,
            }),
        }],
    }
}

#[test]
fn a_a_false_rollbacks_stay_within_alpha() {
    // Seeded A/A simulation through the real record/evaluate path. With
    // α = 0.05, 400 runs: more than 31 rollbacks (α + 2.5 σ) fails the test.
    let a = analysis(vec![spec("errors", errors_kind(), Direction::Increase)]);
    let mut rng = StdRng::seed_from_u64(7);
    let mut rollbacks = 0;
    for run in 0..400 {
        let mut ev = Evidence::default();
        let (rate, p) = if run % 2 == 0 {
            (600.0, 0.01)
        } else {
            (60.0, 0.05)
        };
        for _ in 0..20 {
            let nc = Poisson::new(rate).unwrap().sample(&mut rng) as u64;
            let nb = Poisson::new(rate).unwrap().sample(&mut rng) as u64;
            let ec = Binomial::new(nc, p).unwrap().sample(&mut rng) as f64;
            let eb = Binomial::new(nb, p).unwrap().sample(&mut rng) as f64;
            ev.record(&counts_window(
                "errors",
                (ec, nc as f64),
                (eb, nb as f64),
                Some(0.5),
            ));
            if evaluate(&a, &ev).decision == Decision::Rollback {
                rollbacks += 1;
                break;
            }
        }
    }
    assert!(
        rollbacks <= 31,
        "{rollbacks} false rollbacks in 400 A/A runs"
    );
}

#[test]
fn doubled_errors_are_caught() {
    let a = analysis(vec![spec("errors", errors_kind(), Direction::Increase)]);
    let mut ev = Evidence::default();
    for _ in 0..10 {
        ev.record(&counts_window(
            "errors",
            (20.0, 1000.0),
            (10.0, 1000.0),
            Some(0.5),
        ));
    }
    let v = evaluate(&a, &ev);
    assert_eq!(v.decision, Decision::Rollback, "{}", v.reason);
    let m = &v.metrics[0];
    let i = m.interval.as_ref().unwrap();
    assert!(i.lower.unwrap() > 1.0 && i.upper.unwrap() > 2.0);
    assert_eq!(m.estimate, Some(2.0));
}

#[test]
fn more_metrics_need_more_evidence_each() {
    let one = analysis(vec![spec("errors", errors_kind(), Direction::Increase)]);
    let mut four = one.clone();
    for i in 0..3 {
        four.metrics.push(spec(
            &format!("other{i}"),
            errors_kind(),
            Direction::Increase,
        ));
    }
    let v1 = evaluate(&one, &Evidence::default());
    assert_eq!(v1.decision, Decision::Inconclusive);
    let mut ev = Evidence::default();
    ev.record(&counts_window("errors", (1.0, 100.0), (1.0, 100.0), None));
    assert_eq!(evaluate(&one, &ev).metrics[0].threshold, 20.0);
    let v4 = evaluate(&four, &ev);
    assert_eq!(v4.metrics[0].threshold, 80.0);
    // metrics without data make the verdict inconclusive
    assert_eq!(v4.decision, Decision::Inconclusive);
}

#[test]
fn bounds_roll_back_critical_metric_at_first_breach() {
    let mut s = spec("errors", errors_kind(), Direction::Increase);
    s.bounds = Some(Bounds {
        min: None,
        max: Some(0.01),
    });
    s.critical = true;
    let a = analysis(vec![s]);
    let mut ev = Evidence::default();
    ev.record(&counts_window("errors", (3.0, 100.0), (3.0, 100.0), None));
    let v = evaluate(&a, &ev);
    assert_eq!(v.decision, Decision::Rollback, "{}", v.reason);
    assert_eq!(v.metrics[0].bounds.as_ref().unwrap().failed_windows, 1);
}

#[test]
fn latency_shift_is_caught_and_quantiles_reported() {
    let le = vec![0.05, 0.1, 0.25, 0.5, 1.0, f64::INFINITY];
    let a = analysis(vec![spec("latency", latency_kind(), Direction::Increase)]);
    let mut ev = Evidence::default();
    let w = WindowObservation {
        at_secs: 60.0,
        expected_canary_share: Some(0.5),
        metrics: vec![MetricWindow {
            name: "latency".into(),
            canary: ArmValue::Sample(Sample::Buckets(Histogram {
                le: le.clone(),
                counts: vec![100.0, 800.0, 2000.0, 2800.0, 2950.0, 3000.0],
            })),
            baseline: ArmValue::Sample(Sample::Buckets(Histogram {
                le: le.clone(),
                counts: vec![300.0, 1500.0, 2600.0, 2950.0, 2990.0, 3000.0],
            })),
        }],
    };
    ev.record(&w);
    let v = evaluate(&a, &ev);
    assert_eq!(v.decision, Decision::Rollback, "{}", v.reason);
    let m = &v.metrics[0];
    assert!(m.canary.p50.unwrap() > m.baseline.p50.unwrap());
    assert!(m.canary.p99.unwrap() > m.baseline.p99.unwrap());
}

/// Prometheus' default finite bucket bounds (seconds).
const DEFAULT_LE: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn std_normal_cdf(z: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2)
}

/// Bucket probabilities (finite bounds, then +Inf) of a log-normal latency
/// with the given median and σ.
fn lognormal_buckets(median: f64, sigma: f64) -> Vec<f64> {
    let mut prev = 0.0;
    let mut p: Vec<f64> = DEFAULT_LE
        .iter()
        .map(|b| {
            let c = std_normal_cdf((b / median).ln() / sigma);
            let d = c - prev;
            prev = c;
            d
        })
        .collect();
    p.push(1.0 - prev);
    p
}

/// Cumulative-by-`le` counts of `n` draws from `probs` (multinomial).
fn draw_histogram(rng: &mut StdRng, n: u64, probs: &[f64]) -> Histogram {
    let (mut left, mut rest, mut acc) = (n, 1.0, 0u64);
    let mut counts = Vec::with_capacity(probs.len());
    for (i, p) in probs.iter().enumerate() {
        let k = if i + 1 == probs.len() || left == 0 {
            left
        } else {
            Binomial::new(left, (p / rest).clamp(0.0, 1.0))
                .unwrap()
                .sample(rng)
        };
        left -= k;
        rest -= p;
        acc += k;
        counts.push(acc as f64);
    }
    let mut le = DEFAULT_LE.to_vec();
    le.push(f64::INFINITY);
    Histogram { le, counts }
}

/// One latency window: Poisson request counts per arm, multinomial buckets.
fn latency_window(
    rng: &mut StdRng,
    rps: (f64, f64),
    canary: &[f64],
    baseline: &[f64],
) -> WindowObservation {
    let nc = Poisson::new(rps.0 * 60.0).unwrap().sample(rng) as u64;
    let nb = Poisson::new(rps.1 * 60.0).unwrap().sample(rng) as u64;
    WindowObservation {
        at_secs: 60.0,
        expected_canary_share: Some(rps.0 / (rps.0 + rps.1)),
        metrics: vec![MetricWindow {
            name: "latency".into(),
            canary: ArmValue::Sample(Sample::Buckets(draw_histogram(rng, nc, canary))),
            baseline: ArmValue::Sample(Sample::Buckets(draw_histogram(rng, nb, baseline))),
        }],
    }
}

/// Seeded A/A runs (30 windows each) through `Evidence::record`: the share of
/// runs in which the proportional-odds shift test alone ever reaches `1/a`,
/// for each `a` in `levels`, and in which the latency metric's combined
/// e-value ever reaches 20.
fn a_a_crossings(seed: u64, runs: usize, levels: &[f64]) -> (Vec<usize>, usize, Vec<Vec<f64>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut crossed = vec![0usize; levels.len()];
    let mut combined = 0;
    let mut finals = Vec::with_capacity(runs);
    for run in 0..runs {
        // 1 rps/arm at share 0.5; 1 vs 19 rps (share 0.05); and a null whose
        // latency distribution changes every window for both arms (load).
        let scenario = run % 3;
        let rps = if scenario == 1 {
            (1.0, 19.0)
        } else {
            (1.0, 1.0)
        };
        let mut ev = Evidence::default();
        let (mut max_shift, mut max_all) = (0.0f64, 0.0f64);
        for w in 0..30 {
            let median = if scenario == 2 {
                0.1 * (1.0 + 0.8 * ((w % 7) as f64 / 6.0))
            } else {
                0.1
            };
            let p = lognormal_buckets(median, 0.5);
            ev.record(&latency_window(&mut rng, rps, &p, &p));
            let l = ev.metric("latency").unwrap().latency.as_ref().unwrap();
            max_shift = max_shift.max(shift_log_e(&l.shift, Direction::Increase));
            max_all = max_all.max(latency_log_e(&l.loglik, &l.shift, Direction::Increase));
        }
        for (c, a) in crossed.iter_mut().zip(levels) {
            if max_shift >= (1.0 / a).ln() {
                *c += 1;
            }
        }
        if max_all >= 20f64.ln() {
            combined += 1;
        }
        let l = ev.metric("latency").unwrap().latency.as_ref().unwrap();
        finals.push(l.shift.0.clone());
    }
    (crossed, combined, finals)
}

#[test]
fn latency_shift_test_is_calibrated_in_a_a_simulation() {
    // Ville: P(the shift e-process ever reaches 1/a) <= a for every a; the
    // loose levels (a = 0.5, 0.2) are crossed far more often by a broken
    // construction (betting with split weight 0.5 instead of the observed
    // n_c / (n_c + n_b) crosses 1/0.2 in ~40% of these runs). Allowed:
    // a + 3 binomial standard deviations over 600 runs.
    let levels = [0.5, 0.2, 0.05];
    let runs = 600;
    let (crossed, combined, finals) = a_a_crossings(11, runs, &levels);
    // A test supermartingale has mean <= 1 at any fixed time: check the
    // sample mean of E after 30 windows at small log odds ratios (where E
    // has little variance, so the check is tight), within 3 standard errors.
    for k in [-4i32, -2, -1, 1, 2, 4] {
        let i = (24 + k) as usize;
        let e: Vec<f64> = finals.iter().map(|f| f[i].exp()).collect();
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        let var = e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (e.len() - 1) as f64;
        let se = (var / e.len() as f64).sqrt();
        assert!(
            mean <= 1.0 + 3.0 * se,
            "mean A/A e-value {mean:.3} (se {se:.3}) at log odds ratio {}",
            0.125 * f64::from(k)
        );
    }
    for (k, a) in crossed.iter().zip(levels) {
        let limit = runs as f64 * a + 3.0 * (runs as f64 * a * (1.0 - a)).sqrt();
        assert!(
            (*k as f64) <= limit,
            "shift test crossed 1/{a} in {k} of {runs} A/A runs (limit {limit:.0})"
        );
    }
    // The latency metric as judged (shift and per-bound tests mixed) at α = 0.05.
    let limit = runs as f64 * 0.05 + 3.0 * (runs as f64 * 0.05 * 0.95).sqrt();
    assert!(
        (combined as f64) <= limit,
        "latency e-value reached 20 in {combined} of {runs} A/A runs"
    );
}

#[test]
fn shift_test_catches_a_ten_percent_slowdown_the_per_bound_tests_miss_at_1_rps() {
    // 1 rps per arm, share 0.5, latency ×1.1 (log-normal, median 100 ms,
    // σ 0.5), 30 one-minute windows. The per-bound mean alone (the judge
    // before the shift test) detects about a third of these runs; with the
    // shift test about 95%.
    let a = analysis(vec![spec("latency", latency_kind(), Direction::Increase)]);
    let (pc, pb) = (lognormal_buckets(0.11, 0.5), lognormal_buckets(0.1, 0.5));
    let mut rng = StdRng::seed_from_u64(3);
    let runs = 100;
    let (mut before, mut after, mut missed_before_caught_after) = (0, 0, 0);
    for _ in 0..runs {
        let mut ev = Evidence::default();
        let (mut old_hit, mut new_hit) = (false, false);
        for _ in 0..30 {
            ev.record(&latency_window(&mut rng, (1.0, 1.0), &pc, &pb));
            let l = ev.metric("latency").unwrap().latency.as_ref().unwrap();
            old_hit |= bounds_log_e(&l.loglik, Direction::Increase) >= 20f64.ln();
            if !new_hit && latency_log_e(&l.loglik, &l.shift, Direction::Increase) >= 20f64.ln() {
                new_hit = true;
                // The judge itself rolls back and says what carried it.
                let v = evaluate(&a, &ev);
                assert_eq!(v.decision, Decision::Rollback, "{}", v.reason);
                let m = &v.metrics[0];
                assert_eq!(m.components.len(), 2);
                assert_eq!(m.components[0].name, "shift");
                assert!(v.reason.contains("shift test e="), "{}", v.reason);
            }
        }
        before += usize::from(old_hit);
        after += usize::from(new_hit);
        missed_before_caught_after += usize::from(new_hit && !old_hit);
    }
    assert!(
        after >= 85,
        "with the shift test: {after} of {runs} detected"
    );
    assert!(
        before <= 55,
        "per-bound mean alone: {before} of {runs} detected"
    );
    assert!(
        missed_before_caught_after >= 35,
        "{missed_before_caught_after} runs caught only with the shift test"
    );
}

#[test]
fn latency_evidence_without_the_shift_field_still_loads_and_judges() {
    // Evidence written before the shift test existed has no `shift` field:
    // it loads, the shift test counts as e = 1 and starts with the next window.
    let a = analysis(vec![spec("latency", latency_kind(), Direction::Increase)]);
    let mut rng = StdRng::seed_from_u64(5);
    let p = lognormal_buckets(0.1, 0.5);
    let mut ev = Evidence::default();
    ev.record(&latency_window(&mut rng, (10.0, 10.0), &p, &p));
    let mut json: serde_json::Value = serde_json::to_value(&ev).unwrap();
    let lat = &mut json["metrics"][0]["latency"];
    // grids are written as base64 of their 49 floats
    let shift = lat["shift"].as_str().unwrap();
    assert_eq!(canaryd::judge::codec::decode_f64s(shift).unwrap().len(), 49);
    lat.as_object_mut().unwrap().remove("shift");
    let mut old: Evidence = serde_json::from_value(json).unwrap();
    let l = old.metrics[0].latency.as_ref().unwrap();
    assert_eq!(shift_log_e(&l.shift, Direction::Increase), 0.0);
    assert_ne!(evaluate(&a, &old).decision, Decision::Rollback);
    old.record(&latency_window(&mut rng, (10.0, 10.0), &p, &p));
    let l = old.metrics[0].latency.as_ref().unwrap();
    assert_eq!(l.shift.0.len(), 49);
    let v = evaluate(&a, &old);
    let names: Vec<&str> = v.metrics[0]
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["shift", "bounds"]);
    // still compact: 11 bounds x 49 + 49 log likelihood ratios
    let size = serde_json::to_string(&old).unwrap().len();
    assert!(size < 16_000, "{size} bytes");
}

#[test]
fn one_rps_ten_percent_slowdown_fixture_rolls_back_on_the_shift_test() {
    // 30 windows of ~60 requests per arm, canary latency ×1.1 (log-normal,
    // median 100 ms vs 110 ms, σ 0.5). The per-bound tests alone stay far
    // below their threshold; the shift test carries the rollback.
    let (code, out, _) = judge("latency-shift-1rps.json");
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &v["metrics"][0];
    assert_eq!(m["status"], "fail");
    let comps = m["components"].as_array().unwrap();
    assert_eq!(comps[0]["name"], "shift");
    assert_eq!(comps[1]["name"], "bounds");
    let threshold = m["threshold"].as_f64().unwrap();
    assert!(
        comps[0]["eValue"].as_f64().unwrap() * 0.3 >= threshold,
        "{out}"
    );
    assert!(comps[1]["eValue"].as_f64().unwrap() < threshold, "{out}");
    // the common odds ratio of exceeding a bound, and where the gap is
    let or = comps[0]["estimate"].as_f64().unwrap();
    assert!(or > 1.1 && or < 2.0, "{or}");
    assert_eq!(comps[0]["le"].as_f64(), Some(0.1));
    assert!(v["reason"].as_str().unwrap().contains("shift test e="));
}

#[test]
fn evidence_round_trips_through_json() {
    let mut ev = Evidence::default();
    ev.record(&counts_window(
        "errors",
        (3.0, 100.0),
        (1.0, 100.0),
        Some(0.5),
    ));
    let s = serde_json::to_string(&ev).unwrap();
    let back: Evidence = serde_json::from_str(&s).unwrap();
    assert_eq!(back, ev);
    // compact enough for an annotation
    assert!(s.len() < 4000, "{}", s.len());
}

#[test]
fn unknown_metric_kind_mismatch_is_no_data() {
    let a = analysis(vec![spec("latency", latency_kind(), Direction::Increase)]);
    let mut ev = Evidence::default();
    ev.record(&counts_window("latency", (3.0, 100.0), (1.0, 100.0), None));
    let v = evaluate(&a, &ev);
    assert_eq!(v.decision, Decision::Inconclusive);
    assert_eq!(v.metrics[0].status, MetricStatus::NoData);
}

fn arm_value() -> impl Strategy<Value = ArmValue> {
    let num = prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        0.0..1e6f64,
        any::<f64>()
    ];
    prop_oneof![
        "[a-z]{0,5}".prop_map(ArmValue::NoData),
        (num.clone(), num.clone())
            .prop_map(|(errors, total)| ArmValue::Sample(Sample::Counts { errors, total })),
        num.clone().prop_map(|v| ArmValue::Sample(Sample::Gauge(v))),
        (
            proptest::collection::vec(num.clone(), 0..5),
            proptest::collection::vec(num, 0..5)
        )
            .prop_map(|(le, counts)| ArmValue::Sample(Sample::Buckets(Histogram { le, counts }))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_document(&text);
    }

    #[test]
    fn parser_never_panics_on_near_valid_documents(
        errors in proptest::collection::vec(-5.0..50.0f64, 1..6),
        kind in prop_oneof![Just("errors"), Just("latency"), Just("gauge"), Just("x")],
        share in -1.0..2.0f64,
    ) {
        let counts: Vec<String> = errors.iter().map(|e| format!("{{\"errors\":{e},\"total\":{}}}", e.abs() * 10.0)).collect();
        let doc = format!(
            r#"{{"expectedCanaryShare":{share},"metrics":[{{"name":"m","kind":"{kind}","canary":{{"counts":[{c}],"values":[{v}],"increases":[[1,2]]}},"baseline":{{"counts":[{c}],"values":[{v}]}}}}]}}"#,
            c = counts.join(","),
            v = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(","),
        );
        if let Ok(d) = parse_document(&doc) {
            let _ = canaryd::judge::document::judge_document(&d);
        }
    }

    #[test]
    fn record_and_evaluate_never_panic(
        windows in proptest::collection::vec((arm_value(), arm_value(), proptest::option::of(any::<f64>())), 0..6)
    ) {
        let a = analysis(vec![
            spec("m", errors_kind(), Direction::Either),
        ]);
        let mut ev = Evidence::default();
        for (c, b, share) in windows {
            ev.record(&WindowObservation {
                at_secs: 1.0,
                expected_canary_share: share,
                metrics: vec![MetricWindow { name: "m".into(), canary: c, baseline: b }],
            });
            let v = evaluate(&a, &ev);
            prop_assert!(!v.reason.is_empty());
            prop_assert!(serde_json::to_string(&v).is_ok());
        }
    }

    #[test]
    fn swapping_arms_and_direction_gives_the_same_e_value(
        data in proptest::collection::vec((0u32..50, 0u32..50, 0.05..0.95f64), 1..8)
    ) {
        let mut l = LogLik::default();
        let mut swapped = LogLik::default();
        for (x, y, s) in &data {
            let (x, y) = (f64::from(*x), f64::from(*y));
            l.add(x, x + y, *s);
            swapped.add(y, x + y, 1.0 - s);
        }
        let a = errors_log_e(&l, Direction::Increase);
        let b = errors_log_e(&swapped, Direction::Decrease);
        prop_assert!((a - b).abs() < 1e-9 * (1.0 + a.abs()), "{a} vs {b}");
        let e1 = errors_log_e(&l, Direction::Either);
        let e2 = errors_log_e(&swapped, Direction::Either);
        prop_assert!((e1 - e2).abs() < 1e-9 * (1.0 + e1.abs()));
    }

    #[test]
    fn e_value_grows_with_the_effect(
        n in 1u32..200, x1 in 0u32..200, dx in 0u32..50, s in 0.05..0.95f64, windows in 1usize..5
    ) {
        let x1 = x1.min(n);
        let x2 = (x1 + dx).min(n);
        let (mut l1, mut l2) = (LogLik::default(), LogLik::default());
        for _ in 0..windows {
            l1.add(f64::from(x1), f64::from(n), s);
            l2.add(f64::from(x2), f64::from(n), s);
        }
        let (e1, e2) = (errors_log_e(&l1, Direction::Increase), errors_log_e(&l2, Direction::Increase));
        prop_assert!(e2 >= e1 - 1e-9, "{e1} > {e2}");
    }
}

#[test]
fn evidence_from_before_an_outage_does_not_clear_the_release() {
    // Issue 13's reproduction: 3 windows of data, then 5 missing, while a
    // second metric has all 8. Cumulative evidence alone said "continue".
    let (code, out, _) = judge("stale-after-outage.json");
    assert_eq!(code, 3, "{out}");
    assert_eq!(decision_of(&out), "inconclusive");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no usable data in the last 5 window(s)"),
        "{out}"
    );
    assert_eq!(v["metrics"][0]["status"], "noData", "{out}");
    assert_eq!(v["metrics"][1]["status"], "pass", "{out}");
}
