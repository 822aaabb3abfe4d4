#!/usr/bin/env python3
"""Generate Mann-Whitney U / Hodges-Lehmann test vectors for canaryd's judge.

Run once (needs scipy): python3 scripts/gen-mannwhitney-vectors.py
Writes tests/fixtures/judge/mannwhitney.json. U and p come from
scipy.stats.mannwhitneyu(x, y) (two-sided, continuity, method="auto"); the
Hodges-Lehmann estimate and interval are computed directly here with the rule
documented in src/judge/mannwhitney.rs.

Also writes two classic-mode `canaryd judge` documents whose arms have nulls
or fewer windows (classic-per-arm.json, classic-unequal-length.json) and
tests/fixtures/judge/classic-expected.json: per metric, the values left in
each arm after Kayenta's per-arm NaN strategy (`remove` drops an arm's missing
values, `replace` makes them 0) and scipy's U and p on them.
"""
import json
import math

import numpy as np
from scipy import stats


def exact_cdf(n1, n2):
    """P(U <= k) by the counting recursion f(m, n, k) = f(m-1, n, k-n) + f(m, n-1, k)."""
    m, n = min(n1, n2), max(n1, n2)
    # f[j][k]: arrangements of i x's and j y's with U = k, rolled over i.
    prev = [[1] + [0] * (m * n) for _ in range(n + 1)]  # i = 0: U = 0 only
    for i in range(1, m + 1):
        cur = [[0] * (m * n + 1) for _ in range(n + 1)]
        cur[0][0] = 1
        for j in range(1, n + 1):
            for k in range(m * n + 1):
                v = cur[j - 1][k]  # last element is a y: adds nothing
                if k - j >= 0:
                    v += prev[j][k - j]  # last element is an x above j y's
                cur[j][k] = v
        prev = cur
    freq = prev[n]
    total = sum(freq)
    out, acc = [], 0
    for f in freq:
        acc += f
        out.append(acc / total)
    return out


