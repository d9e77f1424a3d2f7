#!/usr/bin/env python3
"""A tiny random OPT (pre-LayerNorm as OPT-125M and the larger sizes: ReLU MLP of `ffn_dim`, the
position table's two leading offset rows, separate biased q/k/v projections with the queries
scaled after their bias, tied unembedding) and its reference outputs from PyTorch
`transformers`, for the decoder parity test. The tokenizer is the tiny GPT-2 fixture's byte-level
BPE (run scripts/reference_tiny_gpt2.py first).

Writes tests/fixtures/tiny_opt/: config.json, model.safetensors, tokenizer.json (copied),
reference.json (texts, ids) and reference.safetensors (per text t: `t.hidden_states`
[3, tokens, 32], `t.last_block` [tokens, 32] before the final norm, `t.logits` [tokens, 512]).

Run: just reference-opt   (needs torch, transformers from PyPI)
"""
import torch
import transformers
from tiny_reference import TEXTS, TOKENIZER, prepare, randomize, save_model, write_reference
from tokenizers import Tokenizer

tok = Tokenizer.from_file(str(TOKENIZER))
out = prepare("tiny_opt")
torch.manual_seed(23)
config = transformers.OPTConfig(
    vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
    max_position_embeddings=128, word_embed_proj_dim=32, activation_function="relu",
    do_layer_norm_before=True, enable_bias=True, pad_token_id=1, bos_token_id=0, eos_token_id=0)
model = transformers.OPTForCausalLM(config).eval()
randomize(model, lambda n: "layer_norm" in n)
save_model(model, out)
write_reference(model, model.model.decoder.layers[-1], tok, TEXTS, out)
