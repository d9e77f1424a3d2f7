#!/usr/bin/env bash
# `just bench-remote [copies]`: the object store's overhead. The same MiniLM extraction (6 residual
# hooks, token rows and mean pools; the default texts repeated `copies` times), then a probe and a
# dictionary training on it, into a local folder and into S3 — moto's standalone server on this
# machine, through the same client code a cloud bucket gets. The S3 run is read back with boto3
# and compared byte for byte with the local one. Prints one JSON object: wall seconds per stage
# on each, the ratios, the run's size and the CPU flags. moto answers from memory on localhost,
# so the figures are the client's and the protocol's overhead, not a network's.
set -euo pipefail
copies="${1:-4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
py="$root/.venv/bin/python"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$tmp/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$tmp"' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true GLASSBOX_REMOTE_CACHE="$tmp/cache"
for _ in $(seq 1 100); do "$py" -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.2; done
"$py" -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='bench')"
bin="$root/target/debug/glassbox"
for _ in $(seq 1 "$copies"); do cat "$root/data/sets/default.jsonl"; done > "$tmp/texts.jsonl"
now() { date +%s.%N; }
declare -A secs
for where in local s3; do
    run="$tmp/local"; [ "$where" = s3 ] && run="s3://bench/runs/minilm"
    t0=$(now)
    "$bin" extract --quiet --model sentence-transformers/all-MiniLM-L6-v2 --data "$tmp/texts.jsonl" \
        --hooks 'blocks.*.hook_resid_post' --pools mean --shard-size 32 --run "$run" > /dev/null 2>&1
    t1=$(now)
    "$bin" probe --quiet --label topic --no-neurons --bootstrap 50 --run "$run" > /dev/null 2>&1
    t2=$(now)
    "$bin" dictionary --quiet --hook blocks.3.hook_resid_post --width 512 --k 16 --run "$run" > /dev/null 2>&1
    t3=$(now)
    secs[${where}_extract]="$t1 - $t0"; secs[${where}_probe]="$t2 - $t1"; secs[${where}_dictionary]="$t3 - $t2"
done
"$py" - "$AWS_ENDPOINT_URL" "$tmp/downloaded" <<'PY'
import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="runs/minilm/"):
    for item in page.get("Contents", []):
        path = os.path.join(sys.argv[2], item["Key"][len("runs/minilm/"):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file("bench", item["Key"], path)
PY
same=true
(cd "$tmp/local" && find . -type f ! -name manifest.json ! -name '.*' | sort) > "$tmp/a.list"
(cd "$tmp/downloaded" && find . -type f ! -name manifest.json ! -name '.*' | sort) > "$tmp/b.list"
cmp -s "$tmp/a.list" "$tmp/b.list" || same=false
while read -r f; do cmp -s "$tmp/local/$f" "$tmp/downloaded/$f" || same=false; done < "$tmp/a.list"
mirror_parts=$(find "$tmp/cache" -name 'part-*.parquet' | wc -l)
bytes=$(du -sb "$tmp/local" | cut -f1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|amx_tile' | sort | paste -sd, -)
"$py" - <<PY
import json
s = {k: v for k, v in {
    "local_extract": ${secs[local_extract]}, "s3_extract": ${secs[s3_extract]},
    "local_probe": ${secs[local_probe]}, "s3_probe": ${secs[s3_probe]},
    "local_dictionary": ${secs[local_dictionary]}, "s3_dictionary": ${secs[s3_dictionary]},
}.items()}
print(json.dumps({
    "examples": 300 * $copies, "hooks": 6, "run_bytes": $bytes, "cores": $(nproc),
    "cpu_flags": "$flags".split(","), "server": "moto_server (localhost)",
    "seconds": {k: round(v, 2) for k, v in s.items()},
    "s3_over_local": {st: round(s["s3_" + st] / s["local_" + st], 2) for st in ("extract", "probe", "dictionary")},
    "identical_to_local_run": "$same" == "true",
    "parts_copied_into_the_mirror": $mirror_parts,
}, indent=1))
PY
