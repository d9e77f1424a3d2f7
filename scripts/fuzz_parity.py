#!/usr/bin/env python3
"""Config-fuzzed parity: tiny random checkpoints of every text family glassbox loads, each with
option combinations drawn at random (activations, biases, GQA/MQA, head_dim, tied heads, rotary
scalings default/linear/dynamic/yarn/llama3/longrope, sliding windows and layer patterns (GPT-Neo's global/local),
soft-caps, parallel or sequential blocks; causal-LM and classifier heads, encoders' masked-LM
heads, token classifiers (their per-token heads unread), and bare models as `AutoModel` saves
them: an untied decoder without its LM head, whose hidden states glassbox reads without an
unembedding) — and ViT and ResNet image
classifiers (patch sizes, qkv bias, activations; basic/bottleneck layers, where they downsample,
batch norms with random statistics) — run through the `glassbox` binary and compared with
PyTorch `transformers`:

  forward       `extract` of every block's output, the final norm and the logits (or, for
                encoders and classifiers, every block's output) against `output_hidden_states`,
                ≤ 1e-4 of each tensor's largest magnitude;
  attribution   `attribute` (saliency, gradient × input, integrated gradients with 16
                Gauss–Legendre steps, one-token or 8-pixel occlusion) of the next-token logit
                of " the" (LMs) or class 1 (classifiers) against Captum on the same model. Within 1e-4 of
                the map's largest magnitude, or — where f32 itself cannot reach that (small
                differences of large values; a ReLU on its kink at one of IG's points) — no
                more than twice Captum's own f32 distance from Captum run in f64.

The fixtures' hand-picked configs (scripts/reference_tiny_*.py) test each feature once; this
draws combinations nobody picked. Models and runs go to a temporary folder.

Run: just fuzz-parity [FIRST LAST]   (seeds FIRST..LAST-1; needs torch, transformers, captum,
tokenizers, pyarrow, pillow from PyPI). Prints one line per model and exits 1 on any mismatch.
"""
import copy
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
import transformers
from captum.attr import IntegratedGradients, InputXGradient, Occlusion, Saliency
from PIL import Image
from reference_tiny_resnet import randomize_batch_norms
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
GLASSBOX = ROOT / "target" / "debug" / "glassbox"
FIX = ROOT / "tests" / "fixtures"
BPE = FIX / "tiny_gpt2" / "tokenizer.json"
TOKENIZERS = {"bert": FIX / "tiny_bert_classifier" / "tokenizer.json",
              "distilbert": FIX / "tiny_bert_classifier" / "tokenizer.json",
              "electra": FIX / "tiny_bert_classifier" / "tokenizer.json",
              "roberta": FIX / "tiny_roberta_classifier" / "tokenizer.json"}
ENCODERS = {"bert", "roberta", "distilbert", "electra"}
VISION = ["vit", "resnet"]
DECODERS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "olmo2", "olmo3", "phi3",
            "gpt2", "gpt_neo", "opt", "neox"]
TEXTS = ["the chef roasted the vegetables with garlic and a lot of butter, then served them",
         "Stock prices fell sharply after the announcement.",
         "  spaces  and digits 2024, 3.14 — café! more words here to be long enough ok"]
T = transformers


