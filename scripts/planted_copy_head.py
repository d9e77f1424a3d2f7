#!/usr/bin/env python3
"""A one-layer GPT-2 whose weights are set by hand so that exactly one mechanism exists: head 0
of block 0 attends from every position to position 1 and copies that token into the residual
stream, which the (tied) unembedding reads out. Head 1 and the MLP are zero. For the planted-
mechanism test of glassbox's patching, attribution patching and ablation: they must all point
at head 0, at the last position (and, in the residual stream, at position 1), and at nothing
else.

Residual stream (n_embd 48): dims 0-15 +token, 16-31 −token (so every embedding has zero mean
and LayerNorm is a fixed scale), dims 32-39 +position, 40-47 −position.

Writes tests/fixtures/planted_copy/: config.json, model.safetensors, tokenizer.json (word-level
over the letters a-p) and pairs.jsonl (clean "a b c d e f", corrupted with position 1 changed;
answer = the clean token at position 1, wrong = the corrupted one). Checks the mechanism in
PyTorch before saving.

Run: just planted-copy   (needs torch, transformers, tokenizers from PyPI)
"""
import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "planted_copy"
OUT.mkdir(parents=True, exist_ok=True)
LETTERS = "abcdefghijklmnop"
V, D, H, T = 16, 48, 2, 8
S, A, M = 4.0, 60.0, 40.0  # embedding scale, query gain, copy gain

tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(LETTERS)}, unk_token="a"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.save(str(OUT / "tokenizer.json"))

config = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=D, n_layer=1, n_head=H,
                                 activation_function="gelu_new", bos_token_id=0, eos_token_id=0,
                                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                 tie_word_embeddings=True, attn_implementation="eager")
model = transformers.GPT2LMHeadModel(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.zero_()
    tr = model.transformer
    for i in range(V):
        tr.wte.weight[i, i], tr.wte.weight[i, 16 + i] = S, -S
    for p in range(T):
        tr.wpe.weight[p, 32 + p], tr.wpe.weight[p, 40 + p] = S, -S
    for ln in (tr.h[0].ln_1, tr.h[0].ln_2, tr.ln_f):
        ln.weight.fill_(1.0)
    c_attn = tr.h[0].attn.c_attn  # Conv1D: x @ W + b, W [D, 3D] = [q | k | v], heads of D/H
    hd = D // H
    c_attn.bias[0] = A                      # head 0's query: a constant along its first dim
    c_attn.weight[32 + 1, D + 0] = 1.0       # head 0's key: the position-1 indicator
    for i in range(V):
        c_attn.weight[i, 2 * D + i] = 1.0    # head 0's value: the token identity (+ dims)
    c_proj = tr.h[0].attn.c_proj             # z @ W: head 0's value dims → the +token dims
    for i in range(V):
        c_proj.weight[i, i] = M
    assert hd >= V

pairs = []
for clean, changed in [("a b c d e f", "g"), ("c d e f a b", "h"), ("p o n m l k", "j")]:
    words = clean.split()
    corrupted = " ".join([words[0], changed] + words[2:])
    pairs.append({"clean": clean, "corrupted": corrupted, "answer": " " + words[1], "wrong": " " + changed})

for p in pairs:  # the mechanism, checked in PyTorch
    for text, want in ((p["clean"], p["answer"]), (p["corrupted"], p["wrong"])):
        ids = tok.encode(text).ids
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True)
        assert out.logits[0, -1].argmax().item() == tok.encode(want).ids[0], (text, want)
        assert out.attentions[0][0, 0, -1, 1] > 0.99, "head 0 attends to position 1"

model.save_pretrained(OUT, safe_serialization=True)
(OUT / "generation_config.json").unlink(missing_ok=True)
with open(OUT / "pairs.jsonl", "w") as f:
    for p in pairs:
        f.write(json.dumps(p) + "\n")
print("planted copy head written:", OUT)
