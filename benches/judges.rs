//! Judge benchmark: four judges side by side on simulated canary traffic.
//!
//! `cargo bench --bench judges` (release, seeded, both cores). Per window the
//! simulator draws request counts (Poisson), error counts (binomial) and
//! latency bucket counts (multinomial over Prometheus' default buckets of a
//! lognormal, median 100 ms, σ 0.5); no per-request simulation. The canary
//! arm receives `rate` rps; the baseline `rate × (1 − share) / share` rps.
//! `BENCH_RUNS` overrides the runs per cell (default 2000). For latency
//! cells canaryd's test before the proportional-odds shift test was added
//! (the mean of the per-bound e-values alone) is tracked on the same runs.

use std::fmt::Write as _;
use std::thread;

use canaryd::judge::classic::{classify, ClassicMetricConfig, Classification};
use canaryd::judge::grid::LogLik;
use canaryd::judge::histogram::CheckedHistogram;
use canaryd::judge::mannwhitney::mann_whitney;
use canaryd::judge::ordinal;
use canaryd::judge::sequential::{bounds_log_e, errors_log_e, latency_log_e};
use canaryd::policy::Direction;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, Poisson};
use statrs::function::gamma::ln_gamma;

const WINDOW_SECS: f64 = 60.0;
const WINDOWS: usize = 30;
const ALPHA: f64 = 0.05;
const LE: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const JUDGES: [&str; 4] = ["canaryd", "LM k=100", "Kayenta-MW", "Flagger"];
/// Outcomes per run: the four judges, then canaryd's latency test before the
/// shift test was added (the mean of the per-bound e-values alone).
const OUTCOMES: usize = 5;
const BEFORE: usize = 4;
/// Lindon–Malek prior concentration.
const LM_K: f64 = 100.0;
/// Kayenta-style judge settings.
const KAYENTA_CONFIDENCE: f64 = 0.98;
/// Flagger-style settings.
const FLAGGER_MIN_SUCCESS: f64 = 0.99;
const FLAGGER_MAX_P99: f64 = 0.5;
const FLAGGER_THRESHOLD: u32 = 5;

#[derive(Clone, Copy, Debug)]
enum Effect {
    /// Error rate multiplied by this.
    Errors(f64),
    /// Latency multiplied by this.
    Latency(f64),
    /// Latencies above the baseline p90 doubled.
    Tail,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    share: f64,
    rate: f64,
    base_error: f64,
    effect: Effect,
    /// Extra A/A error metrics judged alongside (α splitting rows).
    extra_metrics: usize,
}

/// Outcome of one run for one judge: window of rollback (1-based), error or
/// slow events seen by then, canary requests by then.
#[derive(Clone, Copy, Default)]
struct Outcome {
    window: Option<usize>,
    events: f64,
    canary_requests: f64,
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2)
}

/// P(latency <= b) for the lognormal (median 100 ms, σ 0.5) under an effect.
fn latency_cdf(b: f64, effect: Effect) -> f64 {
    let base = |x: f64| normal_cdf((x / 0.1).ln() / 0.5);
    match effect {
        Effect::Latency(m) => base(b / m),
        Effect::Tail => {
            let q90 = 0.1 * (0.5 * 1.281_551_565_5_f64).exp();
            if b <= q90 {
                base(b)
            } else {
                // below q90 unchanged; above it every latency doubled
                base(q90) + (base(b / 2.0) - base(q90)).max(0.0)
            }
        }
        Effect::Errors(_) => base(b),
    }
}

fn bucket_probs(effect: Effect) -> Vec<f64> {
    let mut cum: Vec<f64> = LE.iter().map(|b| latency_cdf(*b, effect)).collect();
    cum.push(1.0);
    let mut prev = 0.0;
    cum.iter()
        .map(|c| {
            let p = (c - prev).max(0.0);
            prev = *c;
            p
        })
        .collect()
}

fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean)
        .map(|p| p.sample(rng) as u64)
        .unwrap_or(0)
}

fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    Binomial::new(n, p.min(1.0))
        .map(|b| b.sample(rng))
        .unwrap_or(0)
}

