#!/usr/bin/env bash
# `just bench-dissect [images]`: Network Dissection of every channel of four EfficientNet-Lite0
# hooks (56×56×24, 28×28×40, 14×14×112 and the 7×7×1280 head) over N masked 224×224
# composites (`glassbox textures --masks`), 100 shuffles for the baseline. Extraction is timed
# apart; the dissect stage's seconds and peak RSS are what the issue asks for, with the store's
# size beside them (the stage streams it twice; its memory is the per-unit top-quantile heaps,
# the masks as bitmaps and one image's maps). Prints one JSON object with the CPU flags.
set -euo pipefail
n="${1:-500}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bin="$root/target/debug/glassbox"
per=$(( (n + 3) / 4 ))
"$bin" textures --masks --out "$tmp/masked" --per-class "$per" --size 224 --seed 7 > /dev/null
timed() { # timed OUT_PREFIX CMD…: seconds and peak RSS (kB) of CMD
    local out="$1"; shift
    "$root/.venv/bin/python" -c 'import resource, subprocess, sys, time
t = time.time()
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)
open(sys.argv[1], "w").write(f"{time.time() - t} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")' \
        "$out" "$@"
}
timed "$tmp/extract" "$bin" extract --quiet --model glassbox-offline/efficientnet-lite0 \
    --allow-pickle --data "$tmp/masked/dataset.jsonl" --run "$tmp/run" --batch-size 16 \
    --pools mean --hooks stages.1.blocks.1.hook_out,stages.2.blocks.1.hook_out,stages.4.blocks.2.hook_out,hook_head
timed "$tmp/dissect" "$bin" dissect --quiet --run "$tmp/run" --permutations 100
"$root/.venv/bin/python" - "$tmp" "$n" <<'PY'
import json, os, sys
tmp, n = sys.argv[1], int(sys.argv[2])
def read(name):
    seconds, rss = open(f"{tmp}/{name}").read().split()
    return round(float(seconds), 2), round(int(rss) / 1024)
store = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(f"{tmp}/run/activations") for f in fs)
units = __import__("pyarrow.parquet", fromlist=["x"]).read_table(f"{tmp}/run/dissection/hooks.parquet").to_pylist()
flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags") for f in l.split()
                if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")})
(xs, xr), (ds, dr) = read("extract"), read("dissect")
print(json.dumps({
    "images": n, "hooks": [h["hook"] for h in units], "units": sum(h["units"] for h in units),
    "labelled": {h["hook"]: h["labelled"] for h in units}, "permutations": 100,
    "extract_seconds": xs, "extract_peak_rss_mb": xr,
    "dissect_seconds": ds, "dissect_peak_rss_mb": dr,
    "store_mb": round(store / 2**20), "cores": os.cpu_count(), "cpu_flags": flags,
}, indent=1))
PY