def rope(r):
    kind = r.choice(["default", "linear", "dynamic", "yarn", "llama3"])
    theta = r.choice([10000.0, 500000.0, 1e6])
    extra = {"default": {}, "linear": {"factor": r.choice([2.0, 4.0])}, "dynamic": {"factor": 2.0},
             "yarn": {"factor": 4.0, "original_max_position_embeddings": 8},
             "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8}}[kind]
    return {"rope_type": kind, "rope_theta": theta, **extra}


def common(r):
    heads = r.choice([2, 4])
    return dict(vocab_size=512, hidden_size=32, intermediate_size=r.choice([48, 64]),
                num_hidden_layers=r.choice([1, 2, 3]), num_attention_heads=heads,
                num_key_value_heads=r.choice([h for h in [1, 2, 4] if heads % h == 0 and h <= heads]),
                max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=None,
                tie_word_embeddings=r.random() < 0.5, rms_norm_eps=r.choice([1e-5, 1e-6]))


def layer_types(r, n):
    return [r.choice(["sliding_attention", "full_attention"]) for _ in range(n)]


def config(family, r):
    """(model class, config) of a random tiny `family` model."""
    c = common(r)
    if family == "llama":
        return T.LlamaForCausalLM, T.LlamaConfig(
            **c, hidden_act=r.choice(["silu", "gelu", "gelu_new", "relu", "gelu_pytorch_tanh"]),
            attention_bias=r.random() < .5, mlp_bias=r.random() < .5,
            head_dim=r.choice([8, 16, 32 // c["num_attention_heads"]]), rope_parameters=rope(r))
    if family == "mistral":
        return T.MistralForCausalLM, T.MistralConfig(
            **c, sliding_window=r.choice([None, 3, 5, 100]), head_dim=r.choice([None, 8, 16]),
            rope_parameters=rope(r))
    if family == "qwen2":
        c["num_hidden_layers"] = r.choice([2, 3])
        return T.Qwen2ForCausalLM, T.Qwen2Config(
            **c, use_sliding_window=r.random() < .5, sliding_window=r.choice([3, 5]),
            max_window_layers=r.choice([0, 1, 2]), rope_parameters=rope(r))
    if family == "qwen3":
        return T.Qwen3ForCausalLM, T.Qwen3Config(
            **c, head_dim=r.choice([8, 16]), attention_bias=r.random() < .5,
            use_sliding_window=r.random() < .5, sliding_window=r.choice([3, 5]),
            max_window_layers=r.choice([0, 1]), rope_parameters=rope(r))
    if family == "gemma2":
        return T.Gemma2ForCausalLM, T.Gemma2Config(
            **c, head_dim=r.choice([8, 16]),
            hidden_activation=r.choice(["gelu_pytorch_tanh", "gelu"]),
            query_pre_attn_scalar=r.choice([8, 16, 24]), attn_logit_softcapping=r.choice([None, 5.0]),
            final_logit_softcapping=r.choice([None, 3.0]), sliding_window=r.choice([3, 5, 100]),
            layer_types=layer_types(r, c["num_hidden_layers"]), rope_parameters=rope(r))
    if family == "gemma3":
        return T.Gemma3ForCausalLM, T.Gemma3TextConfig(
            **c, head_dim=r.choice([8, 16]), hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=r.choice([8, 16]), final_logit_softcapping=r.choice([None, 3.0]),
            sliding_window=r.choice([3, 5]), layer_types=layer_types(r, c["num_hidden_layers"]),
            rope_parameters={"full_attention": rope(r),
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    if family == "olmo2":
        return T.Olmo2ForCausalLM, T.Olmo2Config(**c, attention_bias=r.random() < .5,
                                                 rope_parameters=rope(r))
    if family == "olmo3":
        return T.Olmo3ForCausalLM, T.Olmo3Config(
            **c, sliding_window=r.choice([3, 5]), attention_bias=r.random() < .5,
            layer_types=layer_types(r, c["num_hidden_layers"]),
            rope_parameters={"full_attention": rope(r),
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    if family == "phi3":
        partial = r.choice([1.0, 0.5, 0.75])
        pairs = int(32 // c["num_attention_heads"] * partial) // 2
        params = r.choice([{"rope_type": "default", "rope_theta": 10000.0},
                           {"rope_type": "longrope", "rope_theta": 10000.0,
                            "short_factor": [1.0 + .1 * i for i in range(pairs)],
                            "long_factor": [2.0 + .5 * i for i in range(pairs)],
                            "original_max_position_embeddings": 8}])
        return T.Phi3ForCausalLM, T.Phi3Config(
            **c, partial_rotary_factor=partial, original_max_position_embeddings=8,
            sliding_window=r.choice([None, 3, 5, 100]), rope_parameters=params)
    if family == "gpt2":
        return T.GPT2LMHeadModel, T.GPT2Config(
            vocab_size=512, n_embd=32, n_layer=r.choice([1, 2, 3]), n_head=r.choice([2, 4]),
            n_positions=64, n_inner=r.choice([None, 48]),
            activation_function=r.choice(["gelu_new", "gelu", "relu", "silu", "gelu_pytorch_tanh"]),
            scale_attn_weights=r.random() < .8, scale_attn_by_inverse_layer_idx=r.random() < .5,
            reorder_and_upcast_attn=r.random() < .5, layer_norm_epsilon=r.choice([1e-5, 1e-6]),
            tie_word_embeddings=r.random() < .7, bos_token_id=0, eos_token_id=0)
    if family == "gpt_neo":
        layers = r.choice([1, 2, 3])
        kinds = [r.choice(["global", "local"]) for _ in range(layers)]
        return T.GPTNeoForCausalLM, T.GPTNeoConfig(
            vocab_size=512, hidden_size=32, num_layers=layers, num_heads=r.choice([2, 4]),
            max_position_embeddings=64, attention_types=[[kinds, 1]], window_size=r.choice([2, 3, 5, 100]),
            intermediate_size=r.choice([None, 48]),
            activation_function=r.choice(["gelu_new", "gelu", "relu", "silu"]),
            layer_norm_epsilon=r.choice([1e-5, 1e-6]), tie_word_embeddings=r.random() < .7,
            bos_token_id=0, eos_token_id=0)
    if family == "opt":
        return T.OPTForCausalLM, T.OPTConfig(
            vocab_size=512, hidden_size=32, num_hidden_layers=r.choice([1, 2, 3]),
            num_attention_heads=r.choice([2, 4]), ffn_dim=r.choice([48, 64]), max_position_embeddings=64,
            word_embed_proj_dim=32, activation_function=r.choice(["relu", "gelu", "gelu_new", "silu"]),
            enable_bias=r.random() < .7, layer_norm_elementwise_affine=r.random() < .8,
            tie_word_embeddings=r.random() < .7, pad_token_id=1, bos_token_id=0, eos_token_id=0)
    if family == "neox":
        return T.GPTNeoXForCausalLM, T.GPTNeoXConfig(
            vocab_size=512, hidden_size=32, num_hidden_layers=r.choice([1, 2]), num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, rotary_pct=r.choice([0.25, 0.5, 1.0]),
            use_parallel_residual=r.random() < .5, hidden_act=r.choice(["gelu", "gelu_new", "relu", "silu"]),
            attention_bias=r.random() < .5, tie_word_embeddings=r.random() < .3, layer_norm_eps=1e-5,
            bos_token_id=0, eos_token_id=0)
    if family == "bert":
        return T.BertForSequenceClassification, T.BertConfig(
            vocab_size=400, hidden_size=32, num_hidden_layers=r.choice([1, 2, 3]),
            num_attention_heads=r.choice([2, 4]), intermediate_size=r.choice([48, 64]),
            max_position_embeddings=64, layer_norm_eps=r.choice([1e-12, 1e-5]),
            hidden_act=r.choice(["gelu", "gelu_new", "relu", "silu", "gelu_pytorch_tanh"]),
            type_vocab_size=r.choice([1, 2]), num_labels=3)
    if family == "roberta":
        return r.choice([T.RobertaForSequenceClassification, T.XLMRobertaForSequenceClassification]), T.RobertaConfig(
            vocab_size=400, hidden_size=32, num_hidden_layers=r.choice([1, 2]), num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, hidden_act=r.choice(["gelu", "gelu_new", "relu"]), num_labels=3)
    if family == "distilbert":
        return T.DistilBertForSequenceClassification, T.DistilBertConfig(
            vocab_size=400, dim=32, n_layers=r.choice([1, 2]), n_heads=r.choice([2, 4]), hidden_dim=64,
            max_position_embeddings=64, activation=r.choice(["gelu", "relu"]),
            sinusoidal_pos_embds=r.random() < .3, num_labels=3)
    if family == "electra":
        return T.ElectraForSequenceClassification, T.ElectraConfig(
            vocab_size=400, embedding_size=32, hidden_size=32, num_hidden_layers=r.choice([1, 2, 3]),
            num_attention_heads=r.choice([2, 4]), intermediate_size=r.choice([48, 64]),
            max_position_embeddings=64, layer_norm_eps=r.choice([1e-12, 1e-5]),
            hidden_act=r.choice(["gelu", "gelu_new", "relu", "silu"]), type_vocab_size=r.choice([1, 2]),
            num_labels=3)
    if family == "vit":
        size, patch = r.choice([16, 32]), r.choice([4, 8])
        return T.ViTForImageClassification, T.ViTConfig(
            image_size=size, patch_size=patch, num_channels=3, hidden_size=32,
            num_hidden_layers=r.choice([1, 2]), num_attention_heads=r.choice([2, 4]),
            intermediate_size=r.choice([37, 64]), hidden_act=r.choice(["gelu", "gelu_new", "relu", "silu"]),
            qkv_bias=r.random() < .7, layer_norm_eps=r.choice([1e-12, 1e-6]), num_labels=3)
    if family == "resnet":
        sizes = r.choice([[16], [16, 32], [8, 16, 24]])
        return T.ResNetForImageClassification, T.ResNetConfig(
            num_channels=3, embedding_size=r.choice([8, 16]), hidden_sizes=sizes,
            depths=[r.choice([1, 2]) for _ in sizes], layer_type=r.choice(["basic", "bottleneck"]),
            downsample_in_first_stage=r.random() < .5, downsample_in_bottleneck=r.random() < .5,
            num_labels=3)
    raise ValueError(family)


def build_vision(family, seed, out):
    """A random `family` image classifier in `out` (batch norms with random statistics, so
    folding them matters), three random images at its input size and the `transformers` model."""
    r = random.Random(seed * 7919 + sum(map(ord, family)))
    cls, cfg = config(family, r)
    torch.manual_seed(seed)
    model = cls._from_config(cfg, attn_implementation="eager").eval()
    randomize_batch_norms(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(out)
    size = getattr(cfg, "image_size", None) or r.choice([32, 64])
    mean, std = [r.choice([0.5, 0.485]), 0.456, 0.406], [r.choice([0.5, 0.229]), 0.224, 0.225]
    (out / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": size, "width": size}, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": mean, "image_std": std}))
    (out / "images").mkdir()
    pixels = []
    rng = np.random.default_rng(seed)
    for i in range(len(TEXTS)):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a).save(out / "images" / f"{i}.png")
        pixels.append(((a / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1))
    (out / "data.jsonl").write_text("".join(
        json.dumps({"image_path": f"images/{i}.png"}) + "\n" for i in range(len(pixels))))
    return model, torch.tensor(np.stack(pixels), dtype=torch.float32)


def vision_checks(model, pixels, out):
    """Logits of `extract`, and the four methods of `attribute` (class 1, 8-pixel occlusion
    windows), against transformers and Captum."""
    rc, err = glassbox("extract", "--model", out, "--data", out / "data.jsonl", "--hooks", "logits",
                       "--run", out / "run")
    if rc:
        return {"forward": f"extract exit {rc}: {err[-300:]}"}
    t = ds.dataset(out / "run" / "activations" / "hook=logits", format="parquet").to_table()
    order = np.argsort(np.array(t.column("example_id").to_pylist()))
    with torch.no_grad():
        want = model(pixels).logits.numpy()
    checks = {"forward": relative(np.array(t.column("act").to_pylist())[order], want)}
    rc, err = glassbox("attribute", "--run", out / "run", "--target", "class:LABEL_1", "--method",
                       "saliency,gradient_x_input,integrated_gradients,occlusion", "--steps", 16,
                       "--window", 8, "--stride", 8, "--no-sanity")
    if rc:
        return {**checks, "attribution": f"attribute exit {rc}: {err[-300:]}"}
    worst = 0.0
    double = copy.deepcopy(model).double()
    for i in range(len(pixels)):
        f32 = image_maps(model, pixels[i:i + 1])
        f64 = image_maps(double, pixels[i:i + 1].double())
        for method in f32:
            folder = next((out / "run" / "attributions" / f"method={method}").glob("target=*"))
            worst = max(worst, judged(rows(folder, i), f32[method], f64[method]))
    return {**checks, "attribution": worst}


def image_maps(model, x):
    """Captum's four maps of class 1 at image `x`, per pixel summed over channels, row-major."""
    def f(z):
        return model(z).logits[:, 1]

    maps = {"saliency": Saliency(f).attribute(x, abs=True),
            "gradient_x_input": InputXGradient(f).attribute(x),
            "integrated_gradients": IntegratedGradients(f).attribute(
                x, baselines=torch.zeros_like(x), n_steps=16),
            "occlusion": Occlusion(f).attribute(x, sliding_window_shapes=(3, 8, 8),
                                                strides=(3, 8, 8), baselines=0)}
    return {k: v[0].sum(0).detach().double().numpy().reshape(-1) for k, v in maps.items()}


def head_class(cls, family, kind):
    """The `transformers` class of `kind` for a family whose config draws `cls` (a causal LM or,
    for encoders, a sequence classifier)."""
    name = cls.__name__
    if kind == "cls" and family not in ENCODERS:
        name = name.replace("ForCausalLM", "ForSequenceClassification")
        name = name.replace("LMHeadModel", "ForSequenceClassification")
    elif kind == "base":
        for head in ["ForCausalLM", "LMHeadModel", "ForSequenceClassification"]:
            name = name.replace(head, "Model")
        name = {"Gemma3Model": "Gemma3TextModel"}.get(name, name)
    elif kind == "mlm":
        name = name.replace("ForSequenceClassification", "ForMaskedLM")
    elif kind == "tok":
        for head in ["ForCausalLM", "LMHeadModel", "ForSequenceClassification"]:
            name = name.replace(head, "ForTokenClassification")
    return getattr(T, name, None)


def build(family, seed, kind, out):
    """A random `family` checkpoint of `kind` — `lm` (causal LM), `cls` (sequence classifier),
    `base` (the bare model as `AutoModel` saves it: an untied decoder without its LM head),
    `mlm` (an encoder's masked-LM head) or `tok` (a token classifier, whose per-token head
    glassbox leaves unread) — in `out`; `None` where the family has no such class (weights drawn large enough that every
    block matters), its data file and the `transformers` model."""
    r = random.Random(seed * 1000 + sum(map(ord, family)))
    cls, cfg = config(family, r)
    cls = head_class(cls, family, kind)
    if cls is None:
        return None, None
    if kind == "cls" and family not in ENCODERS:
        cfg.num_labels, cfg.pad_token_id = 3, 0
    torch.manual_seed(seed)
    # Eager attention: the soft-capped scores of Gemma-2 are not what SDPA computes.
    model = cls._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or "ln_" in n:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    shutil.copy(TOKENIZERS.get(family, BPE), out / "tokenizer.json")
    (out / "data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return model, Tokenizer.from_file(str(out / "tokenizer.json"))


def glassbox(*args):
    p = subprocess.run([str(GLASSBOX), "-q", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stderr.strip()


def rows(folder, example):
    """A per-example table's values in position order."""
    t = ds.dataset(folder, format="parquet").to_table().filter(pc.field("example_id") == example)
    where = "position" if "position" in t.column_names else "pixel"
    pos = np.array(t.column(where).to_pylist())
    value = "act" if "act" in t.column_names else "attribution"
    return np.array(t.column(value).to_pylist())[np.argsort(pos)]


def relative(got, want):
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-9))


def judged(got, f32, f64):
    """glassbox's map against Captum's: its distance from Captum in f32 where that is within
    1e-4; else — f32 cannot reach 1e-4 where a map is small differences of large values or a
    ReLU sits on its kink — its distance from Captum in f64 scaled so that twice Captum's own
    f32 distance from f64 reads 1e-4 (`f64` None: not runnable in f64)."""
    err = relative(got, f32)
    if err > 1e-4 and f64 is not None:
        err = relative(got, f64) / max(2 * relative(f32, f64), 1e-4) * 1e-4
    return err


def forward(model, tok, family, lm, out):
    encoder = family in ENCODERS
    hooks = "blocks.*.hook_resid_post" + ("" if encoder else ",ln_final.hook_normalized")
    hooks += ",logits" if lm else ""
    rc, err = glassbox("extract", "--model", out, "--data", out / "data.jsonl", "--hooks", hooks,
                       "--run", out / "run", "--batch-size", 3)
    if rc:
        return f"extract exit {rc}: {err[-300:]}"
    worst = 0.0
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([tok.encode(text).ids[:64]])
        with torch.no_grad():
            result = model(ids, output_hidden_states=True)
        states = result.hidden_states
        n = len(states) - 1
        # An encoder's last hidden state is its last block's output; a decoder's (LM or
        # classifier) has the final norm applied, and an LM's logits follow.
        wanted = [(f"blocks.{layer}.hook_resid_post", states[layer + 1][0])
                  for layer in range(n if encoder else n - 1)]
        if not encoder:
            wanted.append(("ln_final.hook_normalized", states[n][0]))
        if lm:
            wanted.append(("logits", result.logits[0]))
        for hook, want in wanted:
            got = rows(out / "run" / "activations" / f"hook={hook}", i)
            worst = max(worst, relative(got, want.numpy()))
    return worst


def captum_maps(model, tok, text, lm, dtype):
    m = model.to(dtype)
    ids = torch.tensor([tok.encode(text).ids[:64]])
    emb = m.get_input_embeddings()(ids).detach()
    target = tok.encode(" the").ids[0]

    def f(e):
        logits = m(inputs_embeds=e).logits
        return logits[:, -1, target] if lm else logits[:, 1]

    zero = torch.zeros_like(emb)
    maps = {"saliency": Saliency(f).attribute(emb, abs=True),
            "gradient_x_input": InputXGradient(f).attribute(emb),
            "integrated_gradients": IntegratedGradients(f).attribute(emb, baselines=zero, n_steps=16),
            "occlusion": Occlusion(f).attribute(emb, sliding_window_shapes=(1, emb.shape[-1]),
                                                baselines=0)}
    return {k: v.sum(-1)[0].detach().double().numpy() for k, v in maps.items()}


def attribution(model, tok, lm, out):
    target = "token: the" if lm else "class:LABEL_1"
    rc, err = glassbox("attribute", "--run", out / "run", "--target", target, "--method",
                       "saliency,gradient_x_input,integrated_gradients,occlusion", "--steps", 16,
                       "--no-sanity")
    if rc:
        return f"attribute exit {rc}: {err[-300:]}"
    worst = 0.0
    for i, text in enumerate(TEXTS):
        f32 = captum_maps(model, tok, text, lm, torch.float32)
        try:
            f64 = captum_maps(model, tok, text, lm, torch.float64)
        except RuntimeError:  # GPT-2's reorder_and_upcast_attn runs in f32 only
            f64 = None
        model.float()
        for method in f32:
            folder = next((out / "run" / "attributions" / f"method={method}").glob("target=*"))
            worst = max(worst, judged(rows(folder, i), f32[method], f64 and f64[method]))
    return worst


def report(name, checks):
    """Prints one model's line — `ok` or `BAD`, each check's worst error or failure message —
    and says whether every check is within 1e-4."""
    bad = {k: v for k, v in checks.items() if isinstance(v, str) or v > 1e-4}
    shown = {k: v if isinstance(v, str) else f"{v:.1e}" for k, v in checks.items()}
    print(f"{'BAD' if bad else 'ok '} {name}: {shown}", flush=True)
    return not bad


def main():
    first, last = (int(a) for a in (sys.argv[1:3] if len(sys.argv) >= 3 else (0, 3)))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first, last):
            for family in DECODERS + sorted(ENCODERS):
                kinds = ["cls", "base", "mlm"] if family in ENCODERS else ["lm", "cls", "base"]
                for kind in kinds + ["tok"]:
                    out = Path(tmp) / f"{family}_{seed}_{kind}"
                    out.mkdir()
                    model, tok = build(family, seed, kind, out)
                    if model is None:
                        continue
                    lm = kind == "lm"
                    checks = {"forward": forward(model, tok, family, lm, out)}
                    # Bare models and masked-LM heads: hidden states only (no output to explain).
                    if kind in ("lm", "cls") and not isinstance(checks["forward"], str):
                        checks["attribution"] = attribution(model, tok, lm, out)
                    failures += not report(out.name, checks)
            for family in VISION:
                out = Path(tmp) / f"{family}_{seed}"
                out.mkdir()
                checks = vision_checks(*build_vision(family, seed, out), out)
                failures += not report(out.name, checks)
    print(f"{failures} mismatches; transformers {transformers.__version__}, torch {torch.__version__}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
