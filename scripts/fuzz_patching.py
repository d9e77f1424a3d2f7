#!/usr/bin/env python3
"""Config-fuzzed patching parity: the random tiny decoders of fuzz_parity.py (every causal family,
options combined at random) through `glassbox patch` with a random metric (`logit_diff`,
`logprob`, `prob`, `kl`), direction (`denoise`, `noise`), position set (`all`, `last`, `0,2`)
and ablation (`zero`, `mean`), with per-head `attn.hook_z`, against PyTorch forward hooks on the
`transformers` model (what TransformerLens and nnsight do):

  patch      every patched run's metric, and the clean and corrupted metrics, within 1e-3 of
             the clean − corrupted gap (at least 1e-3 of the metric; for `logit_diff`, of the
             logit scale);
  ablation   each hook's (and head's) metric change under zero or mean ablation over the
             clean prompts, within 1e-3 (relative, floor 1e-2);
  atp        attribution patching: metric(base) + (a_source − a_base) · ∂metric/∂a by
             autograd at the base run, within 1e-3 of the gap.

The committed parity tests (runner/tests/patching_parity.rs) fix one config per family and the
default options; this draws the rest. Models and runs go to a temporary folder.

Run: just fuzz-patching [FIRST LAST]   (seeds FIRST..LAST-1; needs torch, transformers,
tokenizers, pyarrow from PyPI). Prints one line per model and exits 1 on any mismatch.
"""
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import fuzz_parity as fuzz
import numpy as np
import pyarrow.parquet as pq
import reference_patching as rp
import torch

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.0.hook_mlp_out",
         "blocks.1.hook_resid_post", "blocks.1.attn.hook_z"]


def hook_module(mods, name):
    """(module, kind) of a hook: reference_patching's, except that glassbox's `hook_attn_out` and
    `hook_mlp_out` are what the residual stream receives — after Gemma's and OLMo-2/3's
    post-norms. Copying one position (patching) is the same on either side of a per-token norm;
    zero is too, but a mean is not."""
    _, layer, rest = name.split(".", 2)
    block = mods[int(layer)][0]
    if hasattr(block, "post_feedforward_layernorm"):
        if rest == "hook_attn_out":
            return block.post_attention_layernorm, "out"
        if rest == "hook_mlp_out":
            return block.post_feedforward_layernorm, "out"
    return rp.hook_module(mods, name)


def as3(x):
    """`[1, tokens, width]` view of an activation (OPT's MLP runs on `[tokens, width]` rows)."""
    return x if x.dim() == 3 else x.view(1, -1, x.shape[-1])


def metric(kind, logits, answer, wrong, clean_logits):
    """The metric of last-position logits (a tensor, differentiable)."""
    log_p = torch.log_softmax(logits, -1)
    if kind == "logit_diff":
        return logits[answer] - logits[wrong]
    if kind == "logprob":
        return log_p[answer]
    if kind == "prob":
        return log_p[answer].exp()
    clean = torch.log_softmax(clean_logits, -1)
    return (clean.exp() * (clean - log_p)).sum()


def last_logits(model, ids):
    return model(torch.tensor([ids])).logits[0, -1].double()


def run(model, mods, ids, edits):
    """Last-position logits with `edits` = [(hook, fn)] applied (fn(x) → x or None)."""
    handles = [rp.register(*hook_module(mods, name), fn) for name, fn in edits]
    try:
        with torch.no_grad():
            return last_logits(model, ids)
    finally:
        for h in handles:
            h.remove()


def cache(model, mods, ids):
    saved = {}
    keep = [(n, lambda x, n=n: saved.__setitem__(n, as3(x.detach().clone()))) for n in HOOKS]
    return run(model, mods, ids, keep), saved


def gradients(model, mods, ids, kind, answer, wrong, clean_logits):
    """(metric, {hook: activation with its gradient}) at a base run."""
    leaves, handles = {}, []
    for name in HOOKS:
        def grab(x, name=name):
            x.retain_grad()
            leaves[name] = x
        handles.append(rp.register(*hook_module(mods, name), grab))
    f = metric(kind, last_logits(model, ids), answer, wrong, clean_logits)
    f.backward()
    for h in handles:
        h.remove()
    return float(f.detach()), leaves


def slices(width, heads, name):
    """The patched slices of a hook: each head's of `attn.hook_z`, else the whole width."""
    if not name.endswith("attn.hook_z"):
        return [(None, 0, width)]
    d = width // heads
    return [(h, h * d, (h + 1) * d) for h in range(heads)]


def row(table, name, head, **where):
    sel = table[table.hook == name]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    sel = sel[sel["head"].isna()] if head is None else sel[sel["head"] == head]
    if "neuron" in sel:
        sel = sel[sel["neuron"].isna() & sel["feature"].isna()]
    return sel.iloc[0] if len(sel) == 1 else None


