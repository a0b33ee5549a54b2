"""Open whatever a user points `translate` at: a run directory or a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import torch

from nmt_bert.decode.translator import Translator


def open_translator(path: Path | str, device: str | torch.device = "auto",
                    overrides: list[str] | None = None) -> Translator:
    """A translator for `path` (run or checkpoint directory); `overrides` are decode.* keys."""
    return Translator.from_checkpoint(Path(path), device=device, overrides=overrides)
