#!/usr/bin/env python3
"""Checks glassbox's saved transcoders with the tools that use them (`just check-transcoders`).

    python scripts/check_transcoders.py RUN INPUT_HOOK OUTPUT_HOOK

Opens `dictionary/transcoder=OUTPUT_HOOK/` of RUN with each tool whose layout is there —
sparsify's `SparseCoder.load_from_disk`, SAELens's `SAE.load_from_disk`, circuit-tracer's
`load_transcoder` — runs each on glassbox's stored rows of INPUT_HOOK, and requires every
prediction of OUTPUT_HOOK to equal the formula `W_dec f + b_dec + W_skip x` (f = TopK, ReLU or
JumpReLU of `W_enc x + b_enc`) written here in numpy from circuit-tracer's file, and the FVU
against the stored OUTPUT_HOOK rows to equal glassbox's own reading of the same files.
"""

import json
import sys
from pathlib import Path

import os

import numpy as np
import torch
from safetensors.numpy import load_file

# sparsify's Triton decoder needs a GPU; its own eager path is the same sum on the CPU.
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from saelens_cache import token_rows  # noqa: E402

run, input_hook, output_hook = sys.argv[1:4]
x, _ = token_rows(run, input_hook)
y, _ = token_rows(run, output_hook)
folder = Path(run) / "dictionary" / f"transcoder={output_hook}"
metrics = json.loads((folder / "metrics.json").read_text())
block = metrics["transcoder"]
layer = int(output_hook.split(".")[1])

# The reference: the documented formula from circuit-tracer's layer file, in float64.
w = {k: v.astype(np.float64) for k, v in load_file(folder / "circuit_tracer" / f"layer_{layer}.safetensors").items()}
pre = x.astype(np.float64) @ w["W_enc"].T + w["b_enc"]
if block["architecture"] == "topk":
    k = block["k"]
    f = np.zeros_like(pre)
    top = np.argpartition(-pre, k - 1, axis=1)[:, :k]
    rows = np.arange(len(pre))[:, None]
    f[rows, top] = np.maximum(pre[rows, top], 0.0)
elif "activation_function.threshold" in w:
    f = np.where(pre > w["activation_function.threshold"], pre, 0.0)
else:
    f = np.maximum(pre, 0.0)
want = f @ w["W_dec"] + w["b_dec"]
if "W_skip" in w:
    want += x.astype(np.float64) @ w["W_skip"].T
assert ("W_skip" in w) == block["skip_connection"], "skip connection recorded wrongly"


def fvu(pred):
    return float(((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def compare(tool, got):
    got = np.asarray(got, dtype=np.float64)
    scale = np.abs(want).max()
    err = np.abs(got - want).max(axis=1) / scale
    # TopK: a latent within float rounding of the k-th may be in or out; such rows are counted.
    ties = int((err > 1e-4).sum())
    assert ties <= max(1, len(err) // 200), f"{tool}: {ties} of {len(err)} rows differ (max {err.max():.2e})"
    print(f"{tool}: {len(err)} rows, max relative difference {np.sort(err)[-ties - 1]:.2e} "
          f"({ties} TopK near-tie rows), FVU {fvu(got):.5f}")


xt = torch.from_numpy(x.copy())
checked = []
if (folder / "sparsify").is_dir():
    from sparsify import SparseCoder

    coder = SparseCoder.load_from_disk(folder / "sparsify")
    assert coder.cfg.transcode and coder.cfg.skip_connection == block["skip_connection"]
    with torch.no_grad():
        compare("sparsify", coder(xt, torch.from_numpy(y.copy())).sae_out.numpy())
    checked.append("sparsify")
if (folder / "saelens").is_dir():
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder / "saelens"))
    assert "Transcoder" in type(sae).__name__ and sae.cfg.d_out == y.shape[1], type(sae)
    with torch.no_grad():
        compare(f"SAELens {type(sae).__name__}", sae(xt).numpy())
    checked.append("saelens")
from circuit_tracer.transcoder.single_layer_transcoder import load_relu_transcoder  # noqa: E402

# circuit-tracer 0.5 reads ReLU and JumpReLU (threshold in the file) layer files; a TopK one
# takes its activation from the caller, as `load_transcoder_set(activation="topk")` does later.
tracer = load_relu_transcoder(str(folder / "circuit_tracer" / f"layer_{layer}.safetensors"), layer,
                              device=torch.device("cpu"), dtype=torch.float32,
                              lazy_encoder=False, lazy_decoder=False)
if block["architecture"] == "topk":
    # circuit-tracer's TopK keeps negative values among the k largest; glassbox's (as sparsify's)
    # zeroes them: its TopK followed by ReLU (what config.yaml's `activation` says).
    from circuit_tracer.transcoder.activation_functions import TopK

    top_k = TopK(block["k"])
    tracer.activation_function = lambda pre: top_k(pre).relu()
with torch.no_grad():
    compare("circuit-tracer", tracer(xt).numpy())
checked.append("circuit_tracer")
assert sorted(checked) == sorted(block["formats"]), (checked, block["formats"])
print(f"reference formula: FVU {fvu(want):.5f} over all {len(y)} stored rows; "
      f"glassbox (held-out rows) {metrics['sae']['fvu']:.5f}")