/// Cumulative bucket counts of `n` draws (multinomial by sequential binomials).
fn multinomial_cum(rng: &mut StdRng, n: u64, probs: &[f64]) -> Vec<f64> {
    let mut left = n;
    let mut rest = 1.0;
    let mut acc = 0u64;
    let mut out = Vec::with_capacity(probs.len());
    for (i, p) in probs.iter().enumerate() {
        let k = if i + 1 == probs.len() || rest <= 0.0 {
            left
        } else {
            binomial(rng, left, (p / rest).clamp(0.0, 1.0))
        };
        left -= k;
        rest -= p;
        acc += k;
        out.push(acc as f64);
    }
    out
}

/// Lindon–Malek two-sided beta-binomial Bayes factor on the canary's share of
/// events, prior Beta(k s, k (1 − s)) around the design share `s`.
fn lm_log_bf(x: f64, n: f64, s: f64) -> f64 {
    let (a, b) = (LM_K * s, LM_K * (1.0 - s));
    let ln_beta = |p: f64, q: f64| ln_gamma(p) + ln_gamma(q) - ln_gamma(p + q);
    ln_beta(a + x, b + n - x) - ln_beta(a, b) - x * s.ln() - (n - x) * (1.0 - s).ln()
}

fn kayenta_high(canary: &[f64], baseline: &[f64]) -> bool {
    if canary.len() < 3 {
        return false;
    }
    // Speed: a 98% HL interval cannot clear 0 when the test is far from
    // significant; skip the O(n²) interval then.
    match mann_whitney(canary, baseline) {
        Some(m) if m.p_value < 0.1 => {}
        _ => return false,
    }
    let cfg = ClassicMetricConfig::default();
    classify(
        canary,
        baseline,
        Direction::Increase,
        &cfg,
        KAYENTA_CONFIDENCE,
    )
    .class
        == Classification::High
}

