#!/usr/bin/env bash
# `just bench-shards-attribute [images]`: input attributions of EfficientNet-Lite0 (the converted
# real weights from `just models`) on generated 224-px textures — class:predicted with the image
# methods' defaults but 16 IG steps, 8 curve points and one sensitivity copy, no randomisation
# check — run as 1 process and as 2 shard workers started together (`--part-size 1`), and again
# with each limited to one thread (RAYON_NUM_THREADS=1). Every sharded run's attributions are
# compared byte for byte with the single-process run's. Prints one JSON object with the wall
# seconds, speed-ups and CPU flags.
set -euo pipefail
images="${1:-4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bin="$root/target/debug/glassbox"
per_class=$(( (images + 1) / 2 ))
"$bin" textures --out "$tmp/images" --kinds stripes,dots --per-class "$per_class" --size 224 --seed 0 > /dev/null
"$bin" extract --quiet --allow-pickle --model glassbox-offline/efficientnet-lite0 --data "$tmp/images" \
    --hooks hook_head --run "$tmp/base" > /dev/null
args=(attribute --quiet --target class:predicted --max-examples "$images" --part-size 1 --no-sanity
      --steps 16 --curve-points 8 --sensitivity-samples 1)
now() { date +%s.%N; }
run_workers() { # run_workers RUN N THREADS: N workers at once (N = 0: one process, no --shard)
    local run="$1" n="$2" threads="$3" pids=()
    cp -r "$tmp/base" "$run"
    if [ "$n" = 0 ]; then
        RAYON_NUM_THREADS="$threads" "$bin" "${args[@]}" --run "$run" > /dev/null
        return
    fi
    for i in $(seq 0 $((n - 1))); do
        RAYON_NUM_THREADS="$threads" "$bin" "${args[@]}" --run "$run" --shard "$i/$n" > /dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}
same() { # same A B: byte-identical attributions (maps, tables, page, inputs)
    (cd "$1/attributions" && find . -type f | sort) > "$tmp/a.list"
    (cd "$2/attributions" && find . -type f | sort) > "$tmp/b.list"
    cmp -s "$tmp/a.list" "$tmp/b.list" || { echo false; return; }
    while read -r f; do cmp -s "$1/attributions/$f" "$2/attributions/$f" || { echo false; return; }; done < "$tmp/a.list"
    echo true
}
cores=$(nproc)
declare -A secs
for config in "single:0:$cores" "two:2:$cores" "single1:0:1" "two1:2:1"; do
    IFS=: read -r name n threads <<< "$config"
    t0=$(now); run_workers "$tmp/$name" "$n" "$threads"; t1=$(now)
    secs[$name]="$t1 - $t0"
done
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|amx_tile' | sort | paste -sd, -)
"$root/.venv/bin/python" - <<PY
import json
s = {"single": ${secs[single]}, "two": ${secs[two]}, "single1": ${secs[single1]}, "two1": ${secs[two1]}}
print(json.dumps({
    "stage": "attribute", "model": "efficientnet-lite0", "images": $images, "cores": $cores,
    "cpu_flags": "$flags".split(","),
    "one_process_s": round(s["single"], 2), "two_workers_s": round(s["two"], 2),
    "speedup_two_workers": round(s["single"] / s["two"], 2),
    "one_process_one_thread_s": round(s["single1"], 2), "two_workers_one_thread_each_s": round(s["two1"], 2),
    "speedup_two_workers_one_thread_each": round(s["single1"] / s["two1"], 2),
    "identical_to_single_process": {"two": "$(same "$tmp/single" "$tmp/two")" == "true", "two_one_thread": "$(same "$tmp/single" "$tmp/two1")" == "true"},
}, indent=1))
PY
