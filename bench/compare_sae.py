#!/usr/bin/env python3
"""Prints glassbox vs PyTorch / SAELens TopK SAE training throughput side by side.

Usage: compare_sae.py GLASSBOX.json PYTORCH.json
"""
import json
import sys

g = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2]))
w = g["workload"]
print(f"TopK SAE training: d_in {w['d_in']} -> {w['width']} latents, k = {w['k']}, batch {w['batch']}, "
      f"{w['steps']} timed steps, {g['threads']} threads (torch {p['torch_version']}"
      f"{', SAELens ' + p['sae_lens_version'] if 'sae_lens_version' in p else ''})")
ours = g["tokens_per_second"]
print(f"{'':<26}{'tokens/s':>10}{'s/step':>9}{'glassbox is':>14}")
print(f"{'glassbox':<26}{ours:>10.0f}{g['seconds_per_step']:>9.3f}")
for name, r in p["loops"].items():
    print(f"{name:<26}{r['tokens_per_second']:>10.0f}{r['seconds_per_step']:>9.3f}{ours / r['tokens_per_second']:>13.2f}x")
if "saelens_error" in p:
    print(f"SAELens not measured: {p['saelens_error']}")