fn run_once(
    cell: &Cell,
    rng: &mut StdRng,
    probs_c: &[f64],
    probs_b: &[f64],
) -> [Outcome; OUTCOMES] {
    let mut out = [Outcome::default(); OUTCOMES];
    let lam_c = cell.rate * WINDOW_SECS;
    let lam_b = cell.rate * WINDOW_SECS * (1.0 - cell.share) / cell.share;
    let m = 1 + cell.extra_metrics;
    let latency = !matches!(cell.effect, Effect::Errors(_));
    let mut ll: Vec<LogLik> = vec![LogLik::default(); m];
    let mut ll_lat: Vec<LogLik> = vec![LogLik::default(); LE.len()];
    let mut shift = LogLik::default();
    let (mut xc, mut xb) = (vec![0.0; m], vec![0.0; m]);
    let mut lat_c = vec![0.0; LE.len() + 1];
    let mut lat_b = vec![0.0; LE.len() + 1];
    let (mut series_c, mut series_b) = (Vec::new(), Vec::new());
    let mut flagger_failed = 0u32;
    let mut canary_requests = 0.0;
    for w in 1..=WINDOWS {
        let nc = poisson(rng, lam_c);
        let nb = poisson(rng, lam_b);
        canary_requests += nc as f64;
        let s = nc as f64 / (nc + nb).max(1) as f64;
        let (win_c, win_b);
        let mut flagger_bad = false;
        let events_so_far;
        if latency {
            let hc = multinomial_cum(rng, nc, probs_c);
            let hb = multinomial_cum(rng, nb, probs_b);
            // the shift test bets with the earlier windows' pooled histogram
            ordinal::add_window(&mut shift, &lat_c, &lat_b, &hc, &hb);
            for (acc, v) in lat_c.iter_mut().zip(&hc) {
                *acc += v;
            }
            for (acc, v) in lat_b.iter_mut().zip(&hb) {
                *acc += v;
            }
            let ch = CheckedHistogram {
                le: LE.to_vec(),
                cumulative: hc,
            };
            let bh = CheckedHistogram {
                le: LE.to_vec(),
                cumulative: hb,
            };
            for (i, l) in ll_lat.iter_mut().enumerate() {
                let (x, y) = (ch.above(i), bh.above(i));
                l.add(x, x + y, s);
            }
            win_c = ch.quantile(0.9);
            win_b = bh.quantile(0.9);
            flagger_bad = ch.quantile(0.99).is_some_and(|p| p > FLAGGER_MAX_P99);
            // "events" for latency: requests slower than 250 ms so far
            let i = 5;
            events_so_far = (lat_c[LE.len()] - lat_c[i]) + (lat_b[LE.len()] - lat_b[i]);
        } else {
            let (mut ec0, mut eb0) = (0.0, 0.0);
            for j in 0..m {
                let rho = if j == 0 {
                    match cell.effect {
                        Effect::Errors(r) => r,
                        _ => 1.0,
                    }
                } else {
                    1.0
                };
                let ec = binomial(rng, nc, cell.base_error * rho) as f64;
                let eb = binomial(rng, nb, cell.base_error) as f64;
                xc[j] += ec;
                xb[j] += eb;
                ll[j].add(ec, ec + eb, s);
                if j == 0 {
                    (ec0, eb0) = (ec, eb);
                    flagger_bad = nc > 0 && 1.0 - ec / (nc as f64) < FLAGGER_MIN_SUCCESS;
                }
            }
            win_c = (nc > 0).then(|| ec0 / nc as f64);
            win_b = (nb > 0).then(|| eb0 / nb as f64);
            events_so_far = xc[0] + xb[0];
        }
        let stamp = |o: &mut Outcome| {
            if o.window.is_none() {
                *o = Outcome {
                    window: Some(w),
                    events: events_so_far,
                    canary_requests,
                };
            }
        };
        // canaryd: mean of the metrics' e-values >= 1/α (one budget).
        let log_e_mean = if latency {
            if bounds_log_e(&ll_lat, Direction::Increase) >= (1.0 / ALPHA).ln() {
                stamp(&mut out[BEFORE]);
            }
            latency_log_e(&ll_lat, &shift, Direction::Increase)
        } else {
            let les: Vec<f64> = ll
                .iter()
                .map(|l| errors_log_e(l, Direction::Increase))
                .collect();
            canaryd::judge::grid::log_sum_exp(les.iter().copied()) - (m as f64).ln()
        };
        if log_e_mean >= (1.0 / ALPHA).ln() {
            stamp(&mut out[0]);
        }
        // Lindon–Malek reference (Bonferroni over metrics / bucket bounds).
        let lm_hit = if latency {
            let a = ALPHA / LE.len() as f64;
            (0..LE.len()).any(|i| {
                let x = lat_c[LE.len()] - lat_c[i];
                let n = x + lat_b[LE.len()] - lat_b[i];
                n > 0.0 && x / n > cell.share && lm_log_bf(x, n, cell.share) >= (1.0 / a).ln()
            })
        } else {
            let a = ALPHA / m as f64;
            (0..m).any(|j| {
                let n = xc[j] + xb[j];
                n > 0.0
                    && xc[j] / n > cell.share
                    && lm_log_bf(xc[j], n, cell.share) >= (1.0 / a).ln()
            })
        };
        if lm_hit {
            stamp(&mut out[1]);
        }
        // Kayenta-style: Mann-Whitney on the growing per-window series.
        if let (Some(c), Some(b)) = (win_c, win_b) {
            series_c.push(c);
            series_b.push(b);
        }
        if out[2].window.is_none() && kayenta_high(&series_c, &series_b) {
            stamp(&mut out[2]);
        }
        // Flagger-style absolute checks.
        if flagger_bad {
            flagger_failed += 1;
        }
        if flagger_failed >= FLAGGER_THRESHOLD {
            stamp(&mut out[3]);
        }
        let before_done = !latency || out[BEFORE].window.is_some();
        if before_done && out[..4].iter().all(|o| o.window.is_some()) {
            break;
        }
    }
    out
}

