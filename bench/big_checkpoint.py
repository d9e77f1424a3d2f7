#!/usr/bin/env python3
"""Writes a checkpoint with a real model's exact shapes and random bf16 weights, sharded as the
Hub ships it (model-0000i-of-0000n.safetensors + model.safetensors.index.json), for the memory
bench. Generated at bench time, never committed (Gemma-2-2B: 5.2 GB).

Shapes: gemma2-2b = google/gemma-2-2b's config; llama-8b = meta-llama/Llama-3.1-8B's.
The tokenizer is the tiny GPT-2 fixture's (512 tokens, all within the real vocabulary).

Usage: big_checkpoint.py {gemma2-2b|llama-8b} OUT_DIR
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
SHARD_BYTES = 2 << 30

CONFIGS = {
    "gemma2-2b": {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "vocab_size": 256000,
        "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
    },
    "llama-8b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
        "rope_theta": 500000.0, "torch_dtype": "bfloat16",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "bos_token_id": 128000, "eos_token_id": 128001,
    },
}


def shapes(c):
    d, inner, hd = c["hidden_size"], c["intermediate_size"], c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (c["vocab_size"], d)
    gemma = c["model_type"] == "gemma2"
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        yield f"{p}.self_attn.q_proj.weight", (q, d)
        yield f"{p}.self_attn.k_proj.weight", (kv, d)
        yield f"{p}.self_attn.v_proj.weight", (kv, d)
        yield f"{p}.self_attn.o_proj.weight", (d, q)
        yield f"{p}.mlp.gate_proj.weight", (inner, d)
        yield f"{p}.mlp.up_proj.weight", (inner, d)
        yield f"{p}.mlp.down_proj.weight", (d, inner)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if gemma:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for n in norms:
            yield f"{p}.{n}.weight", (d,)
    yield "model.norm.weight", (d,)
    if not c["tie_word_embeddings"]:
        yield "lm_head.weight", (c["vocab_size"], d)


def main():
    kind, out = sys.argv[1], Path(sys.argv[2])
    config = CONFIGS[kind]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    shutil.copy(ROOT / "tests/fixtures/tiny_gpt2/tokenizer.json", out / "tokenizer.json")
    gen = torch.Generator().manual_seed(0)
    all_shapes = list(shapes(config))
    groups, size = [[]], 0
    for name, shape in all_shapes:
        n = 2 * torch.Size(shape).numel()
        if size + n > SHARD_BYTES and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += n
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape in group:
            if len(shape) == 1:  # norms near their trained scale: Gemma's (1 + w), Llama's w
                t = torch.zeros(shape) if "gemma" in kind else torch.ones(shape)
            else:
                t = torch.randn(shape, generator=gen) * (1.0 / shape[1]) ** 0.5
            tensors[name] = t.to(torch.bfloat16)
            weight_map[name] = file
            total += 2 * t.numel()
        save_file(tensors, out / file, metadata={"format": "pt"})
        del tensors
        print(f"wrote {out / file}", file=sys.stderr)
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    print(json.dumps({"checkpoint": str(out), "bytes": total}))


if __name__ == "__main__":
    main()
