"""Reference numbers for glassbox's probe classifier: scikit-learn LogisticRegression.

Writes tests/fixtures/probe_sklearn_reference.json: seeded synthetic activations (1,200 rows of
32 units, labels from noisy linear functions so accuracy is well below 1), the train/test
split, and for a binary and a 4-class label at two L2 strengths the held-out accuracy and the
predictions of sklearn's lbfgs LogisticRegression(C = 1 / l2) on features standardised with
StandardScaler fitted on the training rows — the same regularisation and scaling glassbox uses.

Run with `just reference-probes` (installs scikit-learn and numpy into .venv-ref).
"""
import json
import pathlib

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

rng = np.random.default_rng(20261126)
n, d = 1200, 32
# Correlated, unevenly scaled units, as real activations are.
mix = rng.normal(size=(d, d)) / np.sqrt(d)
scales = rng.uniform(0.2, 5.0, size=d)
x = (rng.normal(size=(n, d)) @ mix * scales + rng.normal(size=d)).astype(np.float32)
# Round to 6 significant digits so the JSON text is exactly the data both sides read.
x = np.array([[float(f"{v:.6g}") for v in row] for row in x], dtype=np.float32)

w2 = rng.normal(size=d)
z2 = (x - x.mean(0)) / x.std(0) @ w2
binary = (z2 + rng.normal(scale=0.6 * z2.std(), size=n) > 0).astype(int)
w4 = rng.normal(size=(d, 4))
z4 = (x - x.mean(0)) / x.std(0) @ w4
four = np.argmax(z4 + rng.normal(scale=0.5 * z4.std(), size=(n, 4)), axis=1)

order = rng.permutation(n)
test = np.sort(order[:500])
train = np.sort(order[500:])

scaler = StandardScaler().fit(x[train])
xs_train = scaler.transform(x[train])
xs_test = scaler.transform(x[test])

cases = []
for name, y in [("binary", binary), ("four", four)]:
    for l2 in [1.0, 100.0]:
        model = LogisticRegression(C=1.0 / l2, solver="lbfgs", max_iter=1000, tol=1e-8)
        model.fit(xs_train, y[train])
        predicted = model.predict(xs_test)
        cases.append(
            {
                "label": name,
                "l2": l2,
                "accuracy": float((predicted == y[test]).mean()),
                "predicted": predicted.tolist(),
            }
        )
        print(f"{name} l2={l2}: accuracy {cases[-1]['accuracy']:.4f}")

out = {
    "sklearn_version": sklearn.__version__,
    "n": n,
    "d": d,
    "x": [float(v) for v in x.ravel()],
    "labels": {"binary": binary.tolist(), "four": four.tolist()},
    "train": train.tolist(),
    "test": test.tolist(),
    "cases": cases,
}
path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/probe_sklearn_reference.json"
path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
print(f"wrote {path} ({path.stat().st_size} bytes)")
