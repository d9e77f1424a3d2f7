#!/usr/bin/env python3
"""`just bench-gemma`: glassbox's forward on a Gemma-2-2B-shaped checkpoint with bf16 weights
(bench/big_checkpoint.py) against PyTorch running the same checkpoint in bfloat16 and in
float32, the same texts, batch and hooks, in the same run. Prints one JSON object.

glassbox: `glassbox extract` (8 hooks, mean pools only, `--no-token-level`: what the PyTorch
side computes) over WARM texts and over WARM + TIMED texts;
the difference of the two walls is the TIMED texts' cost, loading and the first batch excluded.
Once with f32 products (`--compute-dtype f32`, the default) and once with bf16 products
(`--compute-dtype bf16`: what PyTorch's bfloat16 run computes, with f32 sums and an f32 stream).
PyTorch (bench/pytorch_gemma.py): loads, runs WARM texts untimed, times the TIMED texts.
Every text fills the 128-token context, so both sides count TIMED × 128 tokens.

With ROUNDS > 1 all four sides run again in each round and the JSON gives each round's ratios,
their median and their range (a round's ratio is a same-minutes pair).

Usage: gemma_speed.py GLASSBOX PYTHON CHECKPOINT_DIR SOURCE_JSONL TIMED OUT_JSON [ROUNDS]
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu import cpu_flags
from memory import HOOKS

BATCH, MAX_LENGTH, WARM = 8, 128, 8


def texts(source, n):
    lines = [json.loads(l)["text"] for l in Path(source).read_text().splitlines() if l.strip()]
    return [json.dumps({"text": " ".join(lines[(i * 10 + j) % len(lines)] for j in range(10))})
            for i in range(n)]


def glassbox_wall(glassbox, ckpt, lines, tmp, compute):
    data = Path(tmp) / f"texts-{len(lines)}.jsonl"
    data.write_text("\n".join(lines) + "\n")
    run = Path(tmp) / f"run-{compute}-{len(lines)}"
    # A fresh run each time: an earlier round's run would be up to date and skip the work.
    shutil.rmtree(run, ignore_errors=True)
    start = time.time()
    proc = subprocess.run(
        [glassbox, "--quiet", "extract", "--model", ckpt, "--data", str(data), "--hooks", HOOKS,
         "--max-length", str(MAX_LENGTH), "--batch-size", str(BATCH), "--pools", "mean", "--no-token-level",
         "--compute-dtype", compute, "--run", str(run)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"glassbox extract ({compute} products) failed on {len(lines)} texts:\n{proc.stderr}")
    return time.time() - start


def one_round(glassbox, python, ckpt, lines, tmp, tokens, timed):
    """Both glassbox sides, then both PyTorch sides, one after the other."""
    ours = []
    for compute in ("f32", "bf16"):
        warm = glassbox_wall(glassbox, ckpt, lines[:WARM], tmp, compute)
        full = glassbox_wall(glassbox, ckpt, lines, tmp, compute)
        ours.append({"side": "glassbox", "weights": "bf16 (as stored)", "products": compute,
                     "warm_seconds": round(warm, 2), "seconds": round(full - warm, 2),
                     "tokens_per_second": round(tokens / (full - warm), 1)})
        print(json.dumps(ours[-1]), file=sys.stderr)
    data = Path(tmp) / "texts-all.jsonl"
    data.write_text("\n".join(lines) + "\n")
    theirs = []
    for dtype in ("bfloat16", "float32"):
        proc = subprocess.run([python, str(Path(__file__).with_name("pytorch_gemma.py")), ckpt,
                               str(data), dtype, str(BATCH), str(MAX_LENGTH)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"PyTorch ({dtype}) failed:\n{proc.stderr}")
        theirs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(theirs[-1]), file=sys.stderr)
    fastest = max(theirs, key=lambda r: r["tokens_per_second"])
    ratios = {f"{o['products']}_products": round(o["tokens_per_second"] / fastest["tokens_per_second"], 3)
              for o in ours}
    print(f"round: {json.dumps(ratios)} of PyTorch {fastest['dtype']}", file=sys.stderr)
    return {"glassbox": ours, "pytorch": theirs, "pytorch_fastest_dtype": fastest["dtype"],
            "speedup_vs_fastest_pytorch": ratios}


def main():
    glassbox, python, ckpt, source, timed, out = sys.argv[1:7]
    rounds = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    timed = int(timed)
    if timed % BATCH:
        sys.exit(f"TIMED must be a multiple of the batch size {BATCH}")
    lines = texts(source, WARM + timed)
    tokens = timed * MAX_LENGTH
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_round(glassbox, python, ckpt, lines, tmp, tokens, timed)
                   for _ in range(rounds)]
    # Each round's ratio is a same-minutes pair; the median of the rounds is what to quote (the
    # shared machines drift by ±10-25% over minutes, PyTorch's own figure included).
    keys = results[0]["speedup_vs_fastest_pytorch"].keys()
    result = {
        "checkpoint": ckpt, "texts_timed": timed, "tokens_timed": tokens, "batch": BATCH,
        "rounds": results,
        "speedup_vs_fastest_pytorch": {
            k: statistics.median(r["speedup_vs_fastest_pytorch"][k] for r in results) for k in keys},
        "speedup_range": {
            k: [min(r["speedup_vs_fastest_pytorch"][k] for r in results),
                max(r["speedup_vs_fastest_pytorch"][k] for r in results)] for k in keys},
        "cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
    }
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
