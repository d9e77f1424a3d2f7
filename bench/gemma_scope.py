#!/usr/bin/env python3
"""`just bench-gemma-scope`: a Gemma Scope SAE at its real size (d_in 2304, 16,384 latents,
JumpReLU; `params.npz` with random weights in Gemma Scope's layout, generated here, never
committed) loaded by `glassbox dictionary --load-sae` on a synthetic store of TOKENS rows at
d = 2304 (bench/src/bin/glassbox-bench-synthetic-run.rs), the features explained (evaluation,
top examples and contexts, label correlations, sparse probing). Reports wall time and peak RSS
(GNU `time -f %M`) against the bound weights + shuffle buffer + 1 GB, with the CPU's flags.

Usage: gemma_scope.py GLASSBOX SYNTHETIC_RUN_BIN OUT_DIR TOKENS
"""
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cpu import cpu_flags

D, M = 2304, 16384
HOOK = "blocks.20.hook_resid_post"
# The run's recorded model: the dictionary stage reloads it for causal-LM extras; MiniLM (from
# `just models`) has no unembedding, so it adds a load and nothing else.
MINILM = "sentence-transformers/all-MiniLM-L6-v2@b1ae82044ee8447606cb57ea10a0f9b24659981b"


def params(folder: Path):
    """Random weights shaped and laid out as Gemma Scope's: unit-norm encoder columns and
    decoder rows, thresholds that leave ~60 of 16,384 latents active on the store's rows."""
    if (folder / "params.npz").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w_enc = rng.standard_normal((D, M), dtype=np.float32)
    w_enc /= np.linalg.norm(w_enc, axis=0, keepdims=True)
    w_dec = rng.standard_normal((M, D), dtype=np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    np.savez(folder / "params.npz", W_enc=w_enc, W_dec=w_dec,
             b_enc=np.zeros(M, np.float32), b_dec=(0.1 * rng.standard_normal(D)).astype(np.float32),
             threshold=np.full(M, 3.0, np.float32))


def main():
    glassbox, synthetic, out, tokens = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    sae = out / "gemma-scope-2b-pt-res" / "layer_20" / "width_16k" / "average_l0_60"
    params(sae)
    run = out / f"run-{tokens}"
    if not (run / "manifest.json").exists():
        subprocess.run([synthetic, "--run", str(run), "--tokens", str(tokens), "--width", str(D),
                        "--hook", HOOK, "--model", MINILM], check=True, stderr=subprocess.DEVNULL)
    rss = out / f"rss-{tokens}"
    start = time.time()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), glassbox, "--quiet",
                           "dictionary", "--run", str(run), "--load-sae", str(sae), "--no-pca",
                           "--force", "--json"], capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"glassbox dictionary failed:\n{proc.stderr}")
    peak = int(rss.read_text().split()[-1]) * 1024
    weights = 2 * D * M * 4 + (2 * M + D) * 4
    metrics = json.loads((run / "dictionary" / f"hook={HOOK}" / "metrics.json").read_text())
    result = {
        "bench": "gemma-scope-16k-explain",
        "tokens": tokens,
        "d_in": D,
        "latents": M,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / seconds),
        "peak_rss_bytes": peak,
        "weights_bytes": weights,
        # Loading a pretrained SAE trains nothing: no shuffle buffer is allocated.
        "bound_bytes": weights + 2**30,
        "within_bound": peak <= weights + 2**30,
        "l0": metrics["sae"]["l0"],
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
    }
    (out / f"gemma-scope-{tokens}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
