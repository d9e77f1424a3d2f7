#!/usr/bin/env python3
"""Prints glassbox vs PyTorch / SAELens SAE training throughput side by side, architecture by
architecture (each PyTorch loop is compared with glassbox's run of the same architecture).

Usage: compare_sae.py GLASSBOX.json PYTORCH.json
"""
import json
import sys

g = json.load(open(sys.argv[1]))
p = json.load(open(sys.argv[2]))
w = g["workload"]
print(f"SAE training: d_in {w['d_in']} -> {w['width']} latents, k = {w['k']}, batch {w['batch']}, "
      f"{w['steps']} timed steps, {g['threads']} threads (torch {p['torch_version']}"
      f"{', SAELens ' + p['sae_lens_version'] if 'sae_lens_version' in p else ''}); "
      f"CPU flags {' '.join(g['cpu_flags']) or 'none'}, glassbox SIMD {g['simd_level']}")
print(f"{'':<40}{'tokens/s':>10}{'s/step':>9}{'final L0':>10}{'glassbox is':>14}")
for arch, ours in g["runs"].items():
    print(f"{'glassbox ' + arch:<40}{ours['tokens_per_second']:>10.0f}{ours['seconds_per_step']:>9.3f}"
          f"{ours['final_l0']:>10.1f}")
    # glassbox's JumpReLU from SAELens's own 0.01 start is compared with SAELens's default too.
    for name, r in p["loops"].items():
        if r.get("architecture") == arch.removesuffix("_saelens_start"):
            ratio = ours["tokens_per_second"] / r["tokens_per_second"]
            print(f"{'  ' + name:<40}{r['tokens_per_second']:>10.0f}{r['seconds_per_step']:>9.3f}"
                  f"{'':>10}{ratio:>13.2f}x")
if "saelens_error" in p:
    print(f"SAELens not measured: {p['saelens_error']}")
