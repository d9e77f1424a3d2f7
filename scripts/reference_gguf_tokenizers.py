#!/usr/bin/env python3
"""Small GGUF files whose tokenizers glassbox rebuilds from the metadata, and the token ids
PyPI `transformers` gives for them (`AutoTokenizer.from_pretrained(..., gguf_file=...)`).

Two vocabularies are trained here on a committed corpus, so no model download is needed:
- a SentencePiece BPE model with byte fallback (`sentencepiece`), written as llama.cpp writes a
  `tokenizer.ggml.model = llama` vocabulary (tokens, scores, token types, no merges) under the
  architectures whose rebuild differs in transformers: `llama` (Metaspace, BOS added), `phi3`
  (a prepended-`▁` normalizer) and `gemma2` (no prefix space, merges in file order, runs of
  spaces stored as spaces);
- a byte-level BPE (`tokenizers`), written as `tokenizer.ggml.model = gpt2` with the merges and
  a `tokenizer.ggml.pre` whose split rule is not GPT-2's: `llama-bpe` (Llama-3, BOS added) and
  `qwen2`.

Writes tests/fixtures/gguf_tokenizers/<name>.gguf (metadata and one 2 × 32 tensor, a few KB) and
tests/fixtures/gguf_tokenizers/reference.json ({name: {"texts": [...], "ids": [[...]]}}, plus
SentencePiece's own ids for the `llama` file, which transformers' rebuild matches).

Run: just reference-gguf-tokenizers   (needs transformers, gguf, sentencepiece, tokenizers)
"""
import json
import tempfile
from pathlib import Path

import gguf
import numpy as np
import sentencepiece as spm
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/gguf_tokenizers"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A researcher audits the model layer by layer, unit by unit.",
    "In 2024, 1,234,567 people paid $89.99 for version 3.14 of the tool.",
    "Café au lait costs 3,50 € — naïve résumé.",
    "Hello world! Hello again, world? The world is wide.",
    "def forward(self, x):\n    return self.linear(x) + 1\n",
    "Tokens, merges and scores: the vocabulary says how text is cut.",
    "She sells sea shells by the sea shore; the shells she sells are sea shells.",
    "Numbers like 7, 42, 365 and 1000000 appear in text all the time.",
    "Attention heads move information between positions in the residual stream.",
    "Sparse dictionaries find features; probes find directions; patching finds causes.",
    "It's what they'll say: we're here, you've seen it, I'm sure, he'd know.",
] * 4

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world",
    "  two leading spaces and  double  spaces",
    "Café résumé naïve — 東京 😀 unseen characters fall back to bytes",
    "In 2024, 1,234,567 people paid $89.99.",
    "It's what they'll say, I'm sure.",
    "new\nlines\n\nand\ttabs",
    "zzzz qqqq xyzzy",
    "before <|user|> after",
    "one</s>two <|end_of_text|> three",
]

LLAMA_TYPES = {"normal": 1, "unknown": 2, "control": 3, "user_defined": 4, "unused": 5, "byte": 6}


def model_metadata(w: gguf.GGUFWriter, arch: str, vocab: int) -> None:
    """Enough of a model that loaders parse the file: 2 layers, width 32."""
    w.add_uint32(f"{arch}.context_length", 128)
    w.add_uint32(f"{arch}.embedding_length", 32)
    w.add_uint32(f"{arch}.block_count", 2)
    w.add_uint32(f"{arch}.feed_forward_length", 64)
    w.add_uint32(f"{arch}.attention.head_count", 4)
    w.add_uint32(f"{arch}.attention.head_count_kv", 2)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_uint32(f"{arch}.vocab_size", vocab)


def write(name: str, arch: str, fill) -> Path:
    path = OUT / f"{name}.gguf"
    w = gguf.GGUFWriter(str(path), arch)
    fill(w)
    w.add_tensor("token_embd.weight", np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def sentencepiece_files(workdir: Path) -> dict:
    prefix = workdir / "sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_prefix=str(prefix),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        user_defined_symbols=["<|user|>"],
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [sp.get_score(i) for i in range(sp.get_piece_size())]

    def kind(i: int) -> int:
        for name, test in [
            ("unknown", sp.is_unknown),
            ("control", sp.is_control),
            ("byte", sp.is_byte),
            ("unused", sp.is_unused),
        ]:
            if test(i):
                return LLAMA_TYPES[name]
        return LLAMA_TYPES["user_defined"] if pieces[i] == "<|user|>" else LLAMA_TYPES["normal"]

    types = [kind(i) for i in range(len(pieces))]
    written = {}
    for arch in ["llama", "phi3", "gemma2"]:
        # llama.cpp's Gemma converter stores a piece of only spaces with real spaces.
        tokens = [
            " " * len(p) if arch == "gemma2" and len(p) > 1 and set(p) == {"▁"} else p
            for p in pieces
        ]

        def fill(w, arch=arch, tokens=tokens):
            model_metadata(w, arch, len(tokens))
            w.add_tokenizer_model("llama")
            w.add_token_list(tokens)
            w.add_token_scores(scores)
            w.add_token_types(types)
            w.add_unk_token_id(sp.unk_id())
            w.add_bos_token_id(sp.bos_id())
            w.add_eos_token_id(sp.eos_id())
            w.add_add_bos_token(True)
            w.add_add_eos_token(False)
            if arch != "gemma2":
                w.add_add_space_prefix(True)

        written[f"sentencepiece_{arch}"] = write(f"sentencepiece_{arch}", arch, fill)
    own = [sp.encode(t, add_bos=True) for t in TEXTS]
    return written, own


def byte_level_files() -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]]
    types = [3 if t in specials else 1 for t in tokens]
    written = {}
    for name, arch, pre, bos in [
        ("bpe_llama3", "llama", "llama-bpe", True),
        ("bpe_qwen2", "qwen2", "qwen2", False),
    ]:

        def fill(w, arch=arch, pre=pre, bos=bos):
            model_metadata(w, arch, len(tokens))
            w.add_tokenizer_model("gpt2")
            w.add_tokenizer_pre(pre)
            w.add_token_list(tokens)
            w.add_token_types(types)
            w.add_token_merges(merges)
            w.add_bos_token_id(0)
            w.add_eos_token_id(1)
            w.add_add_bos_token(bos)

        written[name] = write(name, arch, fill)
    return written


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files, sentencepiece_ids = sentencepiece_files(Path(tmp))
    files.update(byte_level_files())
    reference = {}
    for name, path in files.items():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(OUT), gguf_file=path.name)
        ids = [tokenizer(t)["input_ids"] for t in TEXTS]
        reference[name] = {"texts": TEXTS, "ids": ids}
        print(name, type(tokenizer).__name__, ids[2][:12])
    reference["sentencepiece_llama"]["sentencepiece_ids"] = sentencepiece_ids
    agree = sum(a == b for a, b in zip(reference["sentencepiece_llama"]["ids"], sentencepiece_ids))
    print(f"sentencepiece itself agrees with transformers' llama rebuild on {agree}/{len(TEXTS)} texts")
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
