#!/usr/bin/env bash
# `just bench-attribution-text [texts]`: integrated gradients (64 Gauss–Legendre steps, zero token
# embeddings) of a probe's class logit over N texts of 128 tokens on MiniLM, by glassbox
# (`glassbox attribute`, model loading included, nothing else evaluated) and by Captum 0.9 on
# PyTorch (loading excluded), one after the other. The texts are the default set's sentences
# joined by topic until past 128 tokens; the probe (topic, blocks.5, mean pool) is glassbox's,
# and Captum reads its weights from the run. Prints one JSON object: seconds, peak RSS, the
# ratios, IG completeness on both sides, CPU flags.
set -euo pipefail
n="${1:-32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bin="$root/target/debug/glassbox"
"$root/.venv/bin/python" - "$root/data/sets/default.jsonl" "$tmp/texts.jsonl" "$n" <<'PY'
import json, random, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
by_topic = {}
for line in open(src):
    r = json.loads(line)
    by_topic.setdefault(r["topic"], []).append(r["text"])
rng = random.Random(0)
topics = sorted(by_topic)
# n texts to explain first, then enough more of every topic for the probe to be fitted.
count = max(n, 24) + 4 * 24
with open(out, "w") as f:
    for i in range(count):
        topic = topics[i % len(topics)]
        words = []
        while len(words) < 170:
            words += rng.choice(by_topic[topic]).split()
        f.write(json.dumps({"text": " ".join(words), "topic": topic}) + "\n")
PY
"$bin" extract --quiet --model sentence-transformers/all-MiniLM-L6-v2 --data "$tmp/texts.jsonl" \
    --hooks blocks.5.hook_resid_post --pools mean --no-token-level --max-length 128 --run "$tmp/run" > /dev/null
"$bin" probe --quiet --run "$tmp/run" --label topic --no-neurons --bootstrap 10 > /dev/null
start=$(date +%s.%N)
"$root/.venv/bin/python" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL)
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))' \
    "$tmp/rss_kb" "$bin" attribute --quiet --run "$tmp/run" --target probe:topic=food@blocks.5.hook_resid_post \
    --method ig --steps 64 --rule gausslegendre --curve-points 0 --sensitivity-samples 0 \
    --no-sanity --max-examples "$n" --batch-size 16
end=$(date +%s.%N)
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$root/.venv-ref/bin/python" "$root/bench/attribution_text_reference.py" \
    "$tmp/run" "$tmp/texts.jsonl" "$n" food 16 2>/dev/null > "$tmp/captum.json"
"$root/.venv/bin/python" - "$tmp" "$start" "$end" "$n" <<'PY'
import json, sys
import pyarrow.parquet as pq
tmp, start, end, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
captum = json.loads(open(f"{tmp}/captum.json").read().strip().splitlines()[-1])
ours = end - start
rss = int(open(f"{tmp}/rss_kb").read()) / 1024
errors = sorted(r["completeness_error"] for r in pq.read_table(f"{tmp}/run/attributions/summary.parquet").to_pylist())
flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags") for f in l.split()
                if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")})
print(json.dumps({
    "texts": n, "tokens_per_text": sorted(set(captum["tokens"])), "steps": 64,
    "glassbox_seconds": round(ours, 2), "captum_seconds": round(captum["seconds"], 2),
    "speedup": round(captum["seconds"] / ours, 2),
    "glassbox_peak_rss_mb": round(rss), "captum_peak_rss_mb": round(captum["peak_rss_mb"]),
    "rss_ratio": round(rss / captum["peak_rss_mb"], 2),
    "completeness_error_median": {"glassbox": round(errors[len(errors) // 2], 5),
                                  "captum": round(captum["completeness_error_median"], 5)},
    "torch_threads": captum["threads"], "cpu_flags": flags,
}, indent=1))
PY