def hodges_lehmann(x, y, conf):
    d = sorted(a - b for a in x for b in y)
    mn = len(d)
    est = float(np.median(d))
    alpha = 1 - conf
    allv = list(x) + list(y)
    _, counts = np.unique(allv, return_counts=True)
    ties = any(c > 1 for c in counts)
    n1, n2 = len(x), len(y)
    if not (ties or (n1 > 8 and n2 > 8)):
        cdf = exact_cdf(n1, n2)
        k = next(i for i, p in enumerate(cdf) if p >= alpha / 2)
    else:
        n = n1 + n2
        tie_term = sum(float(c) ** 3 - c for c in counts)
        s = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        z = stats.norm.ppf(1 - alpha / 2)
        k = math.floor(mn / 2 - z * s)
        k = max(k, 0)
    k = min(max(k, 1), (mn + 1) // 2)
    return est, d[k - 1], d[mn - k]


def main():
    rng = np.random.default_rng(20240917)
    cases = []
    shapes = [(3, 3), (4, 7), (5, 5), (8, 8), (8, 20), (3, 40), (9, 9), (12, 15), (30, 30), (60, 45)]
    for n1, n2 in shapes:
        for shift in (0.0, 0.4, 1.5):
            x = np.round(rng.lognormal(shift, 0.6, n1), 6)
            y = np.round(rng.lognormal(0.0, 0.6, n2), 6)
            cases.append((x.tolist(), y.tolist()))
            # a tied variant: coarse rounding
            cases.append((np.round(x, 1).tolist(), np.round(y, 1).tolist()))
    # error ratios with many zeros (heavy ties)
    for n in (5, 10, 30):
        x = (rng.poisson(0.5, n) / 100).tolist()
        y = (rng.poisson(0.3, n) / 100).tolist()
        cases.append((x, y))
    cases.append(([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]))
    cases.append(([1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]))
    # unequal lengths, as left by per-arm NaN removal (own generator, so the
    # cases above stay as they were)
    rng2 = np.random.default_rng(20250113)
    for n1, n2 in [(7, 10), (10, 7), (3, 12), (12, 3), (9, 16)]:
        for shift in (0.0, 0.8):
            x = np.round(rng2.lognormal(shift, 0.5, n1), 6)
            y = np.round(rng2.lognormal(0.0, 0.5, n2), 6)
            cases.append((x.tolist(), y.tolist()))
            cases.append((np.round(x, 1).tolist(), np.round(y, 1).tolist()))
    out = []
    for x, y in cases:
        r = stats.mannwhitneyu(x, y)
        for conf in (0.95, 0.98):
            est, lo, hi = hodges_lehmann(x, y, conf)
            out.append({
                "x": x, "y": y, "confidence": conf,
                "u": float(r.statistic), "p": float(r.pvalue),
                "hl": est, "lower": lo, "upper": hi,
            })
    doc = {
        "generator": "scripts/gen-mannwhitney-vectors.py",
        "scipy": __import__("scipy").__version__,
        "cases": out,
    }
    with open("tests/fixtures/judge/mannwhitney.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases")
    classic_documents()


def gauge_arm(values, missing, digits):
    """One gauge arm: `values` rounded, `None` (JSON null) at `missing`."""
    return [None if i in missing else round(float(v), digits) for i, v in enumerate(values)]


def arm_values(arm, nan):
    """What canaryd's classic mode keeps of one arm under `nan`."""
    if nan == "replace":
        return [0.0 if v is None else v for v in arm]
    return [v for v in arm if v is not None]


def error_ratios(increases):
    return [r["errors"] / r["total"] if r["total"] > 0 else None for r in increases]


def expected(metric, alpha, n_windows):
    cfg = metric.get("classic", {})
    nan = cfg.get("nanStrategy", "remove")
    conf = cfg.get("confidence", 1 - alpha)
    arms = []
    for side in ("canary", "baseline"):
        a = metric[side]
        raw = error_ratios(a["increases"]) if "increases" in a else list(a["values"])
        # a window past the end of an arm has no data for that arm
        raw += [None] * (n_windows - len(raw))
        arms.append(arm_values(raw, nan))
    c, b = arms
    r = stats.mannwhitneyu(c, b)
    est, lo, hi = hodges_lehmann(c, b, conf)
    return {
        "canary": c, "baseline": b, "confidence": conf,
        "u": float(r.statistic), "p": float(r.pvalue),
        "hl": est, "lower": lo, "upper": hi,
        "meanCanary": float(np.mean(c)), "meanBaseline": float(np.mean(b)),
    }


def classic_documents():
    rng = np.random.default_rng(20250114)
    n = 12

    def gauge(name, c_missing, b_missing, digits, shift=0.0, **extra):
        c = rng.normal(0.5 + shift, 0.05, n)
        b = rng.normal(0.5, 0.05, n)
        m = {"name": name, "kind": "gauge", "direction": "either"}
        m.update(extra)
        m["canary"] = {"values": gauge_arm(c, c_missing, digits)}
        m["baseline"] = {"values": gauge_arm(b, b_missing, digits)}
        return m

    def increases(rate, empty):
        out = []
        for i in range(n):
            total = 0 if i in empty else int(rng.integers(800, 1200))
            out.append({"errors": int(rng.binomial(total, rate)), "total": total})
        return out

    # Every metric has data in both arms in the last window, so none is stale.
    per_arm = {
        "alpha": 0.05,
        "mode": "classic",
        "metrics": [
            # 10 canary vs 7 baseline values, ties (2 decimals)
            gauge("cpu", {2, 6}, {1, 4, 5, 8, 9}, 2),
            # the same data with nanStrategy replace: 12 vs 12, zeros for nulls
            None,
            # 3 canary vs 12 baseline values, no ties: exact distribution
            gauge("queue", {0, 1, 2, 3, 4, 6, 7, 8, 9}, set(), 6, classic={"confidence": 0.9}),
            {
                "name": "errors", "kind": "errors",
                "canary": {"increases": increases(0.01, set())},
                # no baseline requests in windows 3 and 7: undefined ratios
                "baseline": {"increases": increases(0.01, {3, 7})},
            },
        ],
    }
    cpu = per_arm["metrics"][0]
    per_arm["metrics"][1] = {
        "name": "cpu-replace", "kind": "gauge", "direction": "either",
        "classic": {"nanStrategy": "replace"},
        "canary": cpu["canary"], "baseline": cpu["baseline"],
    }
    # The canary's series ends 4 windows early: its arm has 7 values to the
    # baseline's 10, and the metric is stale (inconclusive) at the end.
    short = {
        "alpha": 0.05,
        "mode": "classic",
        "metrics": [gauge("latency-ms", set(), {3}, 3)],
    }
    short["metrics"][0]["canary"]["values"] = short["metrics"][0]["canary"]["values"][:7]
    short["metrics"][0]["baseline"]["values"] = short["metrics"][0]["baseline"]["values"][:11]
    out = {
        "generator": "scripts/gen-mannwhitney-vectors.py",
        "scipy": __import__("scipy").__version__,
        "documents": {},
    }
    for name, doc, windows in (
        ("classic-per-arm.json", per_arm, n),
        ("classic-unequal-length.json", short, 11),
    ):
        with open(f"tests/fixtures/judge/{name}", "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        out["documents"][name] = {
            "windows": windows,
            "metrics": {m["name"]: expected(m, doc["alpha"], windows) for m in doc["metrics"]},
        }
    with open("tests/fixtures/judge/classic-expected.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote classic-per-arm.json, classic-unequal-length.json, classic-expected.json")


if __name__ == "__main__":
    main()
