#!/usr/bin/env python3
"""A tiny random GPT-NeoX (Pythia-style: parallel attention and MLP, partial rotary over a quarter
of each head, fused per-head query/key/value, untied unembedding) and its reference outputs from
PyTorch `transformers`, for the decoder parity test. The tokenizer is the tiny GPT-2 fixture's
byte-level BPE (run scripts/reference_tiny_gpt2.py first).

A second fixture, tests/fixtures/tiny_neox_sequential/, has the other GPT-NeoX options: sequential
blocks (`use_parallel_residual: false`), no attention biases (`attention_bias: false`), rotary over
the whole head and a tied unembedding.

Writes tests/fixtures/tiny_neox/: config.json, model.safetensors, tokenizer.json (copied),
reference.json (texts, ids) and reference.safetensors (per text t: `t.hidden_states`
[3, tokens, 32], `t.last_block` [tokens, 32] before the final norm, `t.logits` [tokens, 512]).

Run: just reference-neox   (needs torch, transformers from PyPI)
"""
import torch
import transformers
from tiny_reference import TEXTS, TOKENIZER, prepare, save_model, write_reference
from tokenizers import Tokenizer

tok = Tokenizer.from_file(str(TOKENIZER))


def make(name, seed, **options):
    out = prepare(name)
    torch.manual_seed(seed)
    config = transformers.GPTNeoXConfig(
        vocab_size=512, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, hidden_act="gelu",
        layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, **options)
    model = transformers.GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if "layernorm" in param_name or "layer_norm" in param_name:
                p.uniform_(0.5, 1.5) if param_name.endswith("weight") else p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.2)
    save_model(model, out)
    write_reference(model, model.gpt_neox.layers[-1], tok, TEXTS, out)


make("tiny_neox", 3,
     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
     use_parallel_residual=True, tie_word_embeddings=False)
make("tiny_neox_sequential", 11,
     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
     use_parallel_residual=False, attention_bias=False, tie_word_embeddings=True)
