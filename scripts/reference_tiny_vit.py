"""A tiny random ViT made with transformers, and its outputs, for the parity test.

tests/fixtures/tiny_vit/: config.json, model.safetensors (ViTForImageClassification: 32×32
images, 8×8 patches, 2 layers, hidden 32, 4 heads, 5 classes), preprocessor_config.json, and
reference.safetensors with `pixel_values` (NCHW), every `hidden_states` entry, the final
LayerNorm's output (`last_hidden_state`) and the logits.
Run with .venv-bench/bin/python (torch, transformers).
"""
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny_vit"


def main():
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=5,
                       id2label={i: f"class {i}" for i in range(5)}, label2id={f"class {i}": i for i in range(5)})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and embeddings
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(torch.rand_like(p) + 0.5)
            elif name.endswith("bias") or "cls_token" in name or "position" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, indent=1) + "\n")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        result = model(pixels, output_hidden_states=True)
        base = model.vit(pixels)
    tensors = {"pixel_values": pixels.contiguous(), "logits": result.logits.contiguous(),
               "last_hidden_state": base.last_hidden_state.contiguous()}
    for i, h in enumerate(result.hidden_states):
        tensors[f"hidden_states.{i}"] = h.contiguous()
    save_file(tensors, OUT / "reference.safetensors")
    (OUT / "reference.json").write_text(json.dumps({"transformers_version": transformers.__version__,
                                                    "torch_version": torch.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    main()
