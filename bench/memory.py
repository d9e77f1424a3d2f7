#!/usr/bin/env python3
"""Peak resident memory of `glassbox extract` on a generated big checkpoint (bench/
big_checkpoint.py), for several numbers of texts: the figure the issue bounds is
peak RSS ≤ checkpoint bytes × 1.1 + 1 GB, flat in the number of texts. Peak RSS is the child's
maximum resident set size as GNU `time -f %M` reports it (the kernel's accounting, so no sampling
can miss it). Prints one JSON object.

Each text joins ten consecutive texts of SOURCE_JSONL (cyclically), so every one fills the
128-token context.

Usage: memory.py GLASSBOX CHECKPOINT_DIR SOURCE_JSONL N[,N...] OUT_JSON [EXTRA_ARGS...]
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu import cpu_flags

HOOKS = ",".join(["hook_embed", "blocks.0.hook_resid_post", "blocks.3.hook_resid_post",
                  "blocks.6.hook_attn_out", "blocks.9.hook_mlp_out", "blocks.12.hook_resid_post",
                  "blocks.15.mlp.hook_post", "ln_final.hook_normalized"])


def checkpoint_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def main():
    glassbox, ckpt, texts, counts, out = sys.argv[1:6]
    extra = sys.argv[6:]
    source = [json.loads(l)["text"] for l in Path(texts).read_text().splitlines() if l.strip()]
    lines = [json.dumps({"text": " ".join(source[(i * 10 + j) % len(source)] for j in range(10))})
             for i in range(max(int(c) for c in counts.split(",")))]
    ckpt_bytes = checkpoint_bytes(ckpt)
    runs = []
    for n in [int(c) for c in counts.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "texts.jsonl"
            data.write_text("\n".join(lines[:n]) + "\n")
            rss = Path(tmp) / "rss"
            start = time.time()
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", str(rss), glassbox, "--quiet", "extract", "--model", ckpt, "--data", str(data),
                 "--hooks", HOOKS, "--max-length", "128", "--batch-size", "8",
                 "--pools", "mean", "--run", str(Path(tmp) / "run"), *extra],
                capture_output=True, text=True)
            seconds = time.time() - start
            if proc.returncode != 0:
                sys.exit(f"extract failed on {n} texts:\n{proc.stderr}")
            peak_kb = int(rss.read_text().split()[-1])
            runs.append({"texts": n, "peak_rss_bytes": peak_kb * 1024,
                         "seconds": round(seconds, 1)})
            print(json.dumps(runs[-1]), file=sys.stderr)
    bound = ckpt_bytes * 1.1 + (1 << 30)
    result = {
        "checkpoint": ckpt, "checkpoint_bytes": ckpt_bytes, "bound_bytes": int(bound),
        "runs": runs, "within_bound": all(r["peak_rss_bytes"] <= bound for r in runs),
        "cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(), "extra_args": extra,
    }
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
