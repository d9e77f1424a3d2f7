#!/usr/bin/env python3
"""Input attributions by Captum 0.9 on the tiny random GPT-2 and ViT fixtures, for glassbox's
attribution parity test (runner/tests/attribution_parity.rs).

Soft-capped text (tiny Gemma-2, final logits capped at 3): the same methods on one token's
capped logit and on a `logit_diff` of two capped logits.

Text (tiny GPT-2): the target is the next-token logit of token id 17 at the last position; the
input is the token embeddings (`wte(ids)`, what glassbox's `hook_embed` carries — positions
are added after it, as with `inputs_embeds`). Methods: Saliency (abs), InputXGradient,
IntegratedGradients from zero embeddings (16 Gauss–Legendre steps, and 16 trapezoid steps),
Occlusion of one token at a time (window (1, d), baseline 0).

Images (tiny ViT, 32×32): seeded random pixels in [-1, 1], target class 2's logit. Saliency,
InputXGradient, IntegratedGradients (16 Gauss–Legendre steps), Occlusion (window 3×8×8, stride
3×4×4, baseline 0).

Encoder (all-MiniLM-L6-v2 from the HF cache, when `just models` laid it out): the target is a
fixed seeded linear head on the mean-pooled last hidden state (a probe's logit); the input is
the word embeddings (`inputs_embeds`: position and token-type embeddings and the embedding
LayerNorm come after, as at glassbox's `hook_embed`). Saliency, InputXGradient, IG (16
Gauss–Legendre steps), Occlusion of one token at a time.

Writes tests/fixtures/attribution/reference.json: inputs, per-feature attributions (flattened
channels-last for images) and f values. Run: just reference-attribution (torch, transformers,
captum, tokenizers from PyPI).
"""
import json
from pathlib import Path

import torch
import transformers
from captum.attr import IntegratedGradients, InputXGradient, Occlusion, Saliency
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "attribution"
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def text():
    path = FIX / "tiny_gpt2"
    model = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    prompt = "the cat sat on the mat"
    ids = torch.tensor([tok.encode(prompt).ids])
    emb = model.transformer.wte(ids).detach()
    target = 17

    def f(e):
        return model(inputs_embeds=e).logits[:, -1, target]

    zero = torch.zeros_like(emb)
    out = {"prompt": prompt, "ids": ids[0].tolist(), "target_id": target, **token_maps(f, emb)}
    out["ig_riemann_trapezoid_16"] = flat(
        IntegratedGradients(f).attribute(emb, baselines=zero, n_steps=16, method="riemann_trapezoid")
    )
    return out


def token_maps(f, emb):
    """f at the embeddings and at zero, and Captum's saliency, gradient × input, IG (16
    Gauss–Legendre steps from zero) and one-token occlusion of `f`."""
    zero = torch.zeros_like(emb)
    d = emb.shape[-1]
    return {
        "f_input": float(f(emb)),
        "f_baseline": float(f(zero)),
        "saliency": flat(Saliency(f).attribute(emb, abs=True)),
        "gradient_x_input": flat(InputXGradient(f).attribute(emb)),
        "ig_gausslegendre_16": flat(
            IntegratedGradients(f).attribute(emb, baselines=zero, n_steps=16, method="gausslegendre")
        ),
        "occlusion": flat(
            Occlusion(f).attribute(emb, sliding_window_shapes=(1, d), strides=(1, d), baselines=0)
        ),
    }


def text_softcap():
    """The tiny Gemma-2 (final logits soft-capped at 3): Captum explains the logit the model
    outputs, `3·tanh(z/3)`, for one token and for a `logit_diff` of two."""
    path = FIX / "tiny_gemma2"
    model = transformers.Gemma2ForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    prompt = "the cat sat on the mat"
    ids = torch.tensor([tok.encode(prompt).ids])
    emb = model.model.embed_tokens(ids).detach()
    token, other = 17, 5
    out = {"prompt": prompt, "ids": ids[0].tolist(), "token_id": token, "other_id": other,
           "final_logit_softcapping": model.config.final_logit_softcapping}
    for name, f in [
        ("token", lambda e: model(inputs_embeds=e).logits[:, -1, token]),
        ("logit_diff", lambda e: (lambda z: z[:, -1, token] - z[:, -1, other])(model(inputs_embeds=e).logits)),
    ]:
        out[name] = token_maps(f, emb)
    return out


def image():
    path = FIX / "tiny_vit"
    model = transformers.ViTForImageClassification.from_pretrained(path).eval()
    g = torch.Generator().manual_seed(7)
    x = torch.rand((1, 3, 32, 32), generator=g) * 2 - 1
    target = 2

    def f(p):
        return model(pixel_values=p).logits[:, target]

    zero = torch.zeros_like(x)
    nhwc = lambda t: flat(t.permute(0, 2, 3, 1))  # noqa: E731
    return {
        "pixels": nhwc(x),
        "target": target,
        "f_input": float(f(x)),
        "f_baseline": float(f(zero)),
        "saliency": nhwc(Saliency(f).attribute(x, abs=True)),
        "gradient_x_input": nhwc(InputXGradient(f).attribute(x)),
        "ig_gausslegendre_16": nhwc(
            IntegratedGradients(f).attribute(x, baselines=zero, n_steps=16, method="gausslegendre")
        ),
        "occlusion": nhwc(
            Occlusion(f).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0)
        ),
    }


def encoder():
    snapshots = sorted(
        Path.home().glob(".cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*")
    )
    if not snapshots:
        print("MiniLM not in the HF cache (just models); skipping the encoder reference")
        return None
    path = snapshots[-1]
    model = transformers.BertModel.from_pretrained(path).eval()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    prompt = "The striker scored twice in the second half."
    ids = torch.tensor([tok.encode(prompt).ids])
    emb = model.embeddings.word_embeddings(ids).detach()
    g = torch.Generator().manual_seed(11)
    w = torch.randn(model.config.hidden_size, generator=g) / model.config.hidden_size**0.5
    bias = 0.25

    def f(e):
        h = model(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2])).last_hidden_state
        return h.mean(dim=1) @ w + bias

    zero = torch.zeros_like(emb)
    d = emb.shape[-1]
    return {
        "prompt": prompt,
        "ids": ids[0].tolist(),
        "head_weight": [float(v) for v in w],
        "head_bias": bias,
        "f_input": float(f(emb)),
        "saliency": flat(Saliency(f).attribute(emb, abs=True)),
        "gradient_x_input": flat(InputXGradient(f).attribute(emb)),
        "ig_gausslegendre_16": flat(
            IntegratedGradients(f).attribute(emb, baselines=zero, n_steps=16, method="gausslegendre")
        ),
        "occlusion": flat(
            Occlusion(f).attribute(emb, sliding_window_shapes=(1, d), strides=(1, d), baselines=0)
        ),
    }


if __name__ == "__main__":
    import sys

    import captum

    # Section names as arguments (`text_softcap`) remake only those, kept beside the others.
    only = set(sys.argv[1:])
    path = OUT / "reference.json"
    ref = json.loads(path.read_text()) if only and path.exists() else {}
    ref.update({"captum": captum.__version__, "torch": torch.__version__})
    for name, make in [("text", text), ("text_softcap", text_softcap), ("image", image),
                       ("encoder", encoder)]:
        if not only or name in only:
            section = make()
            if section is not None:
                ref[name] = section
    path.write_text(json.dumps(ref))
    print(f"wrote {path}")
