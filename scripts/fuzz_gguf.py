#!/usr/bin/env python3
"""GGUF files as llama.cpp itself writes them: tiny random checkpoints of every family glassbox
reads from GGUF (llama, mistral as llama, qwen2, qwen3, gemma2, gemma3, phi3, olmo2), drawn as
`fuzz_parity.py` draws them, converted by llama.cpp's own `convert_hf_to_gguf.py` (from the
llama-cpp-python source distribution on PyPI, which vendors it; downloaded once into
.cache/llama.cpp-<version>, its sha256 checked) and run through `glassbox extract` on the
`.gguf`, against `transformers` on the original checkpoint fed the token ids glassbox used:
every block's output, the final norm and the logits ≤ 1e-4 of each tensor's largest magnitude.
Every third seed's file is cut into parts by the converter (`--split-max-tensors 7`, as
`gguf-split` cuts large models) and read from its first part.

With OUTTYPE q8_0, f16 or bf16 the reference runs the weights the converter stored
(2-D matrices quantised row-wise where rows divide into 32-blocks, else f16; vectors f32) —
so the comparison is exact up to f32 arithmetic, not up to quantisation error.

The draw keeps to what a GGUF can carry — a configuration llama.cpp's converter drops cannot
be recovered by any reader: SiLU Llama MLPs without biases; no Mistral/Qwen windows; Gemma-2's
and Gemma-3's fixed layer patterns; for Gemma-2 a query scalar of head_dim, GELU-tanh, both
soft-caps and a tied head; the rotary scalings the converter writes (Llama: linear, yarn, llama3;
Gemma-2: none; Phi-3: longrope; others: linear, yarn). The models' BPE vocabulary is not in
llama.cpp's list of pre-tokenizer hashes, so it is declared GPT-2's (which it is); Gemma and
Phi-3 (and odd-seeded Llamas) get a SentencePiece vocabulary trained here, as their converters
require.

Run: just fuzz-gguf [FIRST LAST [OUTTYPE]]   (seeds FIRST..LAST-1; needs torch, transformers,
tokenizers, sentencepiece, pyarrow, numpy, pandas from PyPI). Prints one line per model and exits
1 on any mismatch.
"""
import copy
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import sentencepiece as spm
import torch

import fuzz_parity as fp

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.3.36"
SDIST = ("https://files.pythonhosted.org/packages/ec/e9/"
         "e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
         f"llama_cpp_python-{VERSION}.tar.gz")
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP = ROOT / ".cache" / f"llama.cpp-{VERSION}"
FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2"]
SENTENCEPIECE = {"gemma2", "gemma3", "phi3"}
# Rotary scalings llama.cpp's converter writes, per family (the rest it drops).
KEPT_ROPE = {"llama": {"default", "linear", "yarn", "llama3"}, "gemma2": {"default"},
             "phi3": {"default", "longrope"}}
CONVERT = """
import sys
sys.path.insert(0, sys.argv.pop(1))
sys.path.insert(1, sys.path[0] + "/gguf-py")
import convert_hf_to_gguf as c
from conversion import base
known = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:  # the fuzzed models' byte-level BPE is GPT-2's
        return "gpt2"
base.TextModel.get_vocab_base_pre = pre
c.main()
"""


def converter() -> Path:
    """llama.cpp's converter and its gguf-py, from the pinned llama-cpp-python sdist."""
    if (LLAMA_CPP / "convert_hf_to_gguf.py").is_file():
        return LLAMA_CPP
    print(f"downloading llama-cpp-python {VERSION}'s source (77 MB) for llama.cpp's converter", flush=True)
    data = urllib.request.urlopen(SDIST, timeout=600).read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        sys.exit(f"{SDIST}: sha256 mismatch")
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    staging = LLAMA_CPP.with_suffix(".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            rel = member.name[len(prefix):] if member.name.startswith(prefix) else None
            if rel and rel.startswith(wanted) and member.isfile():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    staging.rename(LLAMA_CPP)
    return LLAMA_CPP


def sentencepiece_model(folder: Path) -> Path:
    corpus = fp.TEXTS * 3 + ["The quick brown fox jumps over the lazy dog.", "Hello world! 1234 café"] * 3
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "sp"), vocab_size=300,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, num_threads=1,
        minloglevel=2, hard_vocab_limit=False)
    return folder / "sp.model"


