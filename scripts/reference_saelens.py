"""SAELens interop fixtures for glassbox's `sae::saelens` tests, made with SAELens itself.

Writes, under tests/fixtures/saelens/:
  topk/, standard/                  TopK and standard (ReLU) SAEs saved by SAELens
  jumprelu/, gated/                 JumpReLU and gated SAEs saved by SAELens
  batchtopk/, matryoshka/           BatchTopK and Matryoshka BatchTopK training SAEs saved
                                    for inference by SAELens (they become JumpReLU)
  legacy_topk/                      the TopK SAE with its config rewritten as SAELens 5 wrote
                                    TopK SAEs (architecture "standard", activation_fn_str
                                    "topk", activation_fn_kwargs.k, top-level hook_name)
  norm_rescale/, norm_layer/        a standard SAE with normalize_activations = "constant_norm_rescale"
                                    and a TopK SAE with "layer_norm" (apply_b_dec_to_input false):
                                    SAELens normalises each row at run time and maps the
                                    reconstruction back with that row's statistics
  topk_rescaled/                    a TopK SAE with rescale_acts_by_decoder_norm (top-k over
                                    pre-activations × decoder norms)
  reference.json                    inputs and SAELens's encode/decode outputs for each

With `--check RUN HOOK` it instead opens the SAE glassbox trained in a run
(RUN/dictionary/hook=HOOK/sae, SAELens layout) with SAELens itself, encodes the stored
activations of the feature examples glassbox recorded (feature_examples.parquet) and checks that
SAELens gives each feature the activation glassbox reported.

Run: just reference-saelens   (needs sae-lens, torch from PyPI)
"""

import json
import sys
from pathlib import Path

import torch
import sae_lens
from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "saelens"
D_IN, D_SAE, K = 8, 16, 4


def randomise(sae, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if name.startswith("b_") else 1.0))


def metadata():
    return SAEMetadata(model_name="glassbox-fixture", hook_name="blocks.0.hook_resid_post")


def thresholds(sae, seed):
    """Positive thresholds the size of typical pre-activations, so some latents fire and some
    pre-activations above zero are cut."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.threshold.copy_(torch.rand(sae.threshold.shape, generator=gen) * 3.0)


def legacy_topk():
    """The TopK fixture's config rewritten the way SAELens 5 saved TopK SAEs."""
    import shutil
    out = OUT / "legacy_topk"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(OUT / "topk", out)
    cfg = json.loads((out / "cfg.json").read_text())
    hook = cfg["metadata"]["hook_name"]
    for key in ("architecture", "k", "metadata", "rescale_acts_by_decoder_norm"):
        cfg.pop(key, None)
    cfg.update({"architecture": "standard", "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": K}, "hook_name": hook,
                "model_name": "glassbox-fixture"})
    (out / "cfg.json").write_text(json.dumps(cfg, indent=1))


def make_fixtures():
    torch.manual_seed(0)
    topk = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, metadata=metadata()))
    standard = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=metadata()))
    jumprelu = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=metadata()))
    gated = GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=metadata()))
    randomise(topk, 1)
    randomise(standard, 2)
    randomise(jumprelu, 4)
    thresholds(jumprelu, 5)
    randomise(gated, 6)
    topk.save_model(OUT / "topk")
    standard.save_model(OUT / "standard")
    jumprelu.save_model(OUT / "jumprelu")
    gated.save_model(OUT / "gated")
    legacy_topk()
    # Training SAEs saved for inference: SAELens turns the learnt global threshold into a
    # JumpReLU threshold per latent.
    batchtopk = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, metadata=metadata()))
    matryoshka = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, matryoshka_widths=[4, 8, D_SAE], metadata=metadata()))
    for i, sae in enumerate([batchtopk, matryoshka]):
        randomise(sae, 7 + i)
        with torch.no_grad():
            sae.topk_threshold.fill_(1.0 + i)
    batchtopk.save_inference_model(OUT / "batchtopk")
    matryoshka.save_inference_model(OUT / "matryoshka")
    norm_rescale = StandardSAE(StandardSAEConfig(
        d_in=D_IN, d_sae=D_SAE, normalize_activations="constant_norm_rescale", metadata=metadata()))
    norm_layer = TopKSAE(TopKSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, normalize_activations="layer_norm",
        apply_b_dec_to_input=False, metadata=metadata()))
    randomise(norm_rescale, 9)
    randomise(norm_layer, 10)
    norm_rescale.save_model(OUT / "norm_rescale")
    norm_layer.save_model(OUT / "norm_layer")
    # rescale_acts_by_decoder_norm: TopK ranks the pre-activations times the decoder rows'
    # norms, made very unequal here so the ranking differs from the plain one.
    rescaled = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True,
                                     metadata=metadata()))
    randomise(rescaled, 11)
    with torch.no_grad():
        rescaled.W_dec.mul_(torch.rand(D_SAE, 1, generator=torch.Generator().manual_seed(12)) * 4 + 0.1)
    rescaled.save_model(OUT / "topk_rescaled")
    x = torch.randn(5, D_IN, generator=torch.Generator().manual_seed(3)) * 2.0
    # Rows of very different norms and offsets: what the run-time normalisation is for.
    x = x * torch.tensor([[0.1], [1.0], [5.0], [20.0], [1.0]]) + torch.tensor([[0.0], [3.0], [0.0], [-2.0], [0.5]])
    reference = {"sae_lens_version": sae_lens.__version__, "torch_version": torch.__version__,
                 "inputs": x.tolist()}
    loaded = {name: SAE.load_from_disk(OUT / name)
              for name in ["jumprelu", "gated", "batchtopk", "matryoshka", "legacy_topk",
                           "norm_rescale", "norm_layer", "topk_rescaled"]}
    for name, sae in [("topk", topk), ("standard", standard), *loaded.items()]:
        with torch.no_grad():
            codes = sae.encode(x)
            if codes.is_sparse:
                codes = codes.to_dense()
            reference[name] = {"codes": codes.tolist(), "reconstructions": sae.decode(codes).tolist(),
                               "keys": {k: list(v.shape) for k, v in sae.state_dict().items()}}
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}")


def check(run, hook):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    folder = Path(run) / "dictionary" / f"hook={hook}"
    sae = SAE.load_from_disk(folder / "sae")
    examples = pq.read_table(folder / "feature_examples.parquet").to_pylist()
    acts = ds.dataset(Path(run) / "activations" / f"hook={hook}", format="parquet").to_table().to_pylist()
    rows = {(r["example_id"], r["position"]): r["act"] for r in acts}
    wanted = [e for e in examples if e["kind"] == "top"][:500]
    x = torch.tensor([rows[(e["example_id"], e["position"])] for e in wanted], dtype=torch.float32)
    with torch.no_grad():
        codes = sae.encode(x)
        if codes.is_sparse:
            codes = codes.to_dense()
    theirs = torch.tensor([codes[i, e["feature"]].item() for i, e in enumerate(wanted)])
    ours = torch.tensor([e["activation"] for e in wanted])
    diff = (theirs - ours).abs().max().item()
    print(json.dumps({"architecture": sae.cfg.architecture(), "d_in": sae.cfg.d_in,
                      "d_sae": sae.cfg.d_sae, "examples": len(wanted), "max_abs_diff": diff}))
    if diff > 1e-3 * max(1.0, ours.abs().max().item()):
        sys.exit(f"SAELens's activations differ from glassbox's by {diff}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3])
    else:
        make_fixtures()
