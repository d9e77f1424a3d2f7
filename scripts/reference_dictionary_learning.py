#!/usr/bin/env python3
"""Fixtures for glassbox's dictionary_learning reader (github.com/saprmarks/dictionary_learning,
PyPI `dictionary-learning`): one folder per dictionary class, as its training loop saves them —
`ae.pt` (`torch.save` of the state dict) and `config.json` (`{"trainer": trainer.config}`) —
with the codes and reconstructions the class's own `encode`/`decode` give on fixed inputs, in
`reference.json`. Tiny shapes (d 8, 16 latents, k 3); random weights, seeded. Also
`malicious/ae.pt`: a pickle whose loading would run `os.system`, which glassbox must refuse
without running.

The package's `__init__` imports nnsight (pinned to an old release); the dictionary classes
need only torch and einops, so the package is stubbed and its modules imported one by one.

Run: just reference-dictionary-learning   (needs dictionary-learning (--no-deps), torch, einops)
"""
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch


def stub_package(name):
    spec = importlib.util.find_spec(name)
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module
    return Path(module.__path__[0])


root = stub_package("dictionary_learning")
trainers = types.ModuleType("dictionary_learning.trainers")
trainers.__path__ = [str(root / "trainers")]
sys.modules["dictionary_learning.trainers"] = trainers

from dictionary_learning.dictionary import AutoEncoder, GatedAutoEncoder, JumpReluAutoEncoder  # noqa: E402
from dictionary_learning.trainers.top_k import AutoEncoderTopK  # noqa: E402
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE  # noqa: E402
from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sae_suites" / "dictionary_learning"
D, M, K = 8, 16, 3
gen = torch.Generator().manual_seed(0)


def randomise(ae):
    with torch.no_grad():
        for name, p in ae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.dim() == 1 else 1.0))
        if hasattr(ae, "threshold") and isinstance(ae.threshold, torch.Tensor):
            ae.threshold.copy_(torch.rand(ae.threshold.shape, generator=gen) * 0.5 + 0.2)


def save(name, ae, dict_class, layer, submodule, reference, x, **extra):
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in ae.state_dict().items()}, folder / "ae.pt")
    config = {"trainer": {"dict_class": dict_class, "activation_dim": D, "dict_size": M,
                          "layer": layer, "lm_name": "EleutherAI/pythia-70m-deduped",
                          "submodule_name": submodule, **extra}}
    (folder / "config.json").write_text(json.dumps(config, indent=4) + "\n")
    with torch.no_grad():
        codes = ae.encode(x)
        recon = ae.decode(codes)
    reference[name] = {"path": name, "inputs": x.tolist(), "codes": codes.tolist(),
                       "reconstructions": recon.tolist(),
                       "hook_name": f"blocks.{layer}.hook_{submodule.rsplit('_layer_', 1)[0]}"}


class Exploit:
    """Unpickling this calls os.system: the reader must refuse it, not run it."""

    def __reduce__(self):
        import os
        return (os.system, ("touch glassbox-pickle-ran",))


def main():
    reference = {"torch_version": torch.__version__}
    x = torch.randn(6, D, generator=gen) * 2.0
    ae = AutoEncoder(D, M)
    randomise(ae)
    save("standard", ae, "AutoEncoder", 3, "resid_post_layer_3", reference, x)
    ae = GatedAutoEncoder(D, M)
    randomise(ae)
    save("gated", ae, "GatedAutoEncoder", 2, "mlp_out_layer_2", reference, x)
    ae = JumpReluAutoEncoder(D, M)
    randomise(ae)
    save("jumprelu", ae, "JumpReluAutoEncoder", 1, "attn_out_layer_1", reference, x)
    ae = AutoEncoderTopK(D, M, K)
    randomise(ae)
    save("topk", ae, "AutoEncoderTopK", 4, "resid_post_layer_4", reference, x, k=K)
    ae = BatchTopKSAE(D, M, K)
    randomise(ae)
    with torch.no_grad():
        ae.threshold.fill_(0.8)
    save("batch_topk", ae, "BatchTopKSAE", 4, "resid_post_layer_4", reference, x, k=K)
    ae = MatryoshkaBatchTopKSAE(D, M, K, group_sizes=[4, 4, 8])
    randomise(ae)
    with torch.no_grad():
        ae.threshold.fill_(0.8)
    save("matryoshka_batch_topk", ae, "MatryoshkaBatchTopKSAE", 5, "resid_post_layer_5",
         reference, x, k=K, group_fractions=[0.25, 0.25, 0.5])
    malicious = OUT / "malicious"
    malicious.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder.weight": Exploit()}, malicious / "ae.pt")
    (malicious / "config.json").write_text(json.dumps(
        {"trainer": {"dict_class": "AutoEncoder", "activation_dim": D, "dict_size": M}}))
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main()
