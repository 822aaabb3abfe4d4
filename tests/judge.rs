//! Judge tests: the `canaryd judge` binary on fixture documents, scipy
//! Mann-Whitney vectors, and statistical properties of the sequential judge.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use canaryd::cli::judge_file::parse_document;
use canaryd::judge::grid::LogLik;
use canaryd::judge::mannwhitney::{hodges_lehmann, mann_whitney};
use canaryd::judge::sequential::errors_log_e;
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
            let _ = canaryd::cli::judge_file::judge_document(&d);
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
