#!/usr/bin/env python3
"""scikit-learn's side of `just bench-probes`: LogisticRegression(lbfgs, C = 1, max_iter = 100)
on the rows glassbox-bench-probes wrote, standardised with StandardScaler on the 20,000
training rows; the median of 3 fits, accuracy on the training rows and on the last 4,000.

Usage: sklearn_probes.py DATA_DIR OUT.json
"""
import json
import sys
import time

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

data, out = sys.argv[1], sys.argv[2]
n, d, n_train = 24000, 384, 20000
x = np.fromfile(f"{data}/x.f32", dtype="<f4").reshape(n, d)
scaler = StandardScaler().fit(x[:n_train])
xs = scaler.transform(x).astype(np.float32)
fits = {}
for name, file in [("binary", "y2.u8"), ("10-class", "y10.u8")]:
    y = np.fromfile(f"{data}/{file}", dtype=np.uint8).astype(int)
    times = []
    for _ in range(3):
        model = LogisticRegression(C=1.0, solver="lbfgs", max_iter=100)
        start = time.perf_counter()
        model.fit(xs[:n_train], y[:n_train])
        times.append(time.perf_counter() - start)
    fits[name] = {
        "seconds": sorted(times)[1],
        "test_accuracy": float((model.predict(xs[n_train:]) == y[n_train:]).mean()),
        "train_accuracy": float((model.predict(xs[:n_train]) == y[:n_train]).mean()),
        "iterations": int(np.max(model.n_iter_)),
    }
json.dump({"sklearn_version": sklearn.__version__, "fits": fits}, open(out, "w"), indent=2)
print(json.dumps(fits, indent=2))
