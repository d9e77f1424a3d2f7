#!/usr/bin/env python3
"""Prints glassbox vs PyTorch ratios from the bench JSON files, plus the memory runs.

Each side may be given as several comma-separated files: rounds that `just bench` ran
alternately (glassbox, PyTorch, glassbox, ...), so slow drift of a shared machine hits both
sides alike. Throughput is the best pass over all rounds; the ratio of each round is printed
too, so the spread is visible.

With --forward-only (another model, e.g. SmolLM2): only the forward and peak RSS rows.

When both sides ran paired (bench/paired.py: one pass of each in turn), pass i of glassbox
ran next to pass i of PyTorch, and the ratio of each pair is printed too: its median is the
figure least moved by the machine's drift.

Usage: compare.py [--forward-only] GLASSBOX.json[,...] PYTORCH.json[,...] [MEMORY_SMALL.json MEMORY_LARGE.json]
"""
import json
import os
import statistics
import sys

from cpu import cpu_flags

forward_only = sys.argv[1:2] == ["--forward-only"]
if forward_only:
    del sys.argv[1]


def load(arg):
    return [json.load(open(path)) for path in arg.split(",")]


def best(runs, section, key="tokens_per_s"):
    return max(run[section][key] for run in runs)


g = load(sys.argv[1])
p = load(sys.argv[2])
print(
    f"instruction sets: glassbox {g[0].get('simd_level', '?')}, PyTorch (ATen) {p[0].get('cpu_capability', '?')}"
    f", MKL_ENABLE_INSTRUCTIONS={os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'unset')}"
    f"; CPU flags: {' '.join(cpu_flags())}"
)
passes = sum(run.get("passes", 1) for run in g), sum(run.get("passes", 1) for run in p)
paired = all(run.get("paired") for run in g + p) and len(g) == len(p) == 1
if paired:
    print(f"glassbox and PyTorch: {passes[0]} passes each, taken in turn; best pass of each side")
else:
    print(f"glassbox: best of {passes[0]} passes in {len(g)} rounds; PyTorch: best of {passes[1]} passes in {len(p)} rounds")
rows = [
    ("forward, 7 hidden states", "forward_only", "tokens_per_s", 1.3),
    ("  (median batch)", "forward_only", "median_batch_tokens_per_s", 1.3),
    ("end to end to Parquet", "end_to_end_parquet", "tokens_per_s", 1.5),
]
if forward_only:
    hooks = len(g[0].get("hooks", [])) or "all"
    # The decoder forward target (SmolLM2: ≥ 1.3× PyTorch).
    rows = [(f"forward, {hooks} hidden states", "forward_only", "tokens_per_s", 1.3)]
print(f"{'tokens/s (bs 32 x 128)':<28}{'glassbox':>10}{'pytorch':>10}{'ratio':>8}{'target':>8}" + ("" if paired else "  per round"))
for name, section, key, target in rows:
    ours, theirs = best(g, section, key), best(p, section, key)
    rounds = "" if paired else "  " + " ".join(f"{a[section][key] / b[section][key]:.2f}" for a, b in zip(g, p))
    goal = f"{target:>8.2f}" if target else f"{'':>8}"
    print(f"{name:<28}{ours:>10.0f}{theirs:>10.0f}{ours / theirs:>8.2f}{goal}{rounds}")
if paired:
    for name, section in [("forward", "forward_only"), ("end to end", "end_to_end_parquet")]:
        if not (g[0].get(section) and p[0].get(section)):
            continue
        pairs = [a / b for a, b in zip(g[0][section]["passes_tokens_per_s"], p[0][section]["passes_tokens_per_s"])]
        print(
            f"  {name}, paired passes: median ratio {statistics.median(pairs):.2f} "
            f"(range {min(pairs):.2f}-{max(pairs):.2f}): " + " ".join(f"{r:.2f}" for r in pairs)
        )
g_rss, p_rss = max(run["peak_rss_mib"] for run in g), max(run["peak_rss_mib"] for run in p)
print(f"{'peak RSS (MiB)':<28}{g_rss:>10.0f}{p_rss:>10.0f}{g_rss / p_rss:>8.2f}")
if len(sys.argv) == 5:
    small, large = (json.load(open(a)) for a in sys.argv[3:5])
    growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    print(
        f"peak RSS, extraction of {small['tokens']} vs {large['tokens']} tokens: "
        f"{small['peak_rss_mib']:.0f} vs {large['peak_rss_mib']:.0f} MiB ({growth:+.1%}; target within ±10%, ≤ 1024 MiB)"
    )
