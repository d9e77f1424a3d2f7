#!/usr/bin/env python3
"""Prints glassbox vs PyTorch ratios from the two bench JSON files, plus the memory runs.

Usage: compare.py GLASSBOX.json PYTORCH.json [MEMORY_SMALL.json MEMORY_LARGE.json]
"""
import json
import sys

g = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2]))
rows = [
    ("forward, 7 hidden states", g["forward_only"]["tokens_per_s"], p["forward_only"]["tokens_per_s"], 1.15),
    ("  (median batch)", g["forward_only"]["median_batch_tokens_per_s"], p["forward_only"]["median_batch_tokens_per_s"], 1.15),
    ("end to end to Parquet", g["end_to_end_parquet"]["tokens_per_s"], p["end_to_end_parquet"]["tokens_per_s"], 1.3),
]
print(f"{'tokens/s (bs 32 x 128)':<28}{'glassbox':>10}{'pytorch':>10}{'ratio':>8}{'target':>8}")
for name, ours, theirs, target in rows:
    print(f"{name:<28}{ours:>10.0f}{theirs:>10.0f}{ours / theirs:>8.2f}{target:>8.2f}")
print(f"{'peak RSS (MiB)':<28}{g['peak_rss_mib']:>10.0f}{p['peak_rss_mib']:>10.0f}{g['peak_rss_mib'] / p['peak_rss_mib']:>8.2f}")
if len(sys.argv) == 5:
    small, large = (json.load(open(a)) for a in sys.argv[3:5])
    growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    print(
        f"peak RSS, extraction of {small['tokens']} vs {large['tokens']} tokens: "
        f"{small['peak_rss_mib']:.0f} vs {large['peak_rss_mib']:.0f} MiB ({growth:+.1%}; target within ±10%, ≤ 1024 MiB)"
    )
