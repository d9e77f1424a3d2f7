#!/usr/bin/env python3
"""Exact activation patching on the tiny random decoders with PyTorch forward hooks on the
`transformers` models (what TransformerLens and nnsight do), for glassbox's patching parity test.

Reads tests/fixtures/tiny_{gpt2,llama,neox,gemma2,gemma3_scaled,qwen3,olmo2,olmo3,phi3_partial,
mistral}/ (made by the reference_tiny_*.py scripts) and writes
tests/fixtures/patching/:
  pairs.jsonl        prompt pairs (clean, corrupted, answer, wrong) with equal token counts
  <family>.json      per pair: metric_clean, metric_corrupted (logit(answer) − logit(wrong) at the
                     last position) and, for every hook × position (× head for attn.hook_z), the
                     metric of the corrupted run with that activation taken from the clean run

Hooks, in TransformerLens names on the HF modules: blocks.L.hook_resid_pre (block input),
blocks.L.hook_attn_out (attention output before the residual add), blocks.L.hook_mlp_out,
blocks.L.hook_resid_post (block output), blocks.L.attn.hook_z (the output projection's input,
heads side by side).

Run: just reference-patching   (needs torch, transformers, tokenizers from PyPI)
"""
import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "patching"
OUT.mkdir(parents=True, exist_ok=True)

CANDIDATES = [
    ("the chef roasted the vegetables with", "the chef boiled the vegetables with"),
    ("the market fell after the report", "the market rose after the report"),
    ("she played the piano in the hall", "she played the violin in the hall"),
    ("the team won the game on Sunday", "the team lost the game on Sunday"),
    ("the river flows to the sea", "the river runs to the sea"),
    ("prices rose sharply in the spring", "prices fell sharply in the spring"),
]


def modules(model, family):
    """Per block: (block, attention, mlp, output projection of attention)."""
    if family == "gpt2":
        return [(b, b.attn, b.mlp, b.attn.c_proj) for b in model.transformer.h]
    if family in LLAMA_LIKE:
        return [(b, b.self_attn, b.mlp, b.self_attn.o_proj) for b in model.model.layers]
    if family == "neox":
        return [(b, b.attention, b.mlp, b.attention.dense) for b in model.gpt_neox.layers]
    if family == "gpt_neo":
        return [(b, b.attn, b.mlp, b.attn.attention.out_proj) for b in model.transformer.h]
    if family == "opt":
        # OPT's MLP is the layer's fc1 → act → fc2: its output is fc2's.
        return [(b, b.self_attn, b.fc2, b.self_attn.out_proj) for b in model.model.decoder.layers]
    raise ValueError(family)


# Families whose blocks are `model.model.layers[i]` with `self_attn` (its `o_proj`) and `mlp`.
# Where a family norms what attention or the MLP adds (Gemma's post-norms, OLMo-2's), patching
# the module's output at one position equals patching the normed value there: the norm is per
# token.
LLAMA_LIKE = {"llama", "gemma2", "gemma3", "qwen3", "olmo2", "olmo3", "phi3", "mistral"}


def first(o):
    return o[0] if isinstance(o, tuple) else o


def replace_first(o, new):
    return (new,) + tuple(o[1:]) if isinstance(o, tuple) else new


def hook_module(mods, name):
    """(module, kind) for a hook name: kind 'pre' edits the module's input, 'out' its output."""
    _, layer, rest = name.split(".", 2)
    block, attn, mlp, o_proj = mods[int(layer)]
    return {
        "hook_resid_pre": (block, "pre"),
        "hook_attn_out": (attn, "out"),
        "hook_mlp_out": (mlp, "out"),
        "hook_resid_post": (block, "out"),
        "attn.hook_z": (o_proj, "pre"),
    }[rest]


def register(module, kind, fn):
    """fn(tensor) -> tensor (or None to keep), on the module's input or output."""
    if kind == "pre":
        def pre(m, args, kwargs):
            if args:
                new = fn(args[0])
                return ((new,) + tuple(args[1:]), kwargs) if new is not None else None
            new = fn(kwargs["hidden_states"])
            if new is not None:
                kwargs = dict(kwargs, hidden_states=new)
                return (args, kwargs)
            return None
        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(m, args, out):
        new = fn(first(out))
        return replace_first(out, new) if new is not None else None
    return module.register_forward_hook(post)


