"""Tiny random ResNets made with transformers, and their outputs, for the parity tests.

tests/fixtures/tiny_resnet/ (bottleneck layers, stride in the 3×3) and
tests/fixtures/tiny_resnet_basic/ (basic layers, downsampling in the first stage): each gets
config.json, model.safetensors, preprocessor_config.json and reference.safetensors with the
input `pixel_values` (NCHW, two random 64×64 images), every `hidden_states` entry, the pooled
features and the logits. Batch norms get random running statistics so folding them is tested.
Run with .venv-bench/bin/python (torch, transformers).
"""
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import ResNetConfig, ResNetForImageClassification

ROOT = Path(__file__).resolve().parent.parent


def randomize_batch_norms(model, g):
    """Random scales, shifts and running statistics in every batch norm (drawn from `g`), so
    that folding them into the convolutions is tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def build(name, **kwargs):
    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[16, 32], depths=[2, 1],
                          num_labels=5, id2label={i: f"class {i}" for i in range(5)},
                          label2id={f"class {i}": i for i in range(5)}, **kwargs)
    model = ResNetForImageClassification(config).eval()
    g = torch.Generator().manual_seed(1)
    randomize_batch_norms(model, g)
    out = ROOT / "tests" / "fixtures" / name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 72}, "resample": 2,
        "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}, indent=1) + "\n")
    pixels = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        result = model(pixels, output_hidden_states=True)
        base = model.resnet(pixels)
    tensors = {"pixel_values": pixels.contiguous(), "logits": result.logits.contiguous(),
               "pooled": base.pooler_output.flatten(1).contiguous()}
    for i, h in enumerate(result.hidden_states):
        tensors[f"hidden_states.{i}"] = h.contiguous()
    save_file(tensors, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps({"transformers_version": transformers.__version__,
                                                    "torch_version": torch.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    build("tiny_resnet", layer_type="bottleneck")
    build("tiny_resnet_basic", layer_type="basic", downsample_in_first_stage=True)
