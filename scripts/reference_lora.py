#!/usr/bin/env python3
"""PEFT LoRA adapters on the tiny decoder fixtures, with the outputs of PEFT's own (unmerged)
forward, for glassbox's adapter merge (models/src/lora.rs):

  tiny_llama_lora   on tiny_llama: every projection adapted, rsLoRA scaling, a rank_pattern
                    (down_proj at rank 2) and an alpha_pattern (one layer's q_proj)
  tiny_qwen2_lora   on tiny_qwen2 (untied head): q/v adapted, an embedding LoRA, the head
                    trained whole (`modules_to_save`)
  tiny_gpt2_lora    on tiny_gpt2: GPT-2's Conv1D layers adapted (`fan_in_fan_out`)
  tiny_qwen2_lora_bin  tiny_qwen2_lora saved as older PEFT versions saved adapters: the same
                    tensors in a PyTorch pickle, adapter_model.bin (no references: it must load
                    to the safetensors adapter's model)
  tiny_vit_lora     on tiny_vit: attention and MLP adapted under transformers 5's module names
                    (`vit.layers.N.attention.q_proj`, `mlp.fc1`, …, which the checkpoint calls
                    `vit.encoder.layer.N.attention.attention.query`, `intermediate.dense`, …), the
                    classifier trained whole; reference.safetensors holds tiny_vit's
                    `pixel_values` and PEFT's logits on them

Each folder holds adapter_config.json (its `base_model_name_or_path` the base fixture's folder,
relative to the adapter) and adapter_model.safetensors as `save_pretrained` writes them, plus
reference.json / reference.safetensors as the other tiny decoders' (scripts/tiny_reference.py).
LoRA factors are drawn N(0, 0.1), so every adapter changes the model by far more than 1e-4.

Run: just reference-lora   (needs torch, transformers, peft, tokenizers from PyPI)
"""
import json
import shutil

import peft
import torch
import transformers
from safetensors.torch import load_file, save_file
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
    meta["target_modules"] = sorted(meta["target_modules"])  # PEFT writes a set's order
    (out / "adapter_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)
    tok = Tokenizer.from_file(str(FIX / base / "tokenizer.json"))
    write_reference(adapted, last_block(adapted), tok, TEXTS, out)


def pickled_copy(source, name):
    out = FIX / name
    out.mkdir(exist_ok=True)
    shutil.copy(FIX / source / "adapter_config.json", out / "adapter_config.json")
    torch.save(load_file(FIX / source / "adapter_model.safetensors"), out / "adapter_model.bin")
    print(f"wrote {out}")


def adapt_vit():
    torch.manual_seed(4)
    model = transformers.ViTForImageClassification.from_pretrained(FIX / "tiny_vit").eval()
    adapted = peft.get_peft_model(model, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "fc1"],
        modules_to_save=["classifier"])).eval()
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.normal_(0.0, 0.1)
    out = FIX / "tiny_vit_lora"
    adapted.save_pretrained(out)
    meta = json.loads((out / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = "../tiny_vit"
    meta["target_modules"] = sorted(meta["target_modules"])
    (out / "adapter_config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)
    pixels = load_file(FIX / "tiny_vit" / "reference.safetensors")["pixel_values"]
    with torch.no_grad():
        logits = adapted(pixel_values=pixels).logits
    save_file({"pixel_values": pixels.contiguous(), "logits": logits.contiguous()},
              out / "reference.safetensors")
    print(f"wrote {out}")


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
    pickled_copy("tiny_qwen2_lora", "tiny_qwen2_lora_bin")
    adapt_vit()
    print(f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
