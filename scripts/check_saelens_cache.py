#!/usr/bin/env python3
"""Checks `scripts/saelens_cache.py` against SAELens itself (`just check-saelens-cache`).

    python scripts/check_saelens_cache.py RUN HOOK CACHE CONTEXT_SIZE

SAELens's `ActivationsStore`, given only `cached_activations_path=CACHE` (no model, no dataset,
as a training run with `use_cached_activations=True` builds it), must read every row of the
cache, and each batch it returns must equal glassbox's stored activations and token ids for
those tokens, bit for bit.
"""

import sys

import numpy as np
import torch
from sae_lens.training.activations_store import ActivationsStore

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from saelens_cache import token_rows  # noqa: E402

run, hook, cache, context = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
acts, ids = token_rows(run, hook)
d_in = acts.shape[1]
prompts = 2
store = ActivationsStore(
    model=None, dataset=None, streaming=False, hook_name=hook, hook_head_index=None,
    context_size=context, d_in=d_in, n_batches_in_buffer=2, total_training_tokens=len(ids),
    store_batch_size_prompts=prompts, train_batch_size_tokens=prompts * context, prepend_bos=False,
    normalize_activations="none", device=torch.device("cpu"), dtype="float32",
    cached_activations_path=cache,
)
rows = len(store.cached_activation_dataset)
assert rows == len(ids) // context, (rows, len(ids), context)
start = 0
while True:
    try:
        batch, token_ids = store._load_raw_llm_batch_from_cached(raise_on_epoch_end=True)
    except StopIteration:
        break
    n = batch.shape[0]
    assert np.array_equal(batch.numpy().reshape(n, d_in), acts[start : start + n]), start
    assert np.array_equal(token_ids.numpy().astype(np.int32), ids[start : start + n]), start
    start += n
assert start == (rows // prompts) * prompts * context, (start, rows)
print(f"SAELens read {start} tokens of {cache} ({rows} rows × {context}): equal to glassbox's {hook}")
