#!/usr/bin/env python3
"""SAE training throughput in PyTorch on the rows glassbox-bench-sae wrote: SAELens's TopK,
BatchTopK and JumpReLU trainers' forward/loss (`training_forward_pass`, their default
settings) with Adam, and a minimal PyTorch TopK loop with a dense and with a sparse (gathered)
decoder. Same workload: d_in 384 → 6,144 latents, k = 32, batch 4,096, 16 timed steps after
one warm-up step, all CPU threads.

Usage: pytorch_sae.py DATA.f32 OUT.json
"""
import json
import os
import sys
import time

import numpy as np
import torch

D, WIDTH, K, BATCH, STEPS = 384, 6144, 32, 4096, 16
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
x_all = torch.from_numpy(np.fromfile(sys.argv[1], dtype="<f4").reshape(-1, D).copy())
x_all = x_all * (D ** 0.5 / x_all.norm(dim=1).mean())
gen = torch.Generator().manual_seed(0)
batches = [x_all[torch.randint(0, x_all.shape[0], (BATCH,), generator=gen)] for _ in range(STEPS + 1)]


def timed(step):
    step(batches[0])  # warm-up
    start = time.perf_counter()
    for b in batches[1:]:
        step(b)
    return (time.perf_counter() - start) / STEPS


def minimal(sparse_decoder):
    w_dec = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(WIDTH, D), dim=1))
    w_enc = torch.nn.Parameter(w_dec.detach().t().clone())
    b_enc = torch.nn.Parameter(torch.zeros(WIDTH))
    b_dec = torch.nn.Parameter(x_all[:4096].mean(0).clone())
    opt = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=3e-4)

    def step(x):
        pre = (x - b_dec) @ w_enc + b_enc
        vals, idx = pre.topk(K, dim=-1, sorted=False)
        vals = vals.relu()
        if sparse_decoder:
            x_hat = torch.einsum("bk,bkd->bd", vals, w_dec[idx]) + b_dec
        else:
            f = torch.zeros_like(pre).scatter_(-1, idx, vals)
            x_hat = f @ w_dec + b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            w_dec.data = torch.nn.functional.normalize(w_dec.data, dim=1)

    return timed(step)


def saelens(architecture, init_threshold=None):
    from sae_lens.saes.sae import TrainStepInput

    if architecture == "topk":
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=WIDTH, k=K))
        coefficients = {}
    elif architecture == "batchtopk":
        from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D, d_sae=WIDTH, k=K))
        coefficients = {}
    else:
        from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
        extra = {} if init_threshold is None else {"jumprelu_init_threshold": init_threshold}
        sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=D, d_sae=WIDTH, **extra))
        coefficients = {"l0": sae.cfg.l0_coefficient}
    opt = torch.optim.Adam(sae.parameters(), lr=3e-4)
    dead = torch.zeros(WIDTH, dtype=torch.bool)

    def step(x):
        out = sae.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients=coefficients, dead_neuron_mask=dead,
                           n_training_steps=0, is_logging_step=False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return timed(step)


results = {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "loops": {}}
for name, fn in [("pytorch_dense_decoder", lambda: minimal(False)),
                 ("pytorch_sparse_decoder", lambda: minimal(True))]:
    s = fn()
    results["loops"][name] = {"architecture": "topk", "seconds_per_step": s, "tokens_per_second": BATCH / s}
try:
    import sae_lens
    results["sae_lens_version"] = sae_lens.__version__
    for architecture in ["topk", "batchtopk", "jumprelu"]:
        s = saelens(architecture)
        results["loops"][f"saelens_{architecture}_trainer"] = {
            "architecture": architecture, "seconds_per_step": s, "tokens_per_second": BATCH / s}
    # glassbox's jumprelu_sparse run: thresholds started where tens of latents fire. SAELens's
    # decoder rows start at norm 0.1 (its pre-activations are 0.1x glassbox's), so 0.2 here;
    # its step does the same dense work whatever fires.
    s = saelens("jumprelu", init_threshold=0.2)
    results["loops"]["saelens_jumprelu_trainer_sparse_start"] = {
        "architecture": "jumprelu_sparse", "seconds_per_step": s, "tokens_per_second": BATCH / s}
except ImportError as e:
    results["saelens_error"] = str(e)
json.dump(results, open(sys.argv[2], "w"), indent=1)
print(json.dumps(results, indent=1))
