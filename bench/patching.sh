#!/usr/bin/env bash
# `just bench-patching [pairs]`: a full residual sweep (every blocks.L.hook_resid_pre × every
# position, denoising, logit difference) of SmolLM2-135M over the first N IOI pairs, by glassbox
# and by a plain PyTorch forward-hook loop on transformers, in the same run, one after the other.
# Prints one JSON object: both sides' seconds (model loading excluded on the PyTorch side,
# included on glassbox's), the ratio, both sides' peak RSS next to the model's f32 size (the
# target: glassbox within model + 1 GB), the largest metric disagreement, and the CPU flags.
set -euo pipefail
n="${1:-2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
head -n "$n" "$root/data/sets/ioi_pairs.jsonl" > "$tmp/pairs.jsonl"
start=$(date +%s.%N)
# Through Python only to read the child's peak RSS (getrusage) once it has exited.
"$root/.venv/bin/python" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))' \
    "$tmp/rss_kb" "$root/target/debug/glassbox" patch --quiet \
    --model HuggingFaceTB/SmolLM2-135M-Instruct-GGUF --pairs "$tmp/pairs.jsonl" \
    --hooks 'blocks.*.hook_resid_pre' --no-atp --run "$tmp/run"
end=$(date +%s.%N)
"$root/.venv-ref/bin/python" "$root/bench/patching_reference.py" "$tmp/pairs.jsonl" "$n" \
    2>/dev/null > "$tmp/torch.json"
"$root/.venv/bin/python" - "$tmp" "$start" "$end" <<'PY'
import json, sys, pyarrow.parquet as pq
tmp, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
torch = json.load(open(f"{tmp}/torch.json"))
rows = pq.read_table(f"{tmp}/run/patching/results.parquet").to_pylist()
# PyTorch's order: pair, layer, position.
rows.sort(key=lambda r: (r["pair"], r["layer"], r["position"]))
ours = [r["metric"] for r in rows]
gap = max(abs(r["metric_clean"] - r["metric_corrupted"]) for r in rows)
flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags") for f in l.split()
                if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")})
rss_mb = int(open(f"{tmp}/rss_kb").read()) / 1024
model_mb = torch["parameters"] * 4 / 2**20
print(json.dumps({
    "patched_runs": len(ours), "pytorch_runs": torch["runs"],
    "glassbox_peak_rss_mb": round(rss_mb), "pytorch_peak_rss_mb": round(torch["peak_rss_mb"]),
    "model_f32_mb": round(model_mb),
    "rss_over_model_mb": round(rss_mb - model_mb),
    "glassbox_seconds": round(end - start, 2), "pytorch_seconds": round(torch["seconds"], 2),
    "speedup": round(torch["seconds"] / (end - start), 2),
    "max_metric_difference_over_gap": max(abs(a - b) for a, b in zip(ours, torch["metrics"])) / gap,
    "cpu_flags": flags,
}, indent=1))
PY
