"""Shared by the tiny-decoder fixture scripts: run texts through a causal LM and save what the
parity tests compare against.

reference.json: texts and token ids; reference.safetensors, per text t: `t.hidden_states`
(`output_hidden_states`, stacked), `t.last_block` (the last block's output before the final
norm) and `t.logits`.
"""
import json
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file


ROOT = Path(__file__).resolve().parent.parent
# The GPT-2 fixture's tokenizer, shared by the other tiny decoders.
TOKENIZER = ROOT / "tests" / "fixtures" / "tiny_gpt2" / "tokenizer.json"
# Reference texts of the Llama-family and NeoX fixtures (different lengths, so padding matters).
TEXTS = [
    "the chef roasted the vegetables with garlic",
    "Stock prices fell sharply after the announcement, and then some more; prices kept falling.",
    "  spaces  and digits 2024, 3.14 — café!",
]


def prepare(name):
    """The fixture folder `tests/fixtures/<name>/`, created, with the shared tokenizer."""
    out = ROOT / "tests" / "fixtures" / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOKENIZER, out / "tokenizer.json")
    return out


def save_model(model, out):
    """Weights and config only: generation settings are not part of the fixture."""
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)


def randomize(model, is_norm):
    """Weights drawn larger than the default init so every block matters: the LayerNorms whose
    parameter names `is_norm` accepts get scales in [0.5, 1.5] and biases N(0, 0.1), every other
    parameter N(0, 0.2)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_norm(name):
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.2)


def make(name, model_class, config, seed, tok, texts=TEXTS):
    """A tiny random `model_class(config)` under tests/fixtures/<name>/ with its reference
    outputs; weights drawn larger than the default init so every block matters."""
    import torch
    out = prepare(name)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for param_name, p in model.named_parameters():
            if "norm" in param_name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    save_model(model, out)
    write_reference(model, model.model.layers[-1], tok, texts, out)


def write_reference(model, last_block, tok, texts, out):
    refs, tensors = [], {}
    for t, text in enumerate(texts):
        ids = tok.encode(text).ids
        captured = {}
        hook = last_block.register_forward_hook(
            lambda m, i, o: captured.__setitem__("x", o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            result = model(torch.tensor([ids]), output_hidden_states=True)
        hook.remove()
        x = captured["x"]
        tensors[f"{t}.hidden_states"] = torch.stack([hs[0] for hs in result.hidden_states]).contiguous()
        tensors[f"{t}.last_block"] = (x[0] if x.dim() == 3 else x).contiguous()
        tensors[f"{t}.logits"] = result.logits[0].contiguous()
        refs.append({"text": text, "input_ids": ids})
    save_file(tensors, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps({"transformers_version": transformers.__version__,
                                                    "torch_version": torch.__version__,
                                                    "texts": refs}, indent=1) + "\n")
    print(f"wrote {out}")
