#!/usr/bin/env python3
"""Captum's side of `just bench-attribution-text`: integrated gradients (64 Gauss–Legendre steps)
from zero token embeddings — position and token-type embeddings kept, glassbox's and
LayerIntegratedGradients' convention — of a probe's class logit (the run's probe at
blocks.5.hook_resid_post, mean-pooled over real tokens, raw activation space) on MiniLM, over
the first N texts of the run, tokenised by the model's own tokenizer to at most 128 tokens,
`internal_batch_size` equal to glassbox's batch. Prints JSON: seconds (model loading excluded),
peak RSS, texts, completeness error.

    attribution_text_reference.py RUN TEXTS.jsonl N CLASS BATCH
"""
import json
import resource
import sys
import time

import torch
from captum.attr import IntegratedGradients
from safetensors import safe_open
from transformers import AutoModel, AutoTokenizer

HOOK = "blocks.5.hook_resid_post"


def main():
    run, texts_path, n, cls, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name).eval()
    with safe_open(f"{run}/probes/weights.safetensors", "pt") as f:
        key = f"sequence/topic/{HOOK}"
        classes = json.loads(f.metadata()[key])["classes"]
        w = f.get_tensor(f"{key}/weight")[classes.index(cls)]
        b = f.get_tensor(f"{key}/bias")[classes.index(cls)]
    texts = [json.loads(l)["text"] for l in open(texts_path)][:n]

    def target(embeds, mask, types):
        hidden = model(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return pooled @ w + b

    ig = IntegratedGradients(target)
    start = time.perf_counter()
    errors = []
    for text in texts:
        enc = tok(text, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            embeds = model.embeddings.word_embeddings(enc["input_ids"])
        extra = (enc["attention_mask"].float(), enc["token_type_ids"])
        attr, delta = ig.attribute(embeds, baselines=torch.zeros_like(embeds), additional_forward_args=extra,
                                   n_steps=64, method="gausslegendre", internal_batch_size=batch,
                                   return_convergence_delta=True)
        with torch.no_grad():
            gap = float(target(embeds, *extra) - target(torch.zeros_like(embeds), *extra))
        errors.append(abs(float(delta)) / abs(gap))
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds, "texts": len(texts),
        "tokens": [len(tok(t, truncation=True, max_length=128)["input_ids"]) for t in texts],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "completeness_error_median": sorted(errors)[len(errors) // 2],
    }))


if __name__ == "__main__":
    main()
