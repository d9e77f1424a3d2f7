#!/usr/bin/env bash
# `just bench-attribution [images]`: integrated gradients (64 Gauss–Legendre steps, zero
# baseline, each image's top class) over N 224×224 images on EfficientNet-Lite0, by glassbox
# (`glassbox attribute`, model loading included, nothing else evaluated) and by Captum 0.9 on
# PyTorch (loading excluded), on the same image files, one after the other. Prints one JSON
# object: both sides' seconds and peak RSS, the ratios, the CPU flags.
set -euo pipefail
n="${1:-32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bin="$root/target/debug/glassbox"
per=$(( (n + 3) / 4 ))
"$bin" textures --quiet --out "$tmp/images" --kinds stripes,dots,checkerboard,zigzag \
    --per-class "$per" --size 256 --seed 3 > /dev/null
"$bin" extract --quiet --model glassbox-offline/efficientnet-lite0 --allow-pickle \
    --data "$tmp/images" --hooks hook_pooled --run "$tmp/run" > /dev/null
start=$(date +%s.%N)
"$root/.venv/bin/python" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))' \
    "$tmp/rss_kb" "$bin" attribute --quiet --run "$tmp/run" --target class:predicted \
    --method ig --steps 64 --rule gausslegendre --curve-points 0 --sensitivity-samples 0 \
    --no-sanity --max-examples "$n" --batch-size 16
end=$(date +%s.%N)
mapfile -t files < <(find "$tmp/images" -name '*.png' | sort | head -n "$n")
"$root/.venv-ref/bin/python" "$root/bench/attribution_reference.py" "${files[@]}" 16 \
    2>/dev/null > "$tmp/captum.json"
"$root/.venv/bin/python" - "$tmp" "$start" "$end" "$n" <<'PY'
import json, sys
tmp, start, end, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
# The model package prints a line of its own on stdout: the JSON is the last line.
captum = json.loads(open(f"{tmp}/captum.json").read().strip().splitlines()[-1])
ours = end - start
rss = int(open(f"{tmp}/rss_kb").read()) / 1024
flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags") for f in l.split()
                if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")})
print(json.dumps({
    "images": n, "steps": 64,
    "glassbox_seconds": round(ours, 2), "captum_seconds": round(captum["seconds"], 2),
    "speedup": round(captum["seconds"] / ours, 2),
    "glassbox_peak_rss_mb": round(rss), "captum_peak_rss_mb": round(captum["peak_rss_mb"]),
    "rss_ratio": round(rss / captum["peak_rss_mb"], 2),
    "torch_threads": captum["threads"], "cpu_flags": flags,
}, indent=1))
PY
