#!/usr/bin/env python3
"""A tiny random GPT-2 and its reference outputs from PyTorch `transformers`, for the GPT-2 parity
test (no GPT-2 weights ship on a registry; the architecture is what is tested).

Writes tests/fixtures/tiny_gpt2/:
  config.json, model.safetensors   GPT2LMHeadModel(n_embd 32, n_layer 2, n_head 4, n_positions 64,
                                   vocab 512, gelu_new), seeded random weights
  tokenizer.json                   a byte-level BPE (vocab 512) trained on the built-in data set
  reference.json                   texts and token ids
  reference.safetensors            per text t: `t.hidden_states` [3, tokens, 32]
                                   (output_hidden_states: embeddings, block 0, and block 1 after
                                   ln_f, as transformers reports the last one), `t.last_block`
                                   [tokens, 32] (block 1 before ln_f) and `t.logits` [tokens, 512]

tests/fixtures/tiny_gpt2_options/ holds the same files for GPT-2's other options: an untied
`lm_head`, scores scaled by 1/(layer + 1) (`scale_attn_by_inverse_layer_idx`), an explicit
`n_inner` and a ReLU MLP.

Run: just reference-gpt2   (needs torch, transformers, tokenizers from PyPI)
"""
import json
from pathlib import Path

import torch
import transformers
from tiny_reference import save_model, write_reference
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tiny_gpt2"
OUT.mkdir(parents=True, exist_ok=True)

texts_for_bpe = [json.loads(l)["text"] for l in (ROOT / "data/sets/default.jsonl").read_text().splitlines()]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator(texts_for_bpe, trainer)
tok.save(str(OUT / "tokenizer.json"))

torch.manual_seed(0)
config = transformers.GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                 activation_function="gelu_new", bos_token_id=0, eos_token_id=0,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
model = transformers.GPT2LMHeadModel(config).eval()
with torch.no_grad():  # larger than the default init so every block matters
    for name, p in model.named_parameters():
        if "ln_" not in name:
            p.normal_(0.0, 0.2)
save_model(model, OUT)

texts = [
    "the chef roasted the vegetables with garlic",
    "Stock prices fell sharply after the announcement.",
    "  spaces  and digits 2024, 3.14 — café!",
]
write_reference(model, model.transformer.h[-1], tok, texts, OUT)

# The other options, on a second checkpoint with the same tokenizer.
OPTIONS = ROOT / "tests" / "fixtures" / "tiny_gpt2_options"
OPTIONS.mkdir(parents=True, exist_ok=True)
tok.save(str(OPTIONS / "tokenizer.json"))
torch.manual_seed(1)
config = transformers.GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                 n_inner=48, activation_function="relu",
                                 scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False,
                                 bos_token_id=0, eos_token_id=0,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
model = transformers.GPT2LMHeadModel(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "ln_" not in name:
            p.normal_(0.0, 0.2)
save_model(model, OPTIONS)
write_reference(model, model.transformer.h[-1], tok, texts, OPTIONS)
