"""Tiny random models and corpora: for tests, the benchmarks' --smoke mode and quick demos.

A random BertModel (hidden 32, 2 layers) with a real WordPiece tokenizer, a word-for-word
Spanish-English corpus that is learnt in seconds, and the config strings of a tiny decoder.
"""

from __future__ import annotations

from pathlib import Path

TINY_WORDS = (
    "the a of and to in is was he she it they we you i not that this with for on at by from "
    "god lord king house people land day son father man water light earth heaven said came "
    "el la de y en que los las un una no se su por con para dios señor rey casa pueblo tierra "
    "día hijo padre hombre agua luz cielo dijo vino"
).split()


TINY_SPANISH = "dios señor rey casa pueblo tierra día hijo padre hombre agua luz cielo dijo vino".split()
TINY_ENGLISH = "god lord king house people land day son father man water light heaven said came".split()


def build_tiny_encoder(directory: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a random BertModel (hidden 32, 2 layers) and a WordPiece tokenizer to `directory`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # one class in transformers 5

    directory.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyzñáéíóúü"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,;:!?'\"-()0123456789"]
    vocab += list(letters) + [f"##{c}" for c in letters] + TINY_WORDS
    vocab = list(dict.fromkeys(vocab))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(
        str(directory / "vocab.txt"), do_lower_case=True, strip_accents=False
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(directory)
    return directory


def write_tiny_corpus(directory: Path, pairs: int = 400, seed: int = 0) -> tuple[Path, Path]:
    """Word-for-word Spanish-English sentences of 2-8 words: learnable in seconds."""
    import random

    rng = random.Random(seed)
    vocab = list(zip(TINY_SPANISH, TINY_ENGLISH))
    src, tgt = [], []
    for _ in range(pairs):
        chosen = [vocab[rng.randrange(len(vocab))] for _ in range(rng.randint(2, 8))]
        src.append(" ".join(s for s, _ in chosen))
        tgt.append(" ".join(t for _, t in chosen))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.es").write_text("\n".join(src) + "\n", encoding="utf-8")
    (directory / "corpus.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return directory / "corpus.es", directory / "corpus.en"


TINY_MODEL = [
    "model.d_model=32", "model.heads=2", "model.ffn_dim=64", "model.decoder_layers=2",
    "model.adapter_hidden=64", "model.dropout=0.0",
]


def tiny_sets(encoder_dir: Path, *overrides: str) -> list[str]:
    """`--set` strings for the tiny encoder, a tiny decoder and a few quick steps."""
    return [
        f"model.encoder={encoder_dir}", "data.tgt_vocab_size=40", "data.dev_fraction=0.1",
        "data.test_fraction=0.05", *TINY_MODEL, "train.batch_tokens=800", "train.warmup_steps=10",
        "train.lr=3e-3", "train.stage2_lr=1e-3", "train.encoder_lr=1e-4", "train.log_every=1",
        "train.stage1_steps=10", "train.stage2_steps=0", "train.eval_every=10", "decode.beam_size=2",
        *overrides,
    ]


def tiny_config(encoder_dir: Path, *overrides: str):
    """A config for the tiny encoder and a tiny decoder; `overrides` are `--set` strings."""
    from nmt_bert.config import load_config

    return load_config(None, tiny_sets(encoder_dir, *overrides))
