#!/usr/bin/env python3
"""Tiny random Llama-family models and their reference outputs from PyTorch `transformers`, for
the decoder parity tests. The tokenizer is the tiny GPT-2 fixture's byte-level BPE (run
scripts/reference_tiny_gpt2.py first).

- tests/fixtures/tiny_llama/: Llama with grouped-query attention (4 query heads, 2 key/value
  heads), RoPE with llama3-style frequency scaling, SwiGLU, RMSNorm, tied embeddings;
- tests/fixtures/tiny_qwen2/: Qwen2 with q/k/v biases, plain RoPE (theta 1e6) and a separate
  (untied) lm_head.

Each folder: config.json, model.safetensors, tokenizer.json (copied), reference.json (texts,
ids) and reference.safetensors (per text t: `t.hidden_states` [3, tokens, 32], `t.last_block`
[tokens, 32] before the final norm, `t.logits` [tokens, 512]).

Run: just reference-llama   (needs torch, transformers from PyPI)
"""
import functools

import transformers
import tiny_reference
from tiny_reference import TOKENIZER
from tokenizers import Tokenizer

make = functools.partial(tiny_reference.make, tok=Tokenizer.from_file(str(TOKENIZER)))


make("tiny_llama", transformers.LlamaForCausalLM, transformers.LlamaConfig(
    vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
    rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 16},
    bos_token_id=0, eos_token_id=0, pad_token_id=None), seed=1)
make("tiny_qwen2", transformers.Qwen2ForCausalLM, transformers.Qwen2Config(
    vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    bos_token_id=0, eos_token_id=0, pad_token_id=None), seed=2)
