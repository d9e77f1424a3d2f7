"""Reference numbers for the dictionary stage's token-label correlation tests: statsmodels.

Writes tests/fixtures/clustered_correlation_reference.json: seeded token rows grouped in texts
(a unit's activation and a token class that both carry a per-text effect, the way a text's
tokens share its topic and style), and for every unit × class the OLS slope of the activation on
class membership, its cluster-robust t and two-sided p-value with texts as clusters —
statsmodels' `OLS(...).fit(cov_type="cluster", use_t=True)`: CR1 (G/(G-1) · (N-1)/(N-2)) on
G - 1 degrees of freedom — and the naive p-value of the same correlation over independent rows.

Run with `just reference-clustered` (installs statsmodels and numpy into .venv-ref).
"""
import json
import pathlib

import numpy as np
import statsmodels
import statsmodels.api as sm
from scipy import stats  # a dependency of statsmodels

rng = np.random.default_rng(20261207)
texts, units, classes = 40, 3, 3
rows = []
for g in range(texts):
    length = int(rng.integers(3, 16))
    # The text's leaning towards class 0 and its shift in units 0 and 2.
    lean = rng.normal()
    shift = rng.normal(size=units)
    for _ in range(length):
        p0 = 1 / (1 + np.exp(-lean))
        c = 0 if rng.random() < p0 else int(rng.integers(1, classes))
        v = shift * np.array([1.0, 0.0, 1.0]) + rng.normal(size=units)
        v[1] += 0.8 * (c == 1)  # unit 1 tracks class 1 token by token
        v = np.maximum(v, 0.0)  # activations after a ReLU: many exact zeros
        rows.append((g, c, [float(f"{x:.6g}") for x in v]))

g = np.array([r[0] for r in rows])
c = np.array([r[1] for r in rows])
acts = np.array([r[2] for r in rows])
out = []
for u in range(units):
    for k in range(classes):
        x = (c == k).astype(float)
        y = acts[:, u]
        fit = sm.OLS(y, sm.add_constant(x)).fit(
            cov_type="cluster", cov_kwds={"groups": g}, use_t=True
        )
        r = float(np.corrcoef(x, y)[0, 1])
        n = len(y)
        t_naive = r * np.sqrt((n - 2) / (1 - r * r))
        out.append(
            {
                "unit": u,
                "class": k,
                "slope": float(fit.params[1]),
                "correlation": r,
                "t": float(fit.tvalues[1]),
                "p": float(fit.pvalues[1]),
                "df": float(fit.df_resid_inference),
                "p_rows": float(2 * stats.t.sf(abs(t_naive), n - 2)),
            }
        )

path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/clustered_correlation_reference.json"
path.write_text(
    json.dumps(
        {
            "statsmodels": statsmodels.__version__,
            "rows": [{"text": int(a), "class": int(b), "activations": v} for a, b, v in rows],
            "tests": out,
        },
        indent=1,
    )
    + "\n"
)
print(f"wrote {path}")
