"""A tiny random CLIP made with transformers, and its outputs, for the parity test.

tests/fixtures/tiny_clip/: config.json, model.safetensors (CLIPModel: 32×32 images, 8×8
patches, both towers 2 layers of width 32, projection 16), the tiny GPT-2 fixture's byte-level
BPE tokenizer (512 tokens, end-of-text id set as the text tower's eos_token_id), a
preprocessor_config.json, and reference.safetensors with `pixel_values` (NCHW), the vision
tower's `hidden_states`, `pooler_output`, the normalised image and text embeddings and the
`logits_per_image`, for the prompts in reference.json (their token ids end with end-of-text).
Run with .venv-bench/bin/python (torch, transformers).
"""
import json
import shutil
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import CLIPConfig, CLIPModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tiny_clip"
PROMPTS = ["a photo of a zebra", "stripes and dots", "a cup of coffee"]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "tiny_gpt2" / "tokenizer.json", OUT / "tokenizer.json")
    tok = Tokenizer.from_file(str(OUT / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32, eos_token_id=eos,
                         bos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("layer_norm" in name or "layrnorm" in name or "layernorm" in name) and name.endswith("weight"):
                p.copy_(torch.rand_like(p) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 32}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.4815, 0.4578, 0.4082], "image_std": [0.2686, 0.2613, 0.2758]}, indent=1) + "\n")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = [tok.encode(p).ids + [eos] for p in PROMPTS]
    width = max(len(i) for i in ids)
    padded = torch.tensor([i + [eos] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    with torch.no_grad():
        out = model(input_ids=padded, attention_mask=mask, pixel_values=pixels, output_hidden_states=True)
        vision = model.vision_model(pixels, output_hidden_states=True)
    tensors = {"pixel_values": pixels.contiguous(), "pooler_output": vision.pooler_output.contiguous(),
               "image_embeds": out.image_embeds.contiguous(), "text_embeds": out.text_embeds.contiguous(),
               "logits_per_image": out.logits_per_image.contiguous()}
    for i, h in enumerate(vision.hidden_states):
        tensors[f"hidden_states.{i}"] = h.contiguous()
    save_file(tensors, OUT / "reference.safetensors")
    (OUT / "reference.json").write_text(json.dumps({
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "prompts": [{"text": p, "input_ids": i} for p, i in zip(PROMPTS, ids)]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
