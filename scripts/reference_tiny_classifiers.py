#!/usr/bin/env python3
"""Tiny random text classifiers with three named classes and their references: the class logits
from PyTorch `transformers`, and Captum 0.9's attributions of the `positive` logit to the token
embeddings (`inputs_embeds`: whatever the model adds after them — positions, token types, the
embedding LayerNorm — stays, as at glassbox's `hook_embed`): Saliency (abs), InputXGradient,
IntegratedGradients from zero embeddings (16 Gauss–Legendre steps) and Occlusion of one token at
a time — for runner/tests/attribution_classifier.rs.

- tests/fixtures/tiny_bert_classifier/: `BertForSequenceClassification` (pooler + classifier on
  [CLS]) with a 400-piece lower-cased WordPiece trained on data/sets/default.jsonl;
- tests/fixtures/tiny_llama_classifier/: `LlamaForSequenceClassification` (the `score` head at
  the last token, no language-model head) with the tiny GPT-2 fixture's byte-level BPE;
- tests/fixtures/tiny_roberta_classifier/: `RobertaForSequenceClassification` (positions from
  pad + 1, one token type, `classifier.dense` / `out_proj` on `<s>`) with a byte-level BPE
  trained here, wrapped in `<s> … </s>`;
- tests/fixtures/tiny_distilbert_classifier/: `DistilBertForSequenceClassification`
  (`pre_classifier` + ReLU on [CLS], no token types) with the BERT fixture's WordPiece;
- tests/fixtures/tiny_electra_classifier/: `ElectraForSequenceClassification` (BERT's block under
  `electra.`, no pooler, `classifier.dense` + GELU + `out_proj` on [CLS]) with the same WordPiece.

Each: config.json, model.safetensors, tokenizer.json, reference.json (the RoBERTa and
DistilBERT references add every block's hidden states). The WordPiece trainer's vocabulary
order varies from run to run, so a rerun renumbers the BERT fixture's tokens: its tokenizer and
references are committed together. Name the fixtures to rebuild (bert, llama, roberta,
distilbert, electra); none rebuilds all.

Run: just reference-classifiers [names]   (torch, transformers, tokenizers, captum from PyPI)
"""
import json
import shutil
import sys
from pathlib import Path

import captum
import torch
import transformers
from captum.attr import IntegratedGradients, InputXGradient, Occlusion, Saliency
from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer, Tokenizer
from tokenizers.processors import BertProcessing, RobertaProcessing

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "tiny_bert_classifier"
LABELS = dict(num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
              label2id={"negative": 0, "neutral": 1, "positive": 2})
WANTED = set(sys.argv[1:]) or {"bert", "llama", "roberta", "distilbert", "electra"}

texts = [json.loads(line)["text"] for line in (ROOT / "data/sets/default.jsonl").read_text().splitlines()]


def randomize(model):
    """Larger than the default init so every block and the head matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm = "LayerNorm.weight" in name or "layer_norm.weight" in name or "norm.weight" in name
            p.uniform_(0.5, 1.5) if norm else p.normal_(0.0, 0.2)


def save(model, out):
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


PROMPTS = ["the chef roasted the vegetables with garlic",
           "Stock prices fell sharply after the announcement."]
TARGET = 2  # positive


def write_references(model, tok, embed, out, hidden_states=False):
    refs = []
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt).ids])
        with torch.no_grad():
            run = model(ids, output_hidden_states=True)
            logits = run.logits[0]
        emb = embed(ids).detach()

        def f(e):
            return model(inputs_embeds=e).logits[:, TARGET]

        zero = torch.zeros_like(emb)
        d = emb.shape[-1]
        extra = {"hidden_states": [flat(h[0]) for h in run.hidden_states]} if hidden_states else {}
        refs.append({
            **extra,
            "prompt": prompt,
            "ids": ids[0].tolist(),
            "logits": flat(logits),
            "f_input": float(f(emb)),
            "f_baseline": float(f(zero)),
            "saliency": flat(Saliency(f).attribute(emb, abs=True)),
            "gradient_x_input": flat(InputXGradient(f).attribute(emb)),
            "ig_gausslegendre_16": flat(
                IntegratedGradients(f).attribute(emb, baselines=zero, n_steps=16, method="gausslegendre")),
            "occlusion": flat(
                Occlusion(f).attribute(emb, sliding_window_shapes=(1, d), strides=(1, d), baselines=0)),
        })
    (out / "reference.json").write_text(json.dumps({
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "captum_version": captum.__version__, "target_class": TARGET, "texts": refs}) + "\n")
    print(f"wrote {out}")


def bert():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(texts, vocab_size=400, min_frequency=1,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    # Training leaves the post-processor unset; BERT's wraps every text in [CLS] … [SEP].
    tok.post_processor = BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                        ("[CLS]", tok.token_to_id("[CLS]")))
    tok.save(str(OUT / "tokenizer.json"))
    torch.manual_seed(12)
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, **LABELS)
    model = transformers.BertForSequenceClassification(config).eval()
    randomize(model)
    save(model, OUT)
    write_references(model, tok, model.bert.embeddings.word_embeddings, OUT)


def llama():
    # A Llama whose `score` head reads the last token (inputs_embeds carry no pad tokens, so
    # transformers reads the last position too).
    out = FIXTURES / "tiny_llama_classifier"
    out.mkdir(parents=True, exist_ok=True)
    bpe = FIXTURES / "tiny_gpt2" / "tokenizer.json"
    shutil.copy(bpe, out / "tokenizer.json")
    torch.manual_seed(13)
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **LABELS)
    model = transformers.LlamaForSequenceClassification(config).eval()
    randomize(model)
    save(model, out)
    write_references(model, Tokenizer.from_file(str(bpe)), model.model.embed_tokens, out)


def roberta():
    out = FIXTURES / "tiny_roberta_classifier"
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    bpe.save(str(out / "tokenizer.json"))
    torch.manual_seed(14)
    # 64 token positions after the two reserved rows (pad = 1: the first token's row is 2).
    config = transformers.RobertaConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, **LABELS)
    model = transformers.RobertaForSequenceClassification(config).eval()
    randomize(model)
    save(model, out)
    write_references(model, Tokenizer.from_file(str(out / "tokenizer.json")),
                     model.roberta.embeddings.word_embeddings, out, hidden_states=True)


def on_bert_wordpiece(name, seed, make):
    """A classifier `make(vocab_size)` under tests/fixtures/<name>/ on the BERT fixture's
    WordPiece, with every block's hidden states in its references."""
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(OUT / "tokenizer.json", out / "tokenizer.json")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    torch.manual_seed(seed)
    model = make(tok.get_vocab_size()).eval()
    randomize(model)
    save(model, out)
    write_references(model, tok, model.base_model.embeddings.word_embeddings, out,
                     hidden_states=True)


def distilbert():
    on_bert_wordpiece("tiny_distilbert_classifier", 15, lambda vocab: transformers.DistilBertForSequenceClassification(
        transformers.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                      max_position_embeddings=64, **LABELS)))


def electra():
    on_bert_wordpiece("tiny_electra_classifier", 16, lambda vocab: transformers.ElectraForSequenceClassification(
        transformers.ElectraConfig(vocab_size=vocab, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                   **LABELS)))


for name, build in [("bert", bert), ("llama", llama), ("roberta", roberta),
                    ("distilbert", distilbert), ("electra", electra)]:
    if name in WANTED:
        build()