def last_logit_diff(model, ids, answer, wrong):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return float(logits[answer] - logits[wrong])


def patch_pair(model, mods, hooks, heads, c_ids, k_ids, answer, wrong):
    """(metric_clean, metric_corrupted, rows): every hook x position (x head for attn.hook_z) of
    the corrupted run with that activation taken from the clean run."""
    cache, handles = {}, []
    for name in hooks:
        module, kind = hook_module(mods, name)
        handles.append(register(module, kind, lambda x, name=name: cache.__setitem__(name, x.detach().clone())))
    m_clean = last_logit_diff(model, c_ids, answer, wrong)
    for h in handles:
        h.remove()
    m_corr = last_logit_diff(model, k_ids, answer, wrong)
    rows = []
    for name in hooks:
        module, kind = hook_module(mods, name)
        width = cache[name].shape[-1]
        per_head = name.endswith("attn.hook_z")
        head_dim = width // heads
        for pos in range(len(k_ids)):
            for head in (range(heads) if per_head else [None]):
                lo, hi = (head * head_dim, (head + 1) * head_dim) if head is not None else (0, width)

                def patch(x, name=name, pos=pos, lo=lo, hi=hi):
                    x = x.clone()
                    x[0, pos, lo:hi] = cache[name][0, pos, lo:hi]
                    return x
                h = register(module, kind, patch)
                metric = last_logit_diff(model, k_ids, answer, wrong)
                h.remove()
                rows.append({"hook": name, "position": pos, "head": head, "metric": metric})
    return m_clean, m_corr, rows


def main():
    tok = Tokenizer.from_file(str(FIX / "tiny_gpt2" / "tokenizer.json"))
    answer_text, wrong_text = " the", " a"
    answer, wrong = tok.encode(answer_text).ids, tok.encode(wrong_text).ids
    assert len(answer) == 1 and len(wrong) == 1, (answer, wrong)
    pairs = [(c, k) for c, k in CANDIDATES if len(tok.encode(c).ids) == len(tok.encode(k).ids)][:3]
    assert len(pairs) >= 2, "need at least two equal-length pairs"
    with open(OUT / "pairs.jsonl", "w") as f:
        for c, k in pairs:
            f.write(json.dumps({"clean": c, "corrupted": k, "answer": answer_text, "wrong": wrong_text}) + "\n")

    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.0.hook_attn_out",
             "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z"]
    for family, folder, cls in [("gpt2", "tiny_gpt2", transformers.GPT2LMHeadModel),
                                ("llama", "tiny_llama", transformers.LlamaForCausalLM),
                                ("neox", "tiny_neox", transformers.GPTNeoXForCausalLM),
                                ("gemma2", "tiny_gemma2", transformers.Gemma2ForCausalLM),
                                ("gemma3", "tiny_gemma3_scaled", transformers.Gemma3ForCausalLM),
                                ("qwen3", "tiny_qwen3", transformers.Qwen3ForCausalLM),
                                ("olmo2", "tiny_olmo2", transformers.Olmo2ForCausalLM),
                                ("olmo3", "tiny_olmo3", transformers.Olmo3ForCausalLM),
                                ("phi3", "tiny_phi3_partial", transformers.Phi3ForCausalLM),
                                ("mistral", "tiny_mistral", transformers.MistralForCausalLM)]:
        model = cls.from_pretrained(FIX / folder, torch_dtype=torch.float32).eval()
        heads = model.config.num_attention_heads if family != "gpt2" else model.config.n_head
        mods = modules(model, family)
        results = []
        for p, (clean, corrupted) in enumerate(pairs):
            c_ids, k_ids = tok.encode(clean).ids, tok.encode(corrupted).ids
            m_clean, m_corr, rows = patch_pair(model, mods, hooks, heads, c_ids, k_ids, answer[0], wrong[0])
            results.append({"pair": p, "metric_clean": m_clean, "metric_corrupted": m_corr, "rows": rows})
        (OUT / f"{family}.json").write_text(json.dumps({
            "transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "hooks": hooks, "heads": heads, "pairs": results}, indent=1) + "\n")
        print(family, "pairs", len(results), "rows", sum(len(r["rows"]) for r in results))


if __name__ == "__main__":
    main()
