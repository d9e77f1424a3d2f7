#!/usr/bin/env python3
"""Fixtures for glassbox's readers of the suites that ship bare pickled state dicts, in their
Hub layouts, with the codes and reconstructions SAELens's own converters give on fixed inputs:

  goodfire/Llama-3.1-8B-Instruct-SAE-l19.pth          Goodfire (torch.save of a dict;
                                                       nn.Linear layouts, ReLU, no centring)
  SAE-Res-Qwen3-1.7B-Base-W32K-L0_4/layer2.sae.pt      Qwen-Scope (W_enc [m, d], W_dec [d, m];
                                                       TopK, k = 4 from the repo name)

References: SAELens's `get_goodfire_huggingface_loader` and `qwen_scope_sae_huggingface_loader`
with the Hub download served from these files and the widths overridden to the fixture's
(d_in 8, 16 latents; the converters otherwise take 4096/65536 and 2048/32K from the repo), the
SAE built as `SAE.from_pretrained` builds it. Random weights, seeded.

Run: just reference-pickled-suites   (needs sae-lens and torch from PyPI)
"""
import json
from pathlib import Path

import torch
import sae_lens
import sae_lens.loading.pretrained_sae_loaders as loaders

from reference_sae_suites import sae_from_converter  # scripts/: the converter, served locally

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "sae_suites" / "pickled"
D, M = 8, 16
gen = torch.Generator().manual_seed(3)


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def build(loader, repo_id, filename, file):
    """SAELens's converter with the download served from `file` and the fixture's widths."""
    return sae_from_converter(
        lambda **kw: loader(**{**kw, "cfg_overrides": {**kw["cfg_overrides"], "d_in": D, "d_sae": M}}),
        repo_id, filename, {filename: file})[0]


def record(sae, path, x):
    with torch.no_grad():
        codes = sae.encode(x).float()
        recon = sae.decode(codes).float()
    return {"path": str(path.relative_to(OUT)), "inputs": x.tolist(), "codes": codes.tolist(),
            "reconstructions": recon.tolist(), "hook_name": sae.cfg.metadata.hook_name,
            "model_name": sae.cfg.metadata.model_name}


def goodfire(reference):
    folder = OUT / "goodfire"
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "Llama-3.1-8B-Instruct-SAE-l19.pth"
    torch.save({"encoder_linear.weight": randn(M, D), "encoder_linear.bias": randn(M, scale=0.5),
                "decoder_linear.weight": randn(D, M), "decoder_linear.bias": randn(D, scale=0.5)},
               file)
    sae = build(loaders.get_goodfire_huggingface_loader, "Goodfire/Llama-3.1-8B-Instruct-SAE-l19",
                file.name, file)
    reference["goodfire"] = record(sae, file, randn(6, D, scale=2.0))


def qwen_scope(reference):
    folder = OUT / "SAE-Res-Qwen3-1.7B-Base-W32K-L0_4"
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "layer2.sae.pt"
    torch.save({"W_enc": randn(M, D), "W_dec": randn(D, M), "b_enc": randn(M, scale=0.5),
                "b_dec": randn(D, scale=0.5)}, file)
    sae = build(loaders.qwen_scope_sae_huggingface_loader, "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_4",
                file.name, file)
    reference["qwen_scope"] = record(sae, file, randn(6, D, scale=2.0))


def main():
    reference = {"sae_lens_version": sae_lens.__version__, "torch_version": torch.__version__}
    goodfire(reference)
    qwen_scope(reference)
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