def check(model, tok, out, r):
    """The three distances of one random model and option draw, or an error string."""
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    family = type(model).__name__
    mods = rp.modules(model, "gpt2" if "GPT2" in family else "neox" if "NeoX" in family
                      else "gpt_neo" if "GPTNeo" in family else "opt" if "OPT" in family else "llama")
    pairs = [(c, k) for c, k in rp.CANDIDATES if len(tok.encode(c).ids) == len(tok.encode(k).ids)][:2]
    answer, wrong = tok.encode(" the").ids[0], tok.encode(" a").ids[0]
    (out / "pairs.jsonl").write_text("".join(json.dumps(
        {"clean": c, "corrupted": k, "answer": " the", "wrong": " a"}) + "\n" for c, k in pairs))
    kind = r.choice(["logit_diff", "logprob", "prob", "kl"])
    direction = r.choice(["denoise", "noise"])
    positions = r.choice(["all", "last", "0,2"])
    ablate = r.choice(["zero", "mean"])
    options = f"{kind} {direction} positions={positions} ablate={ablate}"
    p = subprocess.run([str(fuzz.GLASSBOX), "-q", "patch", "--model", str(out), "--run", str(out / "run"),
                        "--pairs", str(out / "pairs.jsonl"), "--hooks", ",".join(HOOKS), "--heads",
                        "--positions", positions, "--metric", kind, "--direction", direction,
                        "--ablate", ablate], capture_output=True, text=True)
    if p.returncode:
        return options, f"patch exit {p.returncode}: {p.stderr.strip()[-300:]}"
    results = pq.read_table(out / "run" / "patching" / "results.parquet").to_pandas()
    ablation = pq.read_table(out / "run" / "patching" / "ablation.parquet").to_pandas()
    worst = {"patch": 0.0, "atp": 0.0, "ablation": 0.0}
    cleans = []
    for i, (c, k) in enumerate(pairs):
        clean_ids, corrupt_ids = tok.encode(c).ids, tok.encode(k).ids
        clean_logits, clean_cache = cache(model, mods, clean_ids)
        corrupt_logits, corrupt_cache = cache(model, mods, corrupt_ids)
        cleans.append((clean_ids, clean_logits, clean_cache))
        m_clean = float(metric(kind, clean_logits, answer, wrong, clean_logits))
        m_corrupt = float(metric(kind, corrupt_logits, answer, wrong, clean_logits))
        # The gap, floored at 1e-3 of the metric (a window can hide the corrupted tokens from
        # the last position: clean and corrupted runs then agree to f32 rounding).
        size = max(abs(m_clean), abs(m_corrupt), 1)
        scale = size if kind == "logit_diff" else max(abs(m_clean - m_corrupt), 1e-3 * size)
        mine = results[results.pair == i]
        worst["patch"] = max(worst["patch"], abs(mine.metric_clean.iloc[0] - m_clean) / scale,
                             abs(mine.metric_corrupted.iloc[0] - m_corrupt) / scale)
        base, source = (corrupt_ids, clean_cache) if direction == "denoise" else (clean_ids, corrupt_cache)
        f_base, leaves = gradients(model, mods, base, kind, answer, wrong, clean_logits)
        at = {"all": range(len(base)), "last": [len(base) - 1], "0,2": [0, 2]}[positions]
        for name in HOOKS:
            for head, lo, hi in slices(source[name].shape[-1], heads, name):
                for pos in at:
                    def patch(x, name=name, pos=pos, lo=lo, hi=hi):
                        x = x.clone()
                        as3(x)[0, pos, lo:hi] = source[name][0, pos, lo:hi]
                        return x
                    exact = float(metric(kind, run(model, mods, base, [(name, patch)]), answer, wrong, clean_logits))
                    base_act, grad = as3(leaves[name].detach()), as3(leaves[name].grad)
                    step = (source[name][0, pos, lo:hi] - base_act[0, pos, lo:hi]).double()
                    atp = f_base + float((grad[0, pos, lo:hi].double() * step).sum())
                    got = row(mine, name, head, position=pos)
                    if got is None:
                        return options, f"no row for {name} position {pos} head {head}"
                    worst["patch"] = max(worst["patch"], abs(got.metric - exact) / scale)
                    worst["atp"] = max(worst["atp"], abs(got.atp_metric - atp) / scale)
    for name in HOOKS:
        mean = torch.cat([cached[name][0] for _, _, cached in cleans], 0).mean(0)
        for head, lo, hi in slices(mean.shape[-1], heads, name):
            def ablated(x, lo=lo, hi=hi):
                x = x.clone()
                as3(x)[0, :, lo:hi] = 0 if ablate == "zero" else mean[lo:hi]
                return x
            deltas = [float(metric(kind, run(model, mods, ids, [(name, ablated)]), answer, wrong, logits)
                            - metric(kind, logits, answer, wrong, logits)) for ids, logits, _ in cleans]
            got = row(ablation, name, head)
            if got is None:
                return options, f"no ablation row for {name} head {head}"
            want = float(np.mean(deltas))
            worst["ablation"] = max(worst["ablation"], abs(got.delta - want) / max(abs(want), 1e-2))
    return options, worst


def main():
    first, last = (int(a) for a in (sys.argv[1:3] if len(sys.argv) >= 3 else (0, 3)))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first, last):
            for family in fuzz.DECODERS:
                out = Path(tmp) / f"{family}_{seed}"
                out.mkdir()
                model, tok = fuzz.build(family, seed, "lm", out)
                layers = getattr(model.config, "num_hidden_layers", None) or model.config.n_layer
                if layers < 2:
                    continue  # the hooks name two blocks
                options, worst = check(model, tok, out, random.Random(seed * 31 + len(family)))
                bad = isinstance(worst, str) or max(worst.values()) > 1e-3
                failures += bad
                shown = worst if isinstance(worst, str) else {k: f"{v:.1e}" for k, v in worst.items()}
                print(f"{'BAD' if bad else 'ok '} {out.name} ({options}): {shown}", flush=True)
    print(f"{failures} mismatches; torch {torch.__version__}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
