#!/usr/bin/env python3
"""Checks `glassbox export delphi` against delphi itself (`just check-delphi-cache`).

    python scripts/check_delphi_cache.py RUN HOOK CACHE

delphi's own `LatentDataset` opens CACHE (its config, its split files, the tokens in them), and
every latent it yields must carry exactly the activations of the run's SAE (its SAELens folder,
applied here in torch: TopK, ReLU or JumpReLU) on glassbox's stored rows of HOOK, at the
locations where the run's tokens were laid end to end in example order; the cached tokens
must be the run's token ids in that order.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from delphi.config import ConstructorConfig, SamplerConfig
from delphi.latents import LatentDataset

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from saelens_cache import token_rows  # noqa: E402

run, hook, cache = sys.argv[1], sys.argv[2], sys.argv[3]
acts, ids = token_rows(run, hook)

# The SAE as SAELens saves it, encoded by its architecture's rule.
sae_dir = Path(run) / "dictionary" / f"hook={hook}" / "sae"
cfg = json.loads((sae_dir / "cfg.json").read_text())
w = load_file(sae_dir / "sae_weights.safetensors")
x = torch.from_numpy(acts.copy())
pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
arch = cfg.get("architecture", "standard")
# Per latent and row: the code if the latent is selected (its pre-activation, or 0 where the
# rule zeroes it), and whether it may be selected. TopK: a latent within float rounding of the
# k-th largest may be in or out — glassbox's and torch's f32 products round differently and
# near-ties flip — so the check takes any such latent and counts the codes per row instead.
if arch == "topk":
    k = cfg["k"] if "k" in cfg else cfg["activation_fn_kwargs"]["k"]
    kth = pre.topk(k, dim=1).values[:, -1:]
    tolerance = 1e-5 * pre.abs().amax(dim=1, keepdim=True)
    value = pre.relu()
    selectable = pre >= kth - tolerance
    per_row = (pre.topk(k, dim=1).values > 0).sum(dim=1)
elif arch in ("jumprelu", "standard"):
    cut = w["threshold"] if arch == "jumprelu" else torch.zeros(pre.shape[1])
    value = pre * (pre > 0)
    selectable = pre > cut - 1e-5 * pre.abs().amax(dim=1, keepdim=True)
    per_row = (pre > cut).sum(dim=1)
else:
    sys.exit(f"{sae_dir}: architecture {arch} is not encoded by this check")

config = json.loads((Path(cache) / hook / "config.json").read_text())
context = config["cache_ctx_len"]
sequences = len(ids) // context
kept = sequences * context


class NoTokenizer:
    """delphi keeps the tokenizer for decoding examples later; this check reads ids only."""


dataset = LatentDataset(
    cache, SamplerConfig(), ConstructorConfig(), tokenizer=NoTokenizer(), modules=[hook]
)
assert dataset.tokens is not None and tuple(dataset.tokens.shape) == (sequences, context), dataset.tokens.shape
assert np.array_equal(dataset.tokens.numpy().reshape(-1), ids[:kept].astype(np.int64)), "cached tokens differ"

value, selectable, per_row = value[:kept], selectable[:kept], per_row[:kept]
counts = torch.zeros(kept, dtype=torch.long)
latents = 0
for buffer in dataset.buffers:
    for data in buffer:
        latent = data.latent.latent_index
        loc = data.activation_data.locations
        got = data.activation_data.activations.float()
        flat = loc[:, 0] * context + loc[:, 1]
        assert selectable[flat, latent].all(), (latent, flat[~selectable[flat, latent]][:5])
        want = value[flat, latent]
        # f16 in the cache: the f32 code to half precision (one f16 step either way).
        bad = (got - want).abs() > want.abs() * 2.0**-10 + 1e-4
        assert not bad.any(), (latent, got[bad][:5], want[bad][:5])
        counts.index_add_(0, flat, torch.ones_like(flat))
        latents += 1
# Rows where a code sits within rounding of zero may gain or lose it; elsewhere the counts agree.
differ = (counts - per_row).abs()
assert int(differ.max()) <= 1 and int((differ > 0).sum()) <= kept // 1000 + 1, (
    f"{int((differ > 0).sum())} rows with a different number of active latents"
)
print(
    f"delphi read {latents} latents over {sequences} sequences × {context} tokens of {cache}: "
    f"{int(counts.sum())} activations, equal to the SAE on glassbox's {hook}"
)
