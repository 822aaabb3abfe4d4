//! `canaryd judge --prometheus`: a past release judged from history loaded
//! into a real Prometheus with `promtool tsdb create-blocks-from openmetrics`.
//!
//! Two 30-minute histories (10 s samples, 5 req/s per arm) are generated
//! deterministically: in namespace `bad` the canary has 5% errors and a
//! 120 ms median latency against the baseline's 0.5% and 50 ms; in
//! namespace `good` both arms behave like the baseline.

use crate::support::prom;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

const CANARY_POD: &str = "web-canary-7d9f8b6c5d-x2k4p";
const BASELINE_POD: &str = "web-baseline-5c8d7f9b4-qwzrt";
/// Sample spacing of the generated history.
const STEP_SECS: i64 = 10;
/// Length of the generated history.
const HISTORY_SECS: i64 = 30 * 60;
/// Requests per arm per step (5 req/s).
const REQUESTS_PER_STEP: u64 = 50;
/// The history ends this long before now (well inside retention, clear of the head block).
const HISTORY_AGE_SECS: i64 = 3 * 3600;
/// Analysis interval of the test policy.
const INTERVAL_SECS: i64 = 60;

/// How one arm behaves.
#[derive(Clone, Copy)]
struct Behaviour {
    error_rate: f64,
    median_ms: f64,
}

const HEALTHY: Behaviour = Behaviour {
    error_rate: 0.005,
    median_ms: 50.0,
};
const BROKEN: Behaviour = Behaviour {
    error_rate: 0.05,
    median_ms: 120.0,
};

/// Cumulative counters of one pod at every step.
struct Series {
    namespace: &'static str,
    pod: &'static str,
    ok: Vec<u64>,
    errors: Vec<u64>,
    buckets: Vec<Vec<u64>>,
    sum: Vec<f64>,
}

fn simulate(namespace: &'static str, pod: &'static str, b: Behaviour, seed: u64) -> Series {
    let mut rng = StdRng::seed_from_u64(seed);
    let latency = LogNormal::new((b.median_ms / 1000.0).ln(), 0.5)
        .unwrap_or_else(|e| panic!("lognormal: {e}"));
    let steps = (HISTORY_SECS / STEP_SECS) as usize + 1;
    let bounds = prometheus::DEFAULT_BUCKETS;
    let mut s = Series {
        namespace,
        pod,
        ok: vec![0],
        errors: vec![0],
        buckets: vec![vec![0; bounds.len()]],
        sum: vec![0.0],
    };
    for _ in 1..steps {
        let (mut ok, mut errors) = (*s.ok.last().unwrap_or(&0), *s.errors.last().unwrap_or(&0));
        let mut buckets = s.buckets.last().cloned().unwrap_or_default();
        let mut sum = *s.sum.last().unwrap_or(&0.0);
        for _ in 0..REQUESTS_PER_STEP {
            if rng.random::<f64>() < b.error_rate {
                errors += 1;
            } else {
                ok += 1;
            }
            let l: f64 = latency.sample(&mut rng);
            sum += l;
            for (i, le) in bounds.iter().enumerate() {
                if l <= *le {
                    buckets[i] += 1;
                }
            }
        }
        s.ok.push(ok);
        s.errors.push(errors);
        s.buckets.push(buckets);
        s.sum.push(sum);
    }
    s
}

/// The histories as OpenMetrics text, families contiguous, series in time order.
fn openmetrics(all: &[Series], t0: i64) -> String {
    let mut out = String::new();
    let labels = |s: &Series| format!("namespace=\"{}\",pod=\"{}\"", s.namespace, s.pod);
    out.push_str("# HELP http_requests HTTP requests by status code.\n");
    out.push_str("# TYPE http_requests counter\n");
    for s in all {
        for (code, values) in [("200", &s.ok), ("500", &s.errors)] {
            for (i, v) in values.iter().enumerate() {
                let t = t0 + i as i64 * STEP_SECS;
                let _ = writeln!(
                    out,
                    "http_requests_total{{code=\"{code}\",{}}} {v} {t}",
                    labels(s)
                );
            }
        }
    }
    out.push_str("# HELP http_request_duration_seconds HTTP request latency in seconds.\n");
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for s in all {
        for i in 0..s.ok.len() {
            let t = t0 + i as i64 * STEP_SECS;
            let total = s.ok[i] + s.errors[i];
            for (le, c) in prometheus::DEFAULT_BUCKETS.iter().zip(&s.buckets[i]) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{},le=\"{le}\"}} {c} {t}",
                    labels(s)
                );
            }
            let l = labels(s);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {total} {t}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{l}}} {total} {t}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{l}}} {} {t}",
                s.sum[i]
            );
        }
    }
    out.push_str("# EOF\n");
    out
}

