"""Translator: lines of source text in, detokenized translations out.

Used by `translate` (through a checkpoint) and by training-time validation (from the live
model). Sentences are sorted by length and batched so padding stays small, encoded once per
batch, searched (greedy when beam_size is 1, else beam), and returned in input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nmt_bert.config import DecodeConfig, apply_override, validate
from nmt_bert.devices import autocast_context, resolve_device
from nmt_bert.model.encoders import encoder_max_tokens
from nmt_bert.errors import UserError
from nmt_bert.model.seq2seq import Seq2Seq
from nmt_bert.decode.search import Hypothesis, beam_search, greedy_search
from nmt_bert.model.vocab import SourceVocab, TargetVocab


@dataclass
class Candidate:
    text: str
    tokens: list[int]  # target ids without BOS/EOS
    score: float  # length-normalised log-probability (see nmt_bert.search)
    logprob: float


@dataclass
class Translation:
    candidates: list[Candidate]  # best first, up to decode.nbest; one empty one for an empty line

    @property
    def text(self) -> str:
        return self.candidates[0].text

    @property
    def score(self) -> float:
        return self.candidates[0].score


def empty_translation() -> Translation:
    return Translation([Candidate("", [], 0.0, 0.0)])


@dataclass
class TranslateStats:
    """Running totals over every `translate` call of one Translator."""

    sentences: int = 0  # input lines, empty ones included
    source_tokens: int = 0  # encoder pieces fed to the model, special tokens included
    target_tokens: int = 0  # tokens of the best hypotheses, EOS excluded
    seconds: float = 0.0
    oov_pieces: int = 0  # source pieces outside a pruned encoder vocabulary (read as unknown)
    truncated: int = 0  # sentences cut to the encoder's maximum length

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else 0.0

    @property
    def target_tokens_per_second(self) -> float:
        return self.target_tokens / self.seconds if self.seconds > 0 else 0.0


class Translator:
    def __init__(self, model: Seq2Seq, tokenizer: Any, source_vocab: SourceVocab,
                 target_vocab: TargetVocab, decode_config: DecodeConfig,
                 device: str | torch.device | None = None, precision: str = "auto"):
        """`device` defaults to the model's; `precision` as in `devices.autocast_context`."""
        self.model = model
        self.tokenizer = tokenizer
        self.target_vocab = target_vocab
        self.config = decode_config
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        self.precision = precision
        self.stats = TranslateStats()
        self.rows = torch.from_numpy(source_vocab.lookup_table())  # encoder id -> embedding row
        self.source_vocab = source_vocab
        self.kept = source_vocab.kept_mask()  # None when nothing was pruned
        self.max_source_tokens = encoder_max_tokens(model, tokenizer)

    @classmethod
    def from_checkpoint(cls, path: Path, device: str | torch.device = "cpu",
                        overrides: list[str] | None = None) -> "Translator":
        """Load a checkpoint (or run) directory; `overrides` may only touch `decode.*` keys."""
        from nmt_bert.model.checkpoint import load_checkpoint

        for assignment in overrides or []:
            if not assignment.strip().startswith("decode."):
                raise UserError(f"--set {assignment!r}: translation only accepts decode.* keys")
        device = resolve_device(device)
        ckpt = load_checkpoint(path, device)
        for assignment in overrides or []:
            apply_override(ckpt.config, assignment)
        validate(ckpt.config)
        return cls(ckpt.model, ckpt.tokenizer, ckpt.source_vocab, ckpt.target_vocab,
                   ckpt.config.decode, device)

    def translate(self, lines: list[str],
                  progress: Callable[[int], None] | None = None) -> list[Translation]:
        """One Translation per line, in input order; `progress(n)` after each batch of n lines.

        Empty and whitespace-only lines (and lines the tokenizer reduces to nothing) give an
        empty translation without running the model; no lines give an empty list.
        """
        start = time.perf_counter()
        encoded = self.encode_sources(lines)
        results = [empty_translation() if not ids else None for ids in encoded]
        sources = [(i, ids) for i, ids in enumerate(encoded) if ids]
        empty = len(lines) - len(sources)
        if progress is not None and empty:
            progress(empty)
        # Longest first: padding stays small and memory problems show up at once.
        sources.sort(key=lambda item: -len(item[1]))
        was_training = self.model.training
        self.model.eval()
        try:
            for first in range(0, len(sources), self.config.batch_size):
                batch = sources[first: first + self.config.batch_size]
                translations = self.translate_batch([ids for _, ids in batch])
                for (index, _), translation in zip(batch, translations):
                    results[index] = translation
                if progress is not None:
                    progress(len(batch))
        finally:
            self.model.train(was_training)
        self.stats.sentences += len(lines)
        self.stats.target_tokens += sum(len(t.candidates[0].tokens) for t in results)
        self.stats.seconds += time.perf_counter() - start
        return results

    def encode_sources(self, lines: list[str]) -> list[list[int]]:
        """Encoder-tokenizer ids with special tokens, truncated to the encoder's positions.

        Empty or whitespace-only lines and lines without any piece give []; an empty `lines`
        gives [] without calling the tokenizer (it fails on an empty batch). Updates the
        truncation and out-of-vocabulary counts.
        """
        if not lines:
            return []
        texts = [line if line.strip() else "" for line in lines]
        encoded = self.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
        specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        limit = self.max_source_tokens
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > limit]
        if too_long:  # re-encoded with truncation: the tokenizer knows where its specials go
            cut = self.tokenizer([texts[i] for i in too_long], add_special_tokens=True,
                                 truncation=True, max_length=limit)["input_ids"]
            for i, ids in zip(too_long, cut):
                encoded[i] = ids
            self.stats.truncated += len(too_long)
        out = []
        for text, ids in zip(texts, encoded):
            if not text or len(ids) <= specials:
                out.append([])
                continue
            self.stats.oov_pieces += self.source_vocab.out_of_vocab(ids, self.kept)
            self.stats.source_tokens += len(ids)
            out.append(ids)
        return out

    def translate_batch(self, sources: list[list[int]]) -> list[Translation]:
        """Encoder-tokenizer id lists (non-empty, with special tokens) -> translations."""
        width = max(len(ids) for ids in sources)
        ids = torch.zeros(len(sources), width, dtype=torch.long)  # pad value is masked anyway
        for row, seq in enumerate(sources):
            ids[row, : len(seq)] = self.rows[torch.tensor(seq)]
        mask = torch.arange(width)[None, :] < torch.tensor([len(s) for s in sources])[:, None]
        ids, mask = ids.to(self.device), mask.to(self.device)
        cfg = self.config
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            states = self.model.encode_states(ids, mask)  # (B, S, E)
            max_lens = self.max_target_lengths(mask.sum(dim=1))
            if cfg.beam_size == 1:
                nbest = [[h] for h in greedy_search(self.model, states, mask, max_lens,
                                                    cfg.length_penalty)]
            else:
                nbest = beam_search(self.model, states, mask, max_lens, cfg.beam_size,
                                    cfg.length_penalty, cfg.nbest)
        return [Translation([self.candidate(h) for h in hyps]) for hyps in nbest]

    def max_target_lengths(self, source_lengths: torch.Tensor) -> torch.Tensor:
        """a * source tokens + b, at least 1, and leaving a decoder position for the EOS step."""
        cfg = self.config
        lengths = (cfg.max_len_a * source_lengths.float() + cfg.max_len_b).floor().long()
        return lengths.clamp(1, self.model.decoder.max_positions - 1)

    def candidate(self, hyp: Hypothesis) -> Candidate:
        # Whitespace collapsed: a decoded newline must never split one translation in two.
        text = self.target_vocab.decode(hyp.tokens)
        return Candidate(" ".join(text.split()), hyp.tokens, hyp.score, hyp.logprob)
