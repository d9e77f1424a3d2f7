#!/usr/bin/env python3
"""Reference hidden states for all-MiniLM-L6-v2 from PyTorch `transformers`.

Writes tests/fixtures/minilm_reference.json (texts, token ids) and
tests/fixtures/minilm_hidden_states.safetensors (`hidden_states.<i>`: [7, tokens, 384] float32,
`output_hidden_states=True` of `BertModel`, one text at a time, no padding). The parity tests
compare glassbox's hooks `blocks.0.hook_resid_pre` and `blocks.{0..5}.hook_resid_post` against
these to 1e-4.

The model is loaded from the Hugging Face cache laid out by `just models` (HF_HUB_OFFLINE=1), the
same files glassbox loads. Run with `just reference` (needs torch and transformers from PyPI).
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MAX_LENGTH = 128

# The first examples of the built-in data set (the end-to-end test finds them in a pipeline
# run) and edge cases for the model-level test: unicode, whitespace runs, digits, truncation.
default_rows = [json.loads(l) for l in (ROOT / "data/sets/default.jsonl").read_text().splitlines()[:6]]
EXTRA = [
    "Café au lait costs 3,50 € — naïve résumé, 東京, 😀!",
    "  spaces    and\ttabs\n\nnew lines  ",
    "In 2024, 1,234,567 people paid $89.99 for version 3.14.",
    " ".join(["The long sentence keeps going so that truncation at the maximum length applies."] * 12),
]
texts = [r["text"] for r in default_rows] + EXTRA

torch.manual_seed(0)
tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL)
model = transformers.AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()

records, tensors = [], {}
with torch.no_grad():
    for i, text in enumerate(texts):
        enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH)
        out = model(**enc, output_hidden_states=True)
        hs = torch.stack([h[0] for h in out.hidden_states]).contiguous().float()
        tensors[f"hidden_states.{i}"] = hs
        records.append({"text": text, "input_ids": enc["input_ids"][0].tolist()})

fixtures = ROOT / "tests/fixtures"
fixtures.mkdir(parents=True, exist_ok=True)
save_file(tensors, str(fixtures / "minilm_hidden_states.safetensors"))
meta = {
    "model": MODEL,
    "max_length": MAX_LENGTH,
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "n_default_set_examples": len(default_rows),
    "texts": records,
}
(fixtures / "minilm_reference.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
print(f"wrote {len(texts)} reference texts to {fixtures}", file=sys.stderr)
