#!/usr/bin/env python3
"""A tiny random GPT-Neo (TinyStories-style: global and local layers alternating, the local ones
over a window of 4 tokens — shorter than the reference texts, so the window binds — unscaled
attention scores, bias-free q/k/v projections, tied unembedding) and its reference outputs from
PyTorch `transformers`, for the decoder parity test. The tokenizer is the tiny GPT-2 fixture's
byte-level BPE (run scripts/reference_tiny_gpt2.py first).

Writes tests/fixtures/tiny_gpt_neo/: config.json, model.safetensors, tokenizer.json (copied),
reference.json (texts, ids) and reference.safetensors (per text t: `t.hidden_states`
[3, tokens, 32], `t.last_block` [tokens, 32] before the final norm, `t.logits` [tokens, 512]).

Run: just reference-gpt-neo   (needs torch, transformers from PyPI)
"""
import torch
import transformers
from tiny_reference import TEXTS, TOKENIZER, prepare, randomize, save_model, write_reference
from tokenizers import Tokenizer

tok = Tokenizer.from_file(str(TOKENIZER))
out = prepare("tiny_gpt_neo")
torch.manual_seed(17)
config = transformers.GPTNeoConfig(
    vocab_size=512, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=128,
    attention_types=[[["global", "local"], 1]], window_size=4, activation_function="gelu_new",
    layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0)
model = transformers.GPTNeoForCausalLM(config).eval()
randomize(model, lambda n: ".ln_" in n)
save_model(model, out)
write_reference(model, model.transformer.h[-1], tok, TEXTS, out)