fn policy_yaml(namespace: &str) -> String {
    format!(
        "service: web
namespace: {namespace}
deployment: web
strategy:
  canary:
    steps:
      - size: 1
        observe: 30m
analysis:
  prometheus:
    url: http://127.0.0.1:9
  interval: {INTERVAL_SECS}s
  maxDuration: 1h
"
    )
}

struct Judged {
    code: i32,
    report: serde_json::Value,
    stderr: String,
}

fn judge(url: &str, policy: &Path, from: i64, to: i64) -> Judged {
    let took = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["judge", "--prometheus", url, "--policy"])
        .arg(policy)
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running canaryd judge: {e}"));
    eprintln!(
        "bench: canaryd judge --prometheus over {}s took {:.1} ms",
        to - from,
        took.elapsed().as_secs_f64() * 1000.0
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "judge printed no JSON ({e}); exit {:?}\nstdout: {}\nstderr: {stderr}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Judged {
        code: out.status.code().unwrap_or(-1),
        report,
        stderr,
    }
}

fn canary_total_in_window(report: &serde_json::Value, window: usize) -> f64 {
    report["timeline"][window]["metrics"][0]["canary"]["sample"]["counts"]["total"]
        .as_f64()
        .unwrap_or_else(|| {
            panic!(
                "window {window} has no canary counts: {}",
                report["timeline"][window]
            )
        })
}

#[test]
fn past_releases_are_judged_window_by_window() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let t0 = (now - HISTORY_AGE_SECS) / STEP_SECS * STEP_SECS;
    let series = vec![
        simulate("bad", CANARY_POD, BROKEN, 1),
        simulate("bad", BASELINE_POD, HEALTHY, 2),
        simulate("good", CANARY_POD, HEALTHY, 3),
        simulate("good", BASELINE_POD, HEALTHY, 4),
    ];
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let history = work.path().join("history.om");
    std::fs::write(&history, openmetrics(&series, t0)).unwrap_or_else(|e| panic!("{e}"));
    let storage = work.path().join("data");
    let out = Command::new(prom::promtool_binary())
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&history)
        .arg(&storage)
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let prom = prom::Prom::start_on(work.path(), &storage, &[]);
    let from = t0;
    let to = t0 + HISTORY_SECS;
    let windows = (HISTORY_SECS / INTERVAL_SECS) as usize;

    for namespace in ["bad", "good"] {
        let path = work.path().join(format!("{namespace}.yaml"));
        std::fs::write(&path, policy_yaml(namespace)).unwrap_or_else(|e| panic!("{e}"));
        canaryd::policy::load_file(&path).unwrap_or_else(|e| panic!("test policy invalid: {e}"));
    }

    // The bad release: rolled back (exit 1) before the range ends.
    let bad = judge(&prom.url(), &work.path().join("bad.yaml"), from, to);
    eprintln!("{}", bad.stderr);
    assert_eq!(
        bad.report["verdict"]["decision"], "rollback",
        "{}",
        bad.report
    );
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    let judged = bad.report["timeline"].as_array().map_or(0, Vec::len);
    assert!((1..=windows).contains(&judged), "{judged} windows");
    // The source read exactly what the history holds (`window_increase`:
    // no extrapolation, windows neither overlap nor leave gaps).
    let canary = &series[0];
    let per_window = (INTERVAL_SECS / STEP_SECS) as usize;
    let want = |k: usize| {
        let i = k * per_window;
        let j = (k + 1) * per_window;
        ((canary.ok[j] + canary.errors[j]) - (canary.ok[i] + canary.errors[i])) as f64
    };
    for k in 0..judged {
        let got = canary_total_in_window(&bad.report, k);
        assert!(got == want(k), "window {k}: {got} vs {}", want(k));
    }

    // The good release: judged to the end without a rollback.
    let good = judge(&prom.url(), &work.path().join("good.yaml"), from, to);
    eprintln!("{}", good.stderr);
    let decision = &good.report["verdict"]["decision"];
    assert!(
        decision == "promote" || decision == "continue",
        "{}",
        good.report
    );
    assert_eq!(good.code, 0, "{}", good.stderr);

    // An unreachable Prometheus is an error (exit 2), not a verdict.
    let empty = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["judge", "--prometheus", "http://127.0.0.1:9", "--policy"])
        .arg(work.path().join("good.yaml"))
        .args([
            "--from",
            &from.to_string(),
            "--to",
            &(from + INTERVAL_SECS).to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty.status.code(), Some(2));
    drop(prom);
}
