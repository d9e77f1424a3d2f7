#!/usr/bin/env python3
"""PEFT LoRA adapters drawn at random on the random checkpoints of `fuzz_parity.py` — every text
family as a causal LM and as a sequence classifier (its head trained whole, `modules_to_save`),
and ViT image classifiers — with random target modules, ranks, alphas, rsLoRA, rank/alpha
patterns, embedding LoRAs on untied decoders and GPT-2's `fan_in_fan_out`, saved by PEFT beside
their base (`base_model_name_or_path` the base's folder) and run through the `glassbox` binary
on the adapter folder, against PEFT's own unmerged forward:

  text     `extract` of every block's output, the final norm and the LM's logits
           (fuzz_parity's `forward`), ≤ 1e-4 of each tensor's largest magnitude; for
           classifiers also `attribute` of class 1 against Captum on the PEFT model
           (fuzz_parity's `attribution`), which reads the head the adapter saved whole;
  vision   `extract` of the logits and `attribute` (saliency, gradient × input, IG, occlusion)
           against Captum on the PEFT model (fuzz_parity's `vision_checks`).

ViT adapters are saved under transformers 5's in-memory module names (`vit.layers.N.attention.
q_proj`, `mlp.fc1`), which the checkpoint spells differently — the merge maps them back.

Run: just fuzz-lora [FIRST LAST]   (seeds FIRST..LAST-1; needs torch, transformers, peft, captum,
tokenizers, pyarrow, pillow from PyPI). Prints one line per adapter and exits 1 on any mismatch.
"""
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import peft
import torch

import fuzz_parity as fp

LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BERT = ["query", "key", "value", "dense"]
TARGETS = {
    **{f: LLAMA for f in ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "olmo2", "olmo3"]},
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bert": BERT, "roberta": BERT, "electra": BERT,
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "vit": ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"],
}
EMBEDDINGS = {"gpt2": "wte", "gpt_neo": "wte", "neox": "embed_in"}
CLASS_HEADS = {"bert": "classifier", "roberta": "classifier", "electra": "classifier",
               "distilbert": "classifier", "vit": "classifier"}


def draw(family, seed, model, classifier):
    """A random LoRA config for `model`."""
    r = random.Random(seed * 7 + len(family))
    targets = r.sample(TARGETS[family], r.randint(1, len(TARGETS[family])))
    tied = getattr(model.config, "tie_word_embeddings", True)
    if family not in fp.ENCODERS and family != "vit" and not tied and r.random() < 0.3:
        targets.append(EMBEDDINGS.get(family, "embed_tokens"))
    config = dict(r=r.choice([2, 4, 8]), lora_alpha=r.choice([4, 8, 16, 32]), target_modules=targets,
                  use_rslora=r.random() < 0.3, fan_in_fan_out=family == "gpt2")
    if r.random() < 0.4:
        config["rank_pattern"] = {targets[0]: r.choice([1, 2, 3])}
    if r.random() < 0.4:
        config["alpha_pattern"] = {targets[-1]: r.choice([2, 64])}
    if classifier:
        config["modules_to_save"] = [CLASS_HEADS.get(family, "score")]
    return peft.LoraConfig(**config)


def adapt(model, config, seed, base, extra=()):
    """`model` with the adapter (factors N(0, 0.1), a whole head N(0, 0.2)), saved beside `base`."""
    torch.manual_seed(seed)
    adapted = peft.get_peft_model(model, config).eval()
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.1)
            elif "modules_to_save" in name:
                p.normal_(0.0, 0.2)
    out = base.with_name(base.name + "_lora")
    adapted.save_pretrained(out)
    meta = json.loads((out / "adapter_config.json").read_text())
    meta["base_model_name_or_path"] = f"../{base.name}"
    (out / "adapter_config.json").write_text(json.dumps(meta))
    for name in ["data.jsonl", *extra]:
        (shutil.copytree if (base / name).is_dir() else shutil.copy)(base / name, out / name)
    return adapted, out


class Forward(torch.nn.Module):
    """PEFT's model called as fuzz_parity calls a transformers one."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, output_hidden_states=True):
        return self.model(input_ids=ids, output_hidden_states=output_hidden_states)


def text(family, seed, kind, tmp):
    base = tmp / f"{family}_{seed}_{kind}"
    base.mkdir()
    model, tok = fp.build(family, seed, kind, base)
    if model is None:
        return None
    config = draw(family, seed, model, kind == "cls")
    adapted, out = adapt(model, config, seed, base)
    checks = {"forward": fp.forward(Forward(adapted), tok, family, kind == "lm", out)}
    if kind == "cls" and not isinstance(checks["forward"], str):
        # The head the adapter saved whole decides class 1's logit.
        checks["attribution"] = fp.attribution(adapted, tok, False, out)
    return sorted(config.target_modules), checks


def vision(seed, tmp):
    base = tmp / f"vit_{seed}"
    base.mkdir()
    model, pixels = fp.build_vision("vit", seed, base)
    config = draw("vit", seed, model, True)
    adapted, out = adapt(model, config, seed, base, ["images"])
    return sorted(config.target_modules), fp.vision_checks(adapted, pixels, out)


def main():
    first, last = (int(a) for a in (sys.argv[1:3] if len(sys.argv) >= 3 else (0, 2)))
    failures = 0
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for seed in range(first, last):
            cases = [(f"{f}_{seed}_{k}", lambda f=f, k=k: text(f, seed, k, tmp))
                     for f in fp.DECODERS + sorted(fp.ENCODERS)
                     for k in (["cls"] if f in fp.ENCODERS else ["lm", "cls"])]
            cases.append((f"vit_{seed}", lambda: vision(seed, tmp)))
            for name, case in cases:
                result = case()
                if result is None:
                    continue
                targets, checks = result
                failures += not fp.report(f"{name} {targets}", checks)
    print(f"{failures} mismatches; peft {peft.__version__}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
