#!/usr/bin/env python3
"""PyTorch + transformers reference for SmolLM2-135M-Instruct in `just bench`.

Loads the same GGUF glassbox reads (transformers dequantises it to float32 and rebuilds the
tokenizer from its metadata), then measures the forward with output_hidden_states=True (all
31 hidden states copied to numpy) on the texts glassbox-bench wrote, batch 32 x 128 tokens,
right padding, over PASSES passes (default 3; the best is reported, every pass is in the
JSON). Prints JSON with the peak RSS from getrusage.

Usage: pytorch_smollm2.py TEXTS.jsonl OUT.json [PASSES]
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from huggingface_hub import snapshot_download  # noqa: E402

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BATCH, SEQ = 32, 128
PASSES = int(sys.argv[3]) if len(sys.argv) > 3 else 3

snapshot = snapshot_download(REPO, allow_patterns=[FILE])
tokenizer = transformers.AutoTokenizer.from_pretrained(snapshot, gguf_file=FILE)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
tokenizer.padding_side = "right"
model = transformers.AutoModelForCausalLM.from_pretrained(
    snapshot, gguf_file=FILE, dtype=torch.float32
).model.eval()

texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
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
passes = []
for _ in range(PASSES):
    start = time.perf_counter()
    for batch in batches:
        forward(batch)
    passes.append(n_tokens / (time.perf_counter() - start))

result = {
    "model": REPO,
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    # The vector ISA ATen dispatched to (capped by ATEN_CPU_CAPABILITY in `just bench-avx2`).
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "tokens": n_tokens,
    "passes": PASSES,
    "forward_only": {"tokens_per_s": max(passes), "passes_tokens_per_s": passes},
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
json.dump(result, open(sys.argv[2], "w"), indent=1)
print(json.dumps(result))
