#!/usr/bin/env python3
"""Fixtures for glassbox's pretrained-SAE readers, each in its suite's on-disk layout, with the
codes and reconstructions the suite's reference loader gives on fixed inputs:

  gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_5/params.npz   Gemma Scope (np.savez)
  gemma-scope-2-1b-pt/resid_post/layer_2_width_16k_l0_small/         Gemma Scope 2
      params.safetensors + config.json
  llama-scope/Llama3_1-8B-Base-L4R-8x/hyperparams.json +             Llama Scope
      checkpoints/final.safetensors
  sparsify/layers.5/cfg.json + sae.safetensors (+ ../config.json)   EleutherAI sparsify

The Gemma Scope, Gemma Scope 2 and Llama Scope references come from SAELens's own converters
(`gemma_2_sae_huggingface_loader`, `gemma_3_sae_huggingface_loader`,
`llama_scope_sae_huggingface_loader`, with the Hub download pointed at these files) building
SAELens SAEs as `SAE.from_pretrained` does, norm scaling folded; sparsify's from
`sparsify.SparseCoder` itself (saved with `save_to_disk`, codes from `encode`). Tiny shapes
(d_in 8, 16 latents); random weights, seeded.

Run: just reference-sae-suites   (needs sae-lens, eai-sparsify, torch, numpy from PyPI)
"""
import json
import os
import shutil
from pathlib import Path

# sparsify picks a Triton decoder when Triton is importable; this machine has no GPU driver.
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

import numpy as np
import torch
import sae_lens
import sae_lens.loading.pretrained_sae_loaders as loaders
from safetensors.torch import save_file
from sae_lens import SAE
from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "sae_suites"
D, M = 8, 16
gen = torch.Generator().manual_seed(0)


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def inputs():
    return randn(6, D, scale=2.0)


def sae_from_converter(loader, repo_id, folder, files):
    """A SAELens SAE from one of its Hub converters, the download served from `files`."""
    from safetensors.torch import load_file

    def local(repo_id=None, filename=None, subfolder=None, **_):
        return str(files[Path(filename).name])
    loaders.hf_hub_download = local
    loaders.get_safetensors_tensor_shapes = lambda repo, name: {
        k: list(v.shape) for k, v in load_file(files[Path(name).name]).items()}
    cfg, state, _ = loader(repo_id=repo_id, folder_name=folder, device="cpu",
                           force_download=False, cfg_overrides={"device": "cpu", "dtype": "float32"})
    cfg = handle_config_defaulting(cfg)
    cfg_cls = SAE.get_sae_config_class_for_architecture(cfg["architecture"])
    sae_cfg = cfg_cls.from_dict(cfg)
    sae = SAE.get_sae_class_for_architecture(sae_cfg.architecture())(sae_cfg)
    sae.process_state_dict_for_loading(state)
    sae.load_state_dict(state)
    return sae, cfg


def record(sae, x):
    with torch.no_grad():
        codes = sae.encode(x.to(sae.dtype)).float()
        recon = sae.decode(codes.to(sae.dtype)).float()
    return {"codes": codes.tolist(), "reconstructions": recon.tolist(),
            "hook_name": sae.cfg.metadata.hook_name}


def gemma_scope(reference):
    folder = OUT / "gemma-scope-2b-pt-res" / "layer_3" / "width_16k" / "average_l0_5"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "params.npz", W_enc=randn(D, M).numpy(), W_dec=randn(M, D).numpy(),
             b_enc=randn(M, scale=0.5).numpy(), b_dec=randn(D, scale=0.5).numpy(),
             threshold=(torch.rand(M, generator=gen) * 3).numpy())
    # The converter reads d_in from the model name (2304 for gemma-2-2b); the fixture is tiny.
    sae, _ = sae_from_converter(
        lambda **kw: loaders.gemma_2_sae_huggingface_loader(
            **{**kw, "cfg_overrides": {**kw["cfg_overrides"], "d_in": D, "d_sae": M}}),
        "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_5",
        {"params.npz": folder / "params.npz"})
    x = inputs()
    reference["gemma_scope"] = {"path": str(folder.relative_to(OUT)), "inputs": x.tolist(),
                                **record(sae, x)}


