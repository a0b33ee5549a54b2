"""Shared fixtures: a tiny random BERT encoder with a real WordPiece tokenizer, built on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nmt_bert.tiny import (TINY_ENGLISH, TINY_MODEL, TINY_SPANISH, TINY_WORDS,  # noqa: F401
                           build_tiny_encoder, tiny_config, tiny_sets, write_tiny_corpus)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_parallel_lines() -> tuple[list[str], list[str]]:
    """A small Spanish-English word-for-word corpus (sentences of 2-8 words)."""
    import random

    pairs = list(zip(TINY_SPANISH, TINY_ENGLISH))
    rng = random.Random(0)
    src, tgt = [], []
    for _ in range(200):
        chosen = [pairs[rng.randrange(len(pairs))] for _ in range(rng.randint(2, 8))]
        src.append(" ".join(s for s, _ in chosen))
        tgt.append(" ".join(t for _, t in chosen))
    return src, tgt


@pytest.fixture(scope="session")
def tiny_prepared_dir(tmp_path_factory, tiny_encoder_dir) -> Path:
    """The tiny corpus prepared with the tiny encoder (shared, read-only for tests)."""
    from rich.console import Console

    from nmt_bert.data.corpora import CorpusSpec
    from nmt_bert.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny-data")
    src, tgt = write_tiny_corpus(root)
    prepare(CorpusSpec(src=src, tgt=tgt), root / "data", tiny_config(tiny_encoder_dir),
            console=Console(file=open(os.devnull, "w")))
    return root / "data"
