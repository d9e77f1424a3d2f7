"""Reference TCAV numbers computed with numpy and scipy from fixed inputs.

Writes tests/fixtures/tcav_reference.json: summed target gradients (30 examples x 12 units),
fixed CAV directions (3 concepts x 8 runs, and 8 random-vs-random runs), and for each concept
and both sign conventions the per-run TCAV scores and magnitudes, Welch's t and two-sided p
(scipy.stats.ttest_ind, equal_var=False), and Holm-adjusted p-values over all six tests.
glassbox's scoring and statistics must match to 1e-6. Run with `just reference-tcav`.
"""
import json
import pathlib

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(7)
n, d, runs = 30, 12, 8
u = rng.normal(size=d)
u /= np.linalg.norm(u)
grads = (np.outer(rng.uniform(3, 9, size=n), u) + rng.normal(scale=1.5, size=(n, d))).astype(np.float32)
grads = np.array([[float(f"{v:.6g}") for v in row] for row in grads], dtype=np.float32)


def unit(v):
    return v / np.linalg.norm(v)


concepts = {
    "towards": [unit(u + rng.normal(scale=0.6, size=d)) for _ in range(runs)],
    "against": [unit(-u + rng.normal(scale=0.6, size=d)) for _ in range(runs)],
    "unrelated": [unit(rng.normal(size=d)) for _ in range(runs)],
}
random_cavs = [unit(rng.normal(size=d)) for _ in range(runs)]


def scores(directions, convention):
    sign = 1.0 if convention == "logit" else -1.0
    out, mags = [], []
    for v in directions:
        s = grads.astype(np.float64) @ v
        out.append(float(np.mean(sign * s > 0)))
        total = np.abs(s).sum()
        mags.append(float(np.maximum(sign * s, 0).sum() / total) if total > 0 else 0.0)
    return out, mags


results = []
for convention in ["logit", "loss"]:
    random_scores, _ = scores(random_cavs, convention)
    for name, dirs in concepts.items():
        s, m = scores(dirs, convention)
        t, p = stats.ttest_ind(s, random_scores, equal_var=False)
        results.append({"concept": name, "convention": convention, "scores": s,
                        "magnitudes": m, "random_scores": random_scores,
                        "t": float(t), "p": float(p)})

p = np.array([r["p"] for r in results])
order = np.argsort(p)
adjusted = np.empty_like(p)
running = 0.0
for rank, i in enumerate(order):
    running = max(running, min(1.0, (len(p) - rank) * p[i]))
    adjusted[i] = running
for r, a in zip(results, adjusted):
    r["p_holm"] = float(a)
    print(f"{r['concept']:>10} {r['convention']:>5}: mean {np.mean(r['scores']):.3f} t {r['t']:8.4f} p {r['p']:.3g} p_holm {r['p_holm']:.3g}")

out = {
    "scipy_version": scipy.__version__,
    "width": d,
    "gradient_sums": [float(v) for v in grads.ravel()],
    "concept_cavs": {k: [[float(x) for x in v] for v in dirs] for k, dirs in concepts.items()},
    "random_cavs": [[float(x) for x in v] for v in random_cavs],
    "results": results,
}
path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/tcav_reference.json"
path.write_text(json.dumps(out) + "\n")
print(f"wrote {path}")
