"""Vocabularies: the pruned source (encoder) vocabulary and the target SentencePiece model."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sentencepiece as spm

from nmt_bert.errors import UserError
from nmt_bert.model.special_tokens import BOS, EOS, PAD, UNK

if TYPE_CHECKING:
    import torch


@dataclass
class SourceVocab:
    """Maps encoder-tokenizer ids to rows of the (possibly pruned) embedding table.

    `kept_ids` are the original ids kept, sorted; row i of the pruned table is original id
    kept_ids[i]. Ids outside the kept set map to the row of the tokenizer's unknown token.
    With `kept_ids` None nothing was pruned and ids pass through unchanged.
    """

    original_size: int
    unk_id: int
    kept_ids: list[int] | None = None

    @classmethod
    def build(cls, id_lists: Iterable[Iterable[int]], original_size: int, unk_id: int,
              special_ids: Iterable[int]) -> "SourceVocab":
        seen = np.zeros(original_size, dtype=bool)
        for ids in id_lists:
            seen[np.asarray(ids, dtype=np.int64)] = True
        seen[list(special_ids)] = True
        seen[unk_id] = True
        return cls(original_size, unk_id, np.flatnonzero(seen).tolist())

    @property
    def size(self) -> int:
        return self.original_size if self.kept_ids is None else len(self.kept_ids)

    def kept_tensor(self) -> "torch.Tensor":
        import torch  # here only: the CTranslate2 path reads vocabularies without torch

        return torch.tensor(self.kept_ids if self.kept_ids is not None else range(self.original_size))

    def lookup_table(self) -> np.ndarray:
        """(original_size,) int64: original id -> row; unknown ids -> the unknown token's row."""
        if self.kept_ids is None:
            return np.arange(self.original_size, dtype=np.int64)
        table = np.full(self.original_size, -1, dtype=np.int64)
        table[np.asarray(self.kept_ids)] = np.arange(len(self.kept_ids))
        table[table < 0] = table[self.unk_id]
        return table

    def kept_mask(self) -> np.ndarray | None:
        """(original_size,) bool, True for kept ids; None when nothing was pruned."""
        if self.kept_ids is None:
            return None
        kept = np.zeros(self.original_size, dtype=bool)
        kept[np.asarray(self.kept_ids)] = True
        return kept

    def out_of_vocab(self, ids: Iterable[int], kept: np.ndarray | None = None) -> int:
        """How many of `ids` fall outside the kept set (and become unknown).

        `kept` is a precomputed `kept_mask()`, for callers that count many lines.
        """
        kept = self.kept_mask() if kept is None else kept
        arr = np.asarray(list(ids), dtype=np.int64)
        return int((~kept[arr]).sum()) if kept is not None and arr.size else 0

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "SourceVocab":
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            raise UserError(f"{path}: unreadable source vocabulary ({err})") from None


class TargetVocab:
    """The target SentencePiece model with the ids `prepare` fixes: pad 0, unk 1, bos 2, eos 3."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as err:
            raise UserError(f"{path}: cannot load SentencePiece model ({err})") from None
        fixed = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if fixed != (PAD, UNK, BOS, EOS):
            raise UserError(f"{path}: expected pad/unk/bos/eos ids 0/1/2/3, found {fixed}")

    def __len__(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, text: str) -> list[int]:
        return self.sp.EncodeAsIds(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.DecodeIds([i for i in ids if i > EOS])