def gemma_scope_2(reference):
    folder = OUT / "gemma-scope-2-1b-pt" / "resid_post" / "layer_2_width_16k_l0_small"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w_enc": randn(D, M), "w_dec": randn(M, D), "b_enc": randn(M, scale=0.5),
               "b_dec": randn(D, scale=0.5), "threshold": torch.rand(M, generator=gen) * 3},
              folder / "params.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "architecture": "jump_relu", "model_name": "gemma-v3-1b-pt",
        "hf_hook_point_in": "model.layers.2.output"}, indent=1))
    sae, _ = sae_from_converter(
        loaders.gemma_3_sae_huggingface_loader, "google/gemma-scope-2-1b-pt",
        "resid_post/layer_2_width_16k_l0_small",
        {"config.json": folder / "config.json",
         "params.safetensors": folder / "params.safetensors"})
    x = inputs()
    reference["gemma_scope_2"] = {"path": str(folder.relative_to(OUT)), "inputs": x.tolist(),
                                  **record(sae, x)}


def llama_scope(reference):
    folder = OUT / "llama-scope" / "Llama3_1-8B-Base-L4R-8x"
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": randn(M, D), "encoder.bias": randn(M, scale=0.5),
               "decoder.weight": randn(D, M), "decoder.bias": randn(D, scale=0.5)},
              folder / "checkpoints" / "final.safetensors")
    (folder / "hyperparams.json").write_text(json.dumps({
        "d_model": D, "d_sae": M, "hook_point_in": "blocks.4.hook_resid_post",
        "hook_point_out": "blocks.4.hook_resid_post", "act_fn": "jumprelu",
        "jump_relu_threshold": 0.7,
        "dataset_average_activation_norm": {"in": 5.0, "out": 5.0}}, indent=1))
    sae, cfg = sae_from_converter(
        loaders.llama_scope_sae_huggingface_loader, "fnlp/Llama3_1-8B-Base-LXR-8x",
        "Llama3_1-8B-Base-L4R-8x",
        {"hyperparams.json": folder / "hyperparams.json",
         "final.safetensors": folder / "checkpoints" / "final.safetensors"})
    # SAE.from_pretrained folds the dataset-norm scaling √d / norm_in into the weights.
    sae.fold_activation_norm_scaling_factor(D ** 0.5 / 5.0)
    x = inputs()
    reference["llama_scope"] = {"path": str(folder.relative_to(OUT)), "inputs": x.tolist(),
                                **record(sae, x)}


def sparsify(reference):
    from sparsify import SparseCoder, SparseCoderConfig
    root = OUT / "sparsify"
    shutil.rmtree(root, ignore_errors=True)
    torch.manual_seed(1)
    coder = SparseCoder(D, SparseCoderConfig(num_latents=M, k=4))
    with torch.no_grad():
        for p in coder.parameters():
            p.copy_(randn(*p.shape))
    coder.save_to_disk(root / "layers.5")
    (root / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m"}))
    x = inputs()
    with torch.no_grad():
        out = coder.encode(x)
        codes = torch.zeros(x.shape[0], M).scatter_(1, out.top_indices, out.top_acts)
        recon = coder.decode(out.top_acts, out.top_indices)
    reference["sparsify"] = {"path": "sparsify/layers.5", "inputs": x.tolist(),
                             "codes": codes.tolist(), "reconstructions": recon.tolist(),
                             "hook_name": "blocks.5.hook_resid_post"}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    import sparsify as sp
    reference = {"sae_lens_version": sae_lens.__version__,
                 "sparsify_version": getattr(sp, "__version__", "1.3.3"),
                 "torch_version": torch.__version__}
    for make in [gemma_scope, gemma_scope_2, llama_scope, sparsify]:
        make(reference)
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
