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

    def has_piece(self, piece: str) -> bool:
        """Whether `piece` is one piece of the vocabulary (a protected-span placeholder)."""
        return self.piece_id(piece) != self.sp.unk_id()

    def piece_id(self, piece: str) -> int:
        """The id of `piece` (the unknown id for a piece not in the vocabulary)."""
        return self.sp.piece_to_id(piece)

    def piece_names(self) -> list[str]:
        """One distinct string per row (what an export names its target vocabulary with)."""
        return [self.sp.IdToPiece(i) for i in range(len(self))]


class EncoderTargetVocab:
    """The target side read and written with the encoder's own tokenizer (BERT2BERT).

    Only the tokenizer ids the target corpus uses are kept, as for the source. Row r stands
    for tokenizer id `kept_ids[r]`; rows 0-3 are the tokenizer's pad, unk, sentence-start
    ([CLS] / <s>) and sentence-end ([SEP] / </s>) tokens, so PAD/UNK/BOS/EOS
    (model/special_tokens.py) mean the same rows for every target vocabulary. Ids outside the
    kept set become the UNK row.
    """

    FILE = "target_vocab.json"

    def __init__(self, tokenizer, kept_ids: list[int]):
        self.tokenizer = tokenizer
        self.kept_ids = list(kept_ids)
        if self.kept_ids[:4] != special_rows(tokenizer):
            raise UserError("target vocabulary: rows 0-3 must be the tokenizer's pad, unk, "
                            f"bos, eos ids {special_rows(tokenizer)}, found {self.kept_ids[:4]}")
        self.row = {original: r for r, original in enumerate(self.kept_ids)}

    @classmethod
    def build(cls, tokenizer, id_lists: Iterable[Iterable[int]]) -> "EncoderTargetVocab":
        """Keep the specials and every tokenizer id in `id_lists` (from `tokenize`)."""
        specials = special_rows(tokenizer)
        used: set[int] = set()
        for ids in id_lists:
            used.update(int(i) for i in ids)
        return cls(tokenizer, specials + sorted(used - set(specials)))

    def __len__(self) -> int:
        return len(self.kept_ids)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Tokenizer ids of each text, without special tokens."""
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[self.row.get(i, UNK) for i in ids] for ids in self.tokenize(texts)]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        original = [self.kept_ids[i] for i in ids if i > EOS]
        return self.tokenizer.decode(original, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False).strip()

    def has_piece(self, piece: str) -> bool:
        """Whether `piece` is one kept piece: never a protected-span placeholder, which the
        encoder's tokenizer splits (spans are then compared, not masked)."""
        ids = self.tokenize([piece])[0]
        return len(ids) == 1 and ids[0] in self.row and self.row[ids[0]] > EOS

    def piece_names(self) -> list[str]:
        """One distinct string per row: the tokenizer's piece, or a placeholder of its own
        where the tokenizer names none or repeats one."""
        pieces = self.tokenizer.convert_ids_to_tokens(self.kept_ids)
        names, used = [], set()
        for row, piece in enumerate(pieces):
            if not isinstance(piece, str) or piece in used:
                piece = f"<nmt-bert-target-row-{row}>"
            used.add(piece)
            names.append(piece)
        return names

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"kept_ids": self.kept_ids}), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, tokenizer) -> "EncoderTargetVocab":
        try:
            kept = json.loads(Path(path).read_text(encoding="utf-8"))["kept_ids"]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise UserError(f"{path}: unreadable target vocabulary ({err})") from None
        return cls(tokenizer, kept)


def special_rows(tokenizer) -> list[int]:
    """The tokenizer's pad, unk, sentence-start and sentence-end ids, in PAD/UNK/BOS/EOS order."""
    bos = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.pad_token_id, tokenizer.unk_token_id, bos, eos]
    if None in ids or len(set(ids)) != 4:
        raise UserError(f"the encoder's tokenizer has no distinct pad/unk/start/end tokens "
                        f"({ids}); data.target_tokenizer=encoder needs them")
    return ids


TARGET_VOCAB_FILES = ("spm.model", EncoderTargetVocab.FILE)  # sentencepiece, encoder


def target_vocab_file(directory: Path) -> Path:
    """The target vocabulary file of a prepared-data or checkpoint directory."""
    for name in TARGET_VOCAB_FILES:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return Path(directory) / TARGET_VOCAB_FILES[0]


def load_target_vocab(path: Path, tokenizer=None):
    """A TargetVocab (spm.model) or an EncoderTargetVocab (target_vocab.json, read with
    `tokenizer`, by default the `encoder_tokenizer/` beside it)."""
    path = Path(path)
    if path.name != EncoderTargetVocab.FILE:
        return TargetVocab(path)
    if tokenizer is None:
        from nmt_bert.model.encoders import load_local_tokenizer

        tokenizer = load_local_tokenizer(path.parent / "encoder_tokenizer")
    return EncoderTargetVocab.load(path, tokenizer)
