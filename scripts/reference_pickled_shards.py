#!/usr/bin/env python3
"""The tiny Llama fixture re-saved as a sharded PyTorch pickle checkpoint, as older Hub repos ship
large models (`pytorch_model-0000k-of-00002.bin` written by `torch.save`, listed by
`pytorch_model.bin.index.json`'s `weight_map`), for the loader test: the same tensors, so the
same numbers as tests/fixtures/tiny_llama/model.safetensors.

Writes tests/fixtures/tiny_llama_pickled_shards/: config.json and tokenizer.json (copied), the
two shards and the index.

Run: just reference-pickled-shards   (needs torch, safetensors from PyPI)
"""
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "fixtures" / "tiny_llama"
OUT = ROOT / "tests" / "fixtures" / "tiny_llama_pickled_shards"
OUT.mkdir(parents=True, exist_ok=True)
for name in ["config.json", "tokenizer.json"]:
    shutil.copy(SRC / name, OUT / name)
tensors = load_file(str(SRC / "model.safetensors"))
names = sorted(tensors)
halves = [names[: len(names) // 2], names[len(names) // 2:]]
weight_map, total = {}, 0
for k, part in enumerate(halves, start=1):
    file = f"pytorch_model-{k:05d}-of-00002.bin"
    torch.save({n: tensors[n].clone() for n in part}, OUT / file)
    for n in part:
        weight_map[n] = file
        total += tensors[n].numel() * tensors[n].element_size()
(OUT / "pytorch_model.bin.index.json").write_text(
    json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1) + "\n")
print(f"wrote {OUT}: {len(names)} tensors in 2 shards")
