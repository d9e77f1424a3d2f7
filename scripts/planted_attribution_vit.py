#!/usr/bin/env python3
"""A tiny ViT built for the planted-signal attribution test (runner/tests/attribution_planted.rs):
trained so that class 1 means "a bright 6×6 square in the top-left quadrant" and class 0 "noise
only", on a background of uniform noise in ±0.15 it must learn to ignore. Nothing outside the
top-left quadrant carries evidence, so a faithful attribution of class 1's logit puts its
positive mass there.

Writes tests/fixtures/planted_vit/ (config.json, model.safetensors, preprocessor_config.json),
~40 KB. Run: just planted-attribution (torch, transformers from PyPI). Seeded: the same weights
on a rerun with the same torch.
"""
import json
from pathlib import Path

import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "planted_vit"
SIZE, SQUARE = 32, 6


def batch(n, g):
    x = (torch.rand((n, 3, SIZE, SIZE), generator=g) * 2 - 1) * 0.15
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        if y[i] == 0:
            continue
        top = int(torch.randint(0, 16 - SQUARE + 1, (1,), generator=g))
        left = int(torch.randint(0, 16 - SQUARE + 1, (1,), generator=g))
        x[i, :, top : top + SQUARE, left : left + SQUARE] = 1.0
    return x, y


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    config = transformers.ViTConfig(
        image_size=SIZE, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=2,
        id2label={0: "noise", 1: "square"}, label2id={"noise": 0, "square": 1},
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = transformers.ViTForImageClassification(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(1500):
        x, y = batch(64, g)
        # Label smoothing keeps the logits moderate: a saturated logit leaves IG little to
        # integrate on the square and spreads its mass over the noise.
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y, label_smoothing=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = batch(512, g)
    with torch.no_grad():
        acc = (model(pixel_values=x).logits.argmax(-1) == y).float().mean().item()
    print(f"held-out accuracy {acc:.3f}, last loss {loss.item():.4f}")
    assert acc > 0.97, "the planted model did not learn its task"
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": False, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": SIZE, "width": SIZE},
    }))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
