#!/usr/bin/env python3
"""Prints glassbox vs scikit-learn probe fitting times and accuracies side by side.

Usage: compare_probes.py GLASSBOX.json SKLEARN.json
"""
import json
import sys

g = json.load(open(sys.argv[1]))["fits"]
s = json.load(open(sys.argv[2]))
print(f"probe fit, 20,000 x 384 float32 (scikit-learn {s['sklearn_version']}, lbfgs, C = 1, max_iter 100)")
print("accuracy: on the 20,000 fitted rows / on 4,000 held-out rows")
print(f"{'':<10}{'glassbox s':>12}{'sklearn s':>11}{'speed-up':>10}{'acc glassbox':>17}{'acc sklearn':>17}")
for name in ["binary", "10-class"]:
    ours, theirs = g[name], s["fits"][name]
    print(
        f"{name:<10}{ours['seconds']:>12.3f}{theirs['seconds']:>11.3f}"
        f"{theirs['seconds'] / ours['seconds']:>9.1f}x"
        f"{ours['train_accuracy']:>10.4f}/{ours['test_accuracy']:.4f}"
        f"{theirs['train_accuracy']:>10.4f}/{theirs['test_accuracy']:.4f}"
    )
