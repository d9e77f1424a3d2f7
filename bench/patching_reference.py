#!/usr/bin/env python3
"""The PyTorch side of `just bench-patching`: a plain forward-hook loop (what TransformerLens and
nnsight do) patching every `blocks.L.hook_resid_pre` at every position of the corrupted prompt
with the clean run's activation, one forward per patched run, on SmolLM2-135M-Instruct from its
GGUF (dequantised to f32 by transformers), for the first N pairs of a pairs file.

Prints one JSON line: seconds, patched runs, the metrics (so the Rust side can be checked
against them), peak RSS and the parameter count. Run by bench/patching.sh, not by hand.
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

REPO, FILE = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"
pairs_file, n_pairs = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(os.cpu_count() or 1)
snapshot = snapshot_download(REPO, allow_patterns=[FILE])
tok = transformers.AutoTokenizer.from_pretrained(snapshot, gguf_file=FILE)
model = transformers.AutoModelForCausalLM.from_pretrained(snapshot, gguf_file=FILE, dtype=torch.float32).eval()
layers = model.model.layers
pairs = [json.loads(l) for l in open(pairs_file)][:n_pairs]

def ids(text):
    return tok(text, add_special_tokens=True)["input_ids"]

def logit_diff(x, a, w):
    with torch.no_grad():
        logits = model(torch.tensor([x])).logits[0, -1]
    return float(logits[a] - logits[w])

start = time.perf_counter()
runs, metrics = 0, []
for p in pairs:
    c, k = ids(p["clean"]), ids(p["corrupted"])
    a, w = ids(p["answer"])[-1], ids(p["wrong"])[-1]
    cache = {}
    hs = [layers[L].register_forward_pre_hook(
        lambda m, args, kwargs, L=L: cache.__setitem__(L, (args[0] if args else kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True) for L in range(len(layers))]
    logit_diff(c, a, w)
    for h in hs:
        h.remove()
    for L in range(len(layers)):
        for pos in range(len(k)):
            def patch(m, args, kwargs, L=L, pos=pos):
                x = (args[0] if args else kwargs["hidden_states"]).clone()
                x[0, pos] = cache[L][0, pos]
                if args:
                    return ((x,) + tuple(args[1:]), kwargs)
                return (args, dict(kwargs, hidden_states=x))
            h = layers[L].register_forward_pre_hook(patch, with_kwargs=True)
            metrics.append(logit_diff(k, a, w))
            h.remove()
            runs += 1
seconds = time.perf_counter() - start
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
parameters = sum(p.numel() for p in model.parameters())
print(json.dumps({"seconds": seconds, "runs": runs, "metrics": metrics,
                  "peak_rss_mb": peak_rss_mb, "parameters": parameters}))
