"""Open whatever a user points `translate` at: a run, checkpoint or export directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_bert.decode.line_translator import LineTranslator

if TYPE_CHECKING:
    import torch


def open_translator(path: Path | str, device: "str | torch.device" = "auto",
                    overrides: list[str] | None = None,
                    note: Callable[[str], None] | None = None) -> LineTranslator:
    """A translator for `path`; `overrides` are decode.* keys.

    A run or checkpoint directory gives our PyTorch `Translator`; an export directory
    (`nmt-bert export`) gives a `Ct2Translator` with the same interface (`translate`,
    `.config`, `.stats`). `note` receives one-line notes (default: printed on stderr).
    """
    from nmt_bert.export.export_dir import is_export

    if is_export(path):
        from nmt_bert.export.ct2_translator import Ct2Translator

        return Ct2Translator.from_export(Path(path), device=device, overrides=overrides,
                                         note=note)
    from nmt_bert.decode.translator import Translator

    return Translator.from_checkpoint(Path(path), device=device, overrides=overrides, note=note)
