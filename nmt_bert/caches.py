"""Where nmt-bert keeps what it can always rebuild: one root, one folder per kind.

    $NMT_BERT_CACHE (default ~/.cache/nmt-bert)/
        encoders/         bundled encoders converted into transformers directories
        encoder-states/   stage-1 encoder states, keyed by encoder weights + source ids

Nothing here is an input or a result: any folder under the root may be deleted at any time
(`rm -rf ~/.cache/nmt-bert/encoder-states`) and is rebuilt when next needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("NMT_BERT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "nmt-bert"


def encoders_dir() -> Path:
    return cache_root() / "encoders"


def encoder_states_dir(configured: str = "") -> Path:
    """`train.cache_dir` when set, else the root's encoder-states folder."""
    return Path(configured).expanduser() if configured else cache_root() / "encoder-states"
