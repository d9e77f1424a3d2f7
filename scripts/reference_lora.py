#!/usr/bin/env python3
"""PEFT LoRA adapters on the tiny decoder fixtures, with the outputs of PEFT's own (unmerged)
forward, for glassbox's adapter merge (models/src/lora.rs):

  tiny_llama_lora   on tiny_llama: every projection adapted, rsLoRA scaling, a rank_pattern
                    (down_proj at rank 2) and an alpha_pattern (one layer's q_proj)
  tiny_qwen2_lora   on tiny_qwen2 (untied head): q/v adapted, an embedding LoRA, the head
                    trained whole (`modules_to_save`)
  tiny_gpt2_lora    on tiny_gpt2: GPT-2's Conv1D layers adapted (`fan_in_fan_out`)

Each folder holds adapter_config.json (its `base_model_name_or_path` the base fixture's folder,
relative to the adapter) and adapter_model.safetensors as `save_pretrained` writes them, plus
reference.json / reference.safetensors as the other tiny decoders' (scripts/tiny_reference.py).
LoRA factors are drawn N(0, 0.1), so every adapter changes the model by far more than 1e-4.

Run: just reference-lora   (needs torch, transformers, peft, tokenizers from PyPI)
"""
import json

import peft
import torch
import transformers
from tokenizers import Tokenizer

from tiny_reference import ROOT, TEXTS, write_reference

FIX = ROOT / "tests" / "fixtures"


def adapt(base, name, config, seed, last_block):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(FIX / base).eval()
    adapted = peft.get_peft_model(model, config).eval()
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_" in n:
                p.normal_(0.0, 0.1)
    out = FIX / name
    adapted.save_pretrained(out)
    meta = json.loads((out / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = f"../{base}"
    (out / "adapter_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)
    tok = Tokenizer.from_file(str(FIX / base / "tokenizer.json"))
    write_reference(adapted, last_block(adapted), tok, TEXTS, out)


def main():
    adapt("tiny_llama", "tiny_llama_lora", peft.LoraConfig(
        r=4, lora_alpha=8, use_rslora=True,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        rank_pattern={"down_proj": 2}, alpha_pattern={"model.layers.1.self_attn.q_proj": 16}),
        1, lambda m: m.base_model.model.model.layers[-1])
    adapt("tiny_qwen2", "tiny_qwen2_lora", peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "embed_tokens"],
        modules_to_save=["lm_head"]),
        2, lambda m: m.base_model.model.model.layers[-1])
    adapt("tiny_gpt2", "tiny_gpt2_lora", peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True),
        3, lambda m: m.base_model.model.transformer.h[-1])
    print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
