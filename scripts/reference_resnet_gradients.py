#!/usr/bin/env python3
"""Gradients of the tiny ResNet fixtures from PyTorch autograd, for the parity test of
glassbox's hand-written ResNet backward (models/tests/parity_vision.rs).

For tests/fixtures/tiny_resnet and tiny_resnet_basic (made by reference_tiny_resnet.py): the
fixture's two `pixel_values` images, a fixed random seed `[2, classes]`, and the gradient of
Σ seed ⊙ logits with respect to the pixels (NCHW) and to every `hidden_states` entry (the stem
after its max pool, then each stage's output). Written to gradients.safetensors beside the
fixture.

Run: .venv-ref/bin/python scripts/reference_resnet_gradients.py   (torch, transformers)
"""
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import ResNetForImageClassification

ROOT = Path(__file__).resolve().parent.parent


def main():
    for name in ("tiny_resnet", "tiny_resnet_basic"):
        out = ROOT / "tests" / "fixtures" / name
        model = ResNetForImageClassification.from_pretrained(out).eval()
        pixels = load_file(out / "reference.safetensors")["pixel_values"].clone().requires_grad_(True)
        result = model(pixels, output_hidden_states=True)
        for h in result.hidden_states:
            h.retain_grad()
        seed = torch.randn(result.logits.shape, generator=torch.Generator().manual_seed(7))
        (seed * result.logits).sum().backward()
        tensors = {"seed": seed.contiguous(), "pixels.grad": pixels.grad.contiguous()}
        for i, h in enumerate(result.hidden_states):
            tensors[f"hidden_states.{i}.grad"] = h.grad.contiguous()
        save_file(tensors, out / "gradients.safetensors")
        print(f"wrote {out / 'gradients.safetensors'}")


if __name__ == "__main__":
    main()
