#!/usr/bin/env python3
"""Captum's integrated gradients on SmolLM2-135M (the GGUF from `just models`, dequantised by
`transformers`), next-token logits from all-zero input embeddings: the completeness error
|Σ attributions − (f(x) − f(0))| / |f(x) − f(0)| at 64, 256 and 1,024 Gauss–Legendre steps, and
at 64 with the first token's embedding kept in the baseline. The figures in
docs/perf/attribution.md ("IG completeness at 64 steps") come from this script.

Run: .venv-ref/bin/python scripts/ig_completeness_smollm2.py   (torch, transformers, gguf, captum)
"""
import torch
import transformers
from captum.attr import IntegratedGradients
from huggingface_hub import snapshot_download

REPO, FILE = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [("The capital of France is", " Paris"), ("One, two, three, four,", " five")]


def completeness(f, x, baseline, steps):
    gap = (f(x) - f(baseline)).item()
    attributions = IntegratedGradients(f).attribute(
        x, baselines=baseline, n_steps=steps, internal_batch_size=64)
    return abs(attributions.sum().item() - gap) / abs(gap), gap


def main():
    snapshot = snapshot_download(REPO, allow_patterns=[FILE])
    tok = transformers.AutoTokenizer.from_pretrained(snapshot, gguf_file=FILE)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        snapshot, gguf_file=FILE, dtype=torch.float64).eval()
    embed = model.get_input_embeddings()
    for prompt, answer in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        target = tok(answer, add_special_tokens=False).input_ids[0]
        x = embed(ids).detach()

        def f(e):
            return model(inputs_embeds=e).logits[:, -1, target]

        zero = torch.zeros_like(x)
        for steps in (64, 256, 1024):
            error, gap = completeness(f, x, zero, steps)
            print(f"{prompt!r} → {answer!r}: gap {gap:.2f}, Gauss–Legendre {steps}: {error:.4f}")
        kept = zero.clone()
        kept[:, 0] = x[:, 0]
        error, gap = completeness(f, x, kept, 64)
        print(f"{prompt!r}: first token kept, gap {gap:.2f}, Gauss–Legendre 64: {error:.4f}")


if __name__ == "__main__":
    main()
