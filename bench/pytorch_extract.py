#!/usr/bin/env python3
"""PyTorch + transformers + pyarrow reference for `just bench` (the Python stack users know).

On the same texts as glassbox-bench (batch 32 x 128 tokens, all-MiniLM-L6-v2 from the HF
cache): (1) forward with output_hidden_states=True, all 7 hidden states copied to numpy, on
texts tokenised beforehand (as glassbox-bench's forward); (2) end to end, the work glassbox's
timed extraction does: tokenising the texts, the forward, and writing every layer's token rows
(example_id, position, act: fixed_size_list<float32>[384], padding dropped) and its mean and
[CLS] pools per example to Parquet with pyarrow, uncompressed, like glassbox's store. (Until
2026-12-06 the end-to-end pass took pre-tokenised batches and wrote no pools.) Each is measured over PASSES passes (default 3) and the best pass is
reported, as glassbox-bench does (every pass is in the JSON). Prints JSON; peak RSS from
getrusage.

With --serve instead of PASSES: after loading, prints `ready` and runs one pass per line read
from stdin (`forward` or `e2e`), answering each with a JSON line; at end of input writes
OUT.json as usual. bench/paired.py alternates these passes with glassbox-bench --serve.

Usage: pytorch_extract.py TEXTS.jsonl OUT.json [PASSES | --serve]
"""
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BATCH, SEQ = 32, 128
SERVE = sys.argv[3:4] == ["--serve"]
PASSES = int(sys.argv[3]) if len(sys.argv) > 3 and not SERVE else 3

texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL)
model = transformers.AutoModel.from_pretrained(MODEL).eval()
batches = [
    tokenizer(texts[i : i + BATCH], padding=True, truncation=True, max_length=SEQ, return_tensors="pt")
    for i in range(0, len(texts), BATCH)
]
n_tokens = int(sum(b["attention_mask"].sum() for b in batches))


def forward(batch):
    with torch.inference_mode():
        out = model(**batch, output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


forward(batches[0])  # warm-up
batch_s = []
forward_passes = []


def forward_pass():
    pass_s = 0.0
    for batch in batches:
        start = time.perf_counter()
        forward(batch)
        seconds = time.perf_counter() - start
        pass_s += seconds
        batch_s.append(seconds)
    forward_passes.append(n_tokens / pass_s)
    return forward_passes[-1]


def write(writers, path, columns):
    table = pa.table(columns)
    if path not in writers:
        writers[path] = pq.ParquetWriter(path, table.schema, compression="none")
    writers[path].write_table(table)


def vectors(rows):
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), rows.shape[1])


def end_to_end(tmp):
    """From the texts to what glassbox's extraction writes for them: tokenised here (glassbox
    tokenises inside its timed extraction too), every layer's token rows, and its mean and
    [CLS] pools per example (glassbox-bench stores both pools)."""
    start = time.perf_counter()
    writers = {}
    first_id = 0
    for i in range(0, len(texts), BATCH):
        batch = tokenizer(texts[i : i + BATCH], padding=True, truncation=True, max_length=SEQ, return_tensors="pt")
        hidden = forward(batch)
        mask = batch["attention_mask"].numpy().astype(bool)
        ids = np.arange(first_id, first_id + mask.shape[0], dtype=np.uint64)
        example_ids = np.broadcast_to(ids[:, None], mask.shape)[mask]
        positions = np.broadcast_to(np.arange(mask.shape[1], dtype=np.uint32)[None, :], mask.shape)[mask]
        weights = mask[:, :, None].astype(np.float32)
        for layer, h in enumerate(hidden):
            write(writers, f"{tmp}/layer{layer}.parquet", {
                "example_id": pa.array(example_ids),
                "position": pa.array(positions),
                "act": vectors(h[mask]),
            })
            mean = (h * weights).sum(axis=1) / weights.sum(axis=1)
            write(writers, f"{tmp}/layer{layer}_mean.parquet", {"example_id": pa.array(ids), "act": vectors(mean)})
            write(writers, f"{tmp}/layer{layer}_cls.parquet", {"example_id": pa.array(ids), "act": vectors(h[:, 0])})
        first_id += mask.shape[0]
    for w in writers.values():
        w.close()
    return n_tokens / (time.perf_counter() - start)


e2e_passes = []


def e2e_pass():
    with tempfile.TemporaryDirectory() as tmp:
        e2e_passes.append(end_to_end(tmp))
    return e2e_passes[-1]


if SERVE:
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "forward":
            print(json.dumps({"forward_tokens_per_s": forward_pass()}), flush=True)
        elif command == "e2e":
            print(json.dumps({"e2e_tokens_per_s": e2e_pass()}), flush=True)
        elif command:
            sys.exit(f"--serve: unknown command {command!r} (forward or e2e)")
else:
    for _ in range(PASSES):
        forward_pass()
    for _ in range(PASSES):
        e2e_pass()
median_s = sorted(batch_s)[len(batch_s) // 2]

report = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "threads": torch.get_num_threads(),
    # The vector ISA ATen dispatched to (capped by ATEN_CPU_CAPABILITY in `just bench-avx2`).
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "passes": len(forward_passes),
    "paired": SERVE,
    "forward_only": {
        "tokens": n_tokens,
        "tokens_per_s": max(forward_passes),
        "passes_tokens_per_s": forward_passes,
        "median_batch_tokens_per_s": BATCH * SEQ / median_s,
    },
    "end_to_end_parquet": {"tokens": n_tokens, "tokens_per_s": max(e2e_passes), "passes_tokens_per_s": e2e_passes},
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(json.dumps(report, indent=2))