fn run_cell(cell: Cell, runs: usize, seed: u64) -> Vec<[Outcome; OUTCOMES]> {
    let probs_b = bucket_probs(Effect::Errors(1.0));
    let probs_c = bucket_probs(cell.effect);
    let half = runs / 2;
    let chunks = [(0, half), (half, runs)];
    let handles: Vec<_> = chunks
        .iter()
        .enumerate()
        .map(|(t, &(lo, hi))| {
            let (pc, pb) = (probs_c.clone(), probs_b.clone());
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(t as u64));
                (lo..hi)
                    .map(|_| run_once(&cell, &mut rng, &pc, &pb))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

fn wilson(k: usize, n: usize) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::INFINITY;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn fmt_q(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "—".into()
    }
}

struct Summary {
    rollbacks: usize,
    runs: usize,
    t50: f64,
    t90: f64,
    e50: f64,
    e90: f64,
    exposed: f64,
}

fn summarize(outcomes: &[[Outcome; OUTCOMES]], judge: usize) -> Summary {
    let runs = outcomes.len();
    let detected: Vec<&Outcome> = outcomes
        .iter()
        .map(|o| &o[judge])
        .filter(|o| o.window.is_some())
        .collect();
    let times: Vec<f64> = outcomes
        .iter()
        .map(|o| {
            o[judge]
                .window
                .map_or(f64::INFINITY, |w| w as f64 * WINDOW_SECS)
        })
        .collect();
    let events: Vec<f64> = outcomes
        .iter()
        .map(|o| {
            if o[judge].window.is_some() {
                o[judge].events
            } else {
                f64::INFINITY
            }
        })
        .collect();
    Summary {
        rollbacks: detected.len(),
        runs,
        t50: quantile(times.clone(), 0.5),
        t90: quantile(times, 0.9),
        e50: quantile(events.clone(), 0.5),
        e90: quantile(events, 0.9),
        exposed: quantile(detected.iter().map(|o| o.canary_requests).collect(), 0.5),
    }
}

fn effect_name(e: Effect) -> String {
    match e {
        Effect::Errors(1.0) => "A/A".into(),
        Effect::Errors(r) => format!("errors ×{r}"),
        Effect::Latency(1.0) => "A/A".into(),
        Effect::Latency(r) => format!("latency ×{r}"),
        Effect::Tail => "tail ×2 above p90".into(),
    }
}

/// Event-granular errors test at share 0.5: every error event is the
/// canary's with probability ρ/(ρ+1); both sequential judges look after
/// every event (no window quantization), up to `MAX_EVENTS` events.
const MAX_EVENTS: usize = 3000;

fn event_granular(rho: f64, runs: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let th = rho / (rho + 1.0);
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(17).wrapping_add(t));
                let mut a = Vec::new();
                let mut b = Vec::new();
                for _ in 0..runs / 2 {
                    let mut ll = LogLik::default();
                    let (mut x, mut n) = (0.0, 0.0);
                    let (mut ours, mut lm) = (f64::INFINITY, f64::INFINITY);
                    for e in 1..=MAX_EVENTS {
                        let canary = rand::Rng::random::<f64>(&mut rng) < th;
                        ll.add(if canary { 1.0 } else { 0.0 }, 1.0, 0.5);
                        x += if canary { 1.0 } else { 0.0 };
                        n += 1.0;
                        if ours.is_infinite()
                            && errors_log_e(&ll, Direction::Increase) >= (1.0 / ALPHA).ln()
                        {
                            ours = e as f64;
                        }
                        if lm.is_infinite()
                            && x / n > 0.5
                            && lm_log_bf(x, n, 0.5) >= (1.0 / ALPHA).ln()
                        {
                            lm = e as f64;
                        }
                        if ours.is_finite() && lm.is_finite() {
                            break;
                        }
                    }
                    a.push(ours);
                    b.push(lm);
                }
                (a, b)
            })
        })
        .collect();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for h in handles {
        if let Ok((x, y)) = h.join() {
            a.extend(x);
            b.extend(y);
        }
    }
    (a, b)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
        .max(2);
    let started = std::time::Instant::now();
    let mut cells = Vec::new();
    for &share in &[0.5, 0.05] {
        for &rate in &[1.0, 10.0, 100.0] {
            for &base_error in &[0.001, 0.01] {
                for &r in &[1.0, 1.5, 2.0, 5.0] {
                    cells.push(Cell {
                        share,
                        rate,
                        base_error,
                        effect: Effect::Errors(r),
                        extra_metrics: 0,
                    });
                }
            }
            for effect in [
                Effect::Latency(1.0),
                Effect::Latency(1.1),
                Effect::Latency(1.5),
                Effect::Tail,
            ] {
                cells.push(Cell {
                    share,
                    rate,
                    base_error: 0.0,
                    effect,
                    extra_metrics: 0,
                });
            }
        }
    }
    for extra in [1usize, 3, 7] {
        for r in [1.0, 2.0] {
            cells.push(Cell {
                share: 0.5,
                rate: 10.0,
                base_error: 0.01,
                effect: Effect::Errors(r),
                extra_metrics: extra,
            });
        }
    }
    let mut aa = String::new();
    let mut reg = String::new();
    let mut multi = String::new();
    let _ = writeln!(
        aa,
        "| share | rps/arm | base err | kind | {} |",
        JUDGES.map(|j| format!("{j} FR% [95% up]")).join(" | ")
    );
    let _ = writeln!(aa, "|---|---|---|---|{}", "---|".repeat(4));
    let _ = writeln!(
        reg,
        "| share | rps/arm | base err | effect | {} |",
        JUDGES
            .map(|j| format!("{j}: det% · t50/t90 s · ev50/ev90 · exposed"))
            .join(" | ")
    );
    let _ = writeln!(reg, "|---|---|---|---|{}", "---|".repeat(4));
    let _ = writeln!(multi, "| metrics | effect | canaryd FR% [up] or det% · t90 s · ev90 | LM (Bonferroni) FR% [up] or det% · t90 s · ev90 |");
    let _ = writeln!(multi, "|---|---|---|---|");
    let mut lat = String::new();
    let _ = writeln!(
        lat,
        "| share | rps/arm | effect | before: per-bound mean only | after: with the shift test |"
    );
    let _ = writeln!(lat, "|---|---|---|---|---|");
    let mut worst_upper = [0.0f64; 4];
    for (ci, cell) in cells.iter().enumerate() {
        let outcomes = run_cell(*cell, runs, 0x5eed_0000 + ci as u64);
        let is_aa = matches!(cell.effect, Effect::Errors(r) | Effect::Latency(r) if r == 1.0);
        let sums: Vec<Summary> = (0..4).map(|j| summarize(&outcomes, j)).collect();
        if !matches!(cell.effect, Effect::Errors(_)) {
            let cols: Vec<String> = [BEFORE, 0]
                .iter()
                .map(|&j| {
                    let s = summarize(&outcomes, j);
                    if is_aa {
                        let (_, up) = wilson(s.rollbacks, s.runs);
                        format!(
                            "FR {:.2}% [{:.2}]",
                            100.0 * s.rollbacks as f64 / s.runs as f64,
                            100.0 * up
                        )
                    } else {
                        format!(
                            "{:.0}% · {}/{} s · {}/{} ev",
                            100.0 * s.rollbacks as f64 / s.runs as f64,
                            fmt_q(s.t50),
                            fmt_q(s.t90),
                            fmt_q(s.e50),
                            fmt_q(s.e90)
                        )
                    }
                })
                .collect();
            let _ = writeln!(
                lat,
                "| {} | {} | {} | {} |",
                cell.share,
                cell.rate,
                effect_name(cell.effect),
                cols.join(" | ")
            );
        }
        let base = if matches!(cell.effect, Effect::Errors(_)) {
            format!("{}%", cell.base_error * 100.0)
        } else {
            "—".into()
        };
        if cell.extra_metrics > 0 {
            let cols: Vec<String> = [0usize, 1]
                .iter()
                .map(|&j| {
                    let s = &sums[j];
                    if is_aa {
                        let (_, up) = wilson(s.rollbacks, s.runs);
                        format!(
                            "{:.2} [{:.2}]",
                            100.0 * s.rollbacks as f64 / s.runs as f64,
                            100.0 * up
                        )
                    } else {
                        format!(
                            "{:.0}% · {} · {}",
                            100.0 * s.rollbacks as f64 / s.runs as f64,
                            fmt_q(s.t90),
                            fmt_q(s.e90)
                        )
                    }
                })
                .collect();
            let _ = writeln!(
                multi,
                "| {} | {} | {} |",
                1 + cell.extra_metrics,
                effect_name(cell.effect),
                cols.join(" | ")
            );
            continue;
        }
        if is_aa {
            let cols: Vec<String> = sums
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    let (_, up) = wilson(s.rollbacks, s.runs);
                    worst_upper[j] = worst_upper[j].max(up);
                    format!(
                        "{:.2} [{:.2}]",
                        100.0 * s.rollbacks as f64 / s.runs as f64,
                        100.0 * up
                    )
                })
                .collect();
            let kind = if matches!(cell.effect, Effect::Errors(_)) {
                "errors"
            } else {
                "latency"
            };
            let _ = writeln!(
                aa,
                "| {} | {} | {} | {} | {} |",
                cell.share,
                cell.rate,
                base,
                kind,
                cols.join(" | ")
            );
        } else {
            let cols: Vec<String> = sums
                .iter()
                .map(|s| {
                    format!(
                        "{:.0}% · {}/{} · {}/{} · {}",
                        100.0 * s.rollbacks as f64 / s.runs as f64,
                        fmt_q(s.t50),
                        fmt_q(s.t90),
                        fmt_q(s.e50),
                        fmt_q(s.e90),
                        fmt_q(s.exposed)
                    )
                })
                .collect();
            let _ = writeln!(
                reg,
                "| {} | {} | {} | {} | {} |",
                cell.share,
                cell.rate,
                base,
                effect_name(cell.effect),
                cols.join(" | ")
            );
        }
    }
    println!("# Judge benchmark ({runs} runs per cell, {WINDOWS} windows of {WINDOW_SECS} s, α = {ALPHA})\n");
    println!("## A/A false-rollback rate (%), Wilson 95% upper bound in brackets\n\n{aa}");
    println!(
        "Worst upper bounds: {}\n",
        JUDGES
            .iter()
            .zip(worst_upper)
            .map(|(j, u)| format!("{j} {:.2}%", 100.0 * u))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("## Regressions: detected within 30 min · time to detect p50/p90 (s) · events at detection p50/p90 · canary requests exposed (median of detected)\n\n{reg}");
    println!("## Latency before/after the shift test (canaryd only; same runs)\n\n{lat}");
    println!("## Cost of more metrics (share 0.5, 10 rps/arm, 1% errors; extra metrics are A/A)\n\n{multi}");
    println!("## Event-granular errors test (share 0.5, a look after every error event, up to {MAX_EVENTS} events)\n");
    println!("| effect | canaryd: FR% [up] or det% · ev50/ev90 | LM k=100: FR% [up] or det% · ev50/ev90 |");
    println!("|---|---|---|");
    for (i, rho) in [1.0, 1.5, 2.0, 5.0].into_iter().enumerate() {
        let (a, b) = event_granular(rho, runs, 0xe7e7 + i as u64);
        let col = |v: Vec<f64>| {
            let k = v.iter().filter(|x| x.is_finite()).count();
            if rho == 1.0 {
                let (_, up) = wilson(k, v.len());
                format!(
                    "{:.2} [{:.2}]",
                    100.0 * k as f64 / v.len() as f64,
                    100.0 * up
                )
            } else {
                format!(
                    "{:.0}% · {}/{}",
                    100.0 * k as f64 / v.len() as f64,
                    fmt_q(quantile(v.clone(), 0.5)),
                    fmt_q(quantile(v, 0.9))
                )
            }
        };
        let name = if rho == 1.0 {
            "A/A".to_string()
        } else {
            format!("errors ×{rho}")
        };
        println!("| {name} | {} | {} |", col(a), col(b));
    }
    println!();
    println!("elapsed {:.1} s", started.elapsed().as_secs_f64());
}
