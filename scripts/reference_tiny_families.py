#!/usr/bin/env python3
"""Tiny random checkpoints of the decoder families researchers audit at real size — Gemma-2,
Gemma-3 (text), Qwen3, OLMo-2, OLMo-3, Phi-3 and Mistral with a sliding window — and their reference
outputs from PyTorch `transformers`, for the decoder parity tests. Every feature the family
file implements is switched on and made to matter: a sliding window of 4 tokens (shorter than
every reference text) on the layers that have one, soft-capping caps small enough to bend the
scores, q/k norms, sandwich and post norms with weights far from 1, fused projections, and
`longrope` frequency scaling on Phi-3 (texts longer than its original context of 8, so the
long factors apply), `yarn` on OLMo-3's global layer; and two shapes as released checkpoints
ship them: Gemma-3 with linear scaling on its global layers (4B and larger) and Phi-3 with
partial rotary (Phi-4-mini). The tokenizer is the tiny GPT-2 fixture's
byte-level BPE.

Each folder tests/fixtures/tiny_<family>/: config.json, model.safetensors, tokenizer.json and
reference.json + reference.safetensors as written by tiny_reference.write_reference.

Run: just reference-families   (needs torch, transformers ≥ 5 from PyPI); names as arguments
(`tiny_olmo3`) remake only those fixtures.
"""
import sys

import transformers
import tiny_reference
from tiny_reference import TOKENIZER
from tokenizers import Tokenizer

ONLY = set(sys.argv[1:])


def make(name, *args, **kwargs):
    if not ONLY or name in ONLY:
        tiny_reference.make(name, *args, tok=Tokenizer.from_file(str(TOKENIZER)), **kwargs)


COMMON = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              bos_token_id=0, eos_token_id=0, pad_token_id=None)


# Layer 0 sliding (window 4), layer 1 global; scores and logits soft-capped; query scale from
# query_pre_attn_scalar (not head_dim); GeGLU (tanh); embeddings scaled by √d.
make("tiny_gemma2", transformers.Gemma2ForCausalLM, transformers.Gemma2Config(
    **COMMON, head_dim=16, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
    query_pre_attn_scalar=24, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
    sliding_window=4, layer_types=["sliding_attention", "full_attention"],
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    tie_word_embeddings=True), seed=3)

# q/k RMSNorm (1 + w) per head; local layers rotate with rope_local_base_freq, global ones
# with rope_theta; three layers so both kinds and the pattern's order are exercised. The config
# sets an attention soft-cap small enough to bind, which Gemma3Attention never applies: the
# reference pins that glassbox ignores it too.
make("tiny_gemma3", transformers.Gemma3ForCausalLM, transformers.Gemma3TextConfig(
    **{**COMMON, "num_hidden_layers": 3}, head_dim=8, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=8, sliding_window=4,
    attn_logit_softcapping=4.0,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    tie_word_embeddings=True), seed=4)

# q/k RMSNorm per head before rotary, no q/k/v bias, head_dim ≠ hidden / heads.
make("tiny_qwen3", transformers.Qwen3ForCausalLM, transformers.Qwen3Config(
    **COMMON, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), seed=5)

# Post-norm blocks (no norm before attention or MLP) and q/k RMSNorm over the whole projection.
make("tiny_olmo2", transformers.Olmo2ForCausalLM, transformers.Olmo2Config(
    **COMMON, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), seed=6)

# Fused qkv_proj and gate_up_proj; longrope frequencies (short and long factors) with the
# attention factor, a sliding window of 4.
half = 32 // 4 // 2
make("tiny_phi3", transformers.Phi3ForCausalLM, transformers.Phi3Config(
    **{**COMMON, "max_position_embeddings": 128}, rms_norm_eps=1e-5, sliding_window=4,
    original_max_position_embeddings=8, tie_word_embeddings=False,
    rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                     "short_factor": [1.0 + 0.1 * i for i in range(half)],
                     "long_factor": [2.0 + 0.5 * i for i in range(half)],
                     "original_max_position_embeddings": 8}), seed=7)

# Mistral: every layer slides over 4 tokens.
make("tiny_mistral", transformers.MistralForCausalLM, transformers.MistralConfig(
    **COMMON, rms_norm_eps=1e-5, sliding_window=4, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), seed=8)

# OLMo-3: OLMo-2's block; layers 0-2 slide over 4 tokens, layer 3 is global (the default
# pattern, written out by transformers); yarn on the global layer only (factor 4 over an
# original context of 32: pair 0 kept, pair 1 half blended, the rest interpolated, cosines and
# sines × 1.139), the sliding layers on the plain base.
make("tiny_olmo3", transformers.Olmo3ForCausalLM, transformers.Olmo3Config(
    **{**COMMON, "num_hidden_layers": 4}, head_dim=16, rms_norm_eps=1e-6, sliding_window=4,
    tie_word_embeddings=False,
    rope_parameters={"full_attention": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                        "original_max_position_embeddings": 32},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
     seed=9)

# Qwen2 with its sliding window switched on from layer 1 (`max_window_layers`; transformers
# writes the resulting layer_types): layer 0 attends to all tokens, layer 1 over 4; q/k/v biases.
make("tiny_qwen2_windows", transformers.Qwen2ForCausalLM, transformers.Qwen2Config(
    **COMMON, rms_norm_eps=1e-6, use_sliding_window=True, sliding_window=4, max_window_layers=1,
    tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     seed=10)

# Gemma-3 as its 4B-and-larger checkpoints ship: linear rotary scaling (factor 8) on the global
# layers only, the local layers on their own base; two local layers per global one (the legacy
# config's `sliding_window_pattern` 3, which the parity tests also write), a final soft-cap.
make("tiny_gemma3_scaled", transformers.Gemma3ForCausalLM, transformers.Gemma3TextConfig(
    **{**COMMON, "num_hidden_layers": 3}, head_dim=16, rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, sliding_window=4,
    final_logit_softcapping=10.0,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    tie_word_embeddings=True), seed=11)

# Phi-3 as Phi-4-mini ships: rotary over 3/4 of each head (`partial_rotary_factor`) with longrope
# factors for those pairs only, tied embeddings, no sliding window.
rotated_pairs = int(8 * 0.75) // 2
make("tiny_phi3_partial", transformers.Phi3ForCausalLM, transformers.Phi3Config(
    **COMMON, rms_norm_eps=1e-5, partial_rotary_factor=0.75, original_max_position_embeddings=8,
    sliding_window=None, tie_word_embeddings=True,
    rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                     "short_factor": [1.0 + 0.1 * i for i in range(rotated_pairs)],
                     "long_factor": [2.0 + 0.5 * i for i in range(rotated_pairs)],
                     "original_max_position_embeddings": 8}), seed=12)