def representable(family, r):
    """`fuzz_parity.config`'s draw, kept to what a GGUF file carries."""
    cls, cfg = DRAW(family, r)
    n = cfg.num_hidden_layers
    if family == "llama":
        cfg.hidden_act, cfg.mlp_bias = "silu", False
    if family == "mistral":
        cfg.sliding_window = None
    if family in ("qwen2", "qwen3"):
        cfg.use_sliding_window, cfg.layer_types = False, ["full_attention"] * n
    if family == "gemma2":
        cfg.layer_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
        cfg.query_pre_attn_scalar, cfg.hidden_activation = cfg.head_dim, "gelu_pytorch_tanh"
        cfg.attn_logit_softcapping = cfg.attn_logit_softcapping or 50.0
        cfg.final_logit_softcapping = cfg.final_logit_softcapping or 30.0
        cfg.tie_word_embeddings = True  # its converter drops an lm_head
    if family == "gemma3":
        cfg.layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)]
        cfg.query_pre_attn_scalar = cfg.head_dim
    rope = cfg.rope_parameters
    kept = KEPT_ROPE.get(family, {"default", "linear", "yarn"})
    for part in [rope["full_attention"]] if "full_attention" in rope else [rope]:
        if part.get("rope_type") not in kept:
            theta = 10000.0 if family == "gemma2" else part.get("rope_theta", 10000.0)
            part.clear()
            part.update({"rope_type": "default", "rope_theta": theta})
    if family == "gemma2":  # its converter writes no rotary base either
        rope["rope_theta"] = 10000.0
    return cls, cfg


DRAW = fp.config
fp.config = representable


def stored(model, outtype):
    """`model` with the weights llama.cpp's converter stores for `outtype`."""
    from gguf import GGMLQuantizationType, quants
    model = copy.deepcopy(model)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim != 2:
                continue
            if outtype == "q8_0" and p.shape[-1] % 32 == 0:
                q = GGMLQuantizationType.Q8_0
                w = quants.dequantize(quants.quantize(p.numpy(), q), q)
                p.copy_(torch.from_numpy(np.ascontiguousarray(w).reshape(p.shape)))
            else:
                p.copy_(p.to(torch.bfloat16 if outtype == "bf16" else torch.float16).float())
    return model


def one(family, seed, outtype, llama_cpp, sp_model, tmp):
    out = tmp / f"{family}_{seed}"
    out.mkdir()
    model, _ = fp.build(family, seed, "lm", out)
    if family in SENTENCEPIECE or (family == "llama" and seed % 2):
        shutil.copy(sp_model, out / "tokenizer.model")
        (out / "tokenizer.json").unlink()
    gguf = out / "m.gguf"
    # Every third seed cut into parts by the converter's own splitter (as gguf-split does),
    # read from the first part.
    split = ["--split-max-tensors", "7"] if seed % 3 == 0 else []
    p = subprocess.run([sys.executable, "-c", CONVERT, str(llama_cpp), "--outtype", outtype,
                        "--outfile", str(gguf), *split, str(out)], capture_output=True, text=True)
    if p.returncode:
        return f"convert failed: {p.stderr.strip().splitlines()[-1][:300]}"
    if split:
        gguf = min(out.glob("m-00001-of-*.gguf"))
    rope = model.config.rope_parameters
    rope = rope.get("full_attention", rope).get("rope_type")
    hooks = "blocks.*.hook_resid_post,ln_final.hook_normalized,logits"
    rc, err = fp.glassbox("extract", "--model", gguf, "--data", out / "data.jsonl", "--hooks", hooks,
                          "--run", out / "run", "--batch-size", 3)
    if rc:
        return f"rope {rope}: extract exit {rc}: {err[-300:]}"
    if outtype != "f32":
        model = stored(model, outtype)
    tokens = pq.read_table(out / "run" / "tokens.parquet").to_pandas()
    worst = 0.0
    for i in range(len(fp.TEXTS)):
        ids = tokens[tokens.example_id == i].sort_values("position").token_id.tolist()
        with torch.no_grad():
            result = model(torch.tensor([ids]), output_hidden_states=True)
        states = result.hidden_states
        n = len(states) - 1
        wanted = [(f"blocks.{layer}.hook_resid_post", states[layer + 1][0]) for layer in range(n - 1)]
        wanted += [("ln_final.hook_normalized", states[n][0]), ("logits", result.logits[0])]
        for hook, want in wanted:
            got, want = fp.rows(out / "run" / "activations" / f"hook={hook}", i), want.numpy()
            if hook == "logits":  # Gemma-3's converter cuts the embedding to the vocabulary
                got = got.reshape(want.shape[0], -1)
                want = want[:, :got.shape[1]]
            worst = max(worst, fp.relative(got.reshape(want.shape), want))
    return worst


def main():
    first, last = (int(a) for a in (sys.argv[1:3] if len(sys.argv) >= 3 else (0, 3)))
    outtype = sys.argv[3] if len(sys.argv) > 3 else "f32"
    llama_cpp = converter()
    sys.path.insert(0, str(llama_cpp / "gguf-py"))  # the converter's own gguf, for `stored`
    failures = 0
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        sp_model = sentencepiece_model(tmp)
        for seed in range(first, last):
            for family in FAMILIES:
                result = one(family, seed, outtype, llama_cpp, sp_model, tmp)
                failures += not fp.report(f"{family}_{seed} ({outtype})", {"forward": result})
    print(f"{failures} mismatches; llama.cpp converter of llama-cpp-python {VERSION}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
