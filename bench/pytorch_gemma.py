#!/usr/bin/env python3
"""PyTorch's side of `just bench-gemma`: `transformers`' Gemma-2 on a generated checkpoint
(bench/big_checkpoint.py), in one dtype, over the texts glassbox extracts, with the same eight
activations taken by forward hooks and mean-pooled over each text's tokens, as
`glassbox extract --pools mean` stores them. Loads, runs one warm-up batch (not timed), then
times the remaining batches. Prints one JSON object.

Usage: pytorch_gemma.py CHECKPOINT_DIR TEXTS_JSONL DTYPE(bfloat16|float32) BATCH MAX_LENGTH
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast


def main():
    ckpt, texts, dtype, batch, max_length = sys.argv[1:6]
    batch, max_length = int(batch), int(max_length)
    lines = [json.loads(l)["text"] for l in open(texts) if l.strip()]
    # The checkpoint's tokenizer.json as glassbox reads it (no Gemma tokenizer defaults).
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{ckpt}/tokenizer.json")
    tok.pad_token = tok.pad_token or tok.convert_ids_to_tokens(0)
    start = time.time()
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=getattr(torch, dtype))
    model.eval()
    load_s = time.time() - start
    inner = model.model
    # glassbox's hooks (bench/memory.py's HOOKS) as modules: the scaled embedding is the first
    # layer's input, a block's output its hook_resid_post, the post-attention and
    # post-feed-forward norms' outputs hook_attn_out and hook_mlp_out, down_proj's input
    # mlp.hook_post, the final norm's output ln_final.
    taken = {}

    def keep(name, pre=False):
        def hook(_module, args, out=None):
            value = args[0] if pre else (out[0] if isinstance(out, tuple) else out)
            taken[name] = value
        return hook

    layers = inner.layers
    layers[0].register_forward_pre_hook(keep("hook_embed", pre=True))
    for i in (0, 3, 12):
        layers[i].register_forward_hook(keep(f"blocks.{i}.hook_resid_post"))
    layers[6].post_attention_layernorm.register_forward_hook(keep("blocks.6.hook_attn_out"))
    layers[9].post_feedforward_layernorm.register_forward_hook(keep("blocks.9.hook_mlp_out"))
    layers[15].mlp.down_proj.register_forward_pre_hook(keep("blocks.15.mlp.hook_post", pre=True))
    inner.norm.register_forward_hook(keep("ln_final.hook_normalized"))

    batches = [lines[i:i + batch] for i in range(0, len(lines), batch)]
    timed, tokens = 0.0, 0
    with torch.inference_mode():
        for k, texts_ in enumerate(batches):
            t0 = time.time()
            enc = tok(texts_, return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length)
            taken.clear()
            inner(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = {n: ((v.float() * mask).sum(1) / mask.sum(1)).numpy() for n, v in taken.items()}
            assert len(pooled) == 8, sorted(pooled)
            if k > 0:
                timed += time.time() - t0
                tokens += int(enc["attention_mask"].sum())
    print(json.dumps({
        "side": "pytorch", "dtype": dtype, "load_seconds": round(load_s, 2),
        "timed_texts": sum(len(b) for b in batches[1:]), "timed_tokens": tokens,
        "seconds": round(timed, 2), "tokens_per_second": round(tokens / timed, 1) if timed else None,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
