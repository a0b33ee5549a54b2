"""Lines of source text in, translations out: what every translator shares.

Tokenization with the encoder's tokenizer (truncated to its positions), empty lines, length
sorted batches, input order, progress and running statistics live here; a subclass only
says how one batch of encoder-tokenizer ids is searched (`translate_batch`): our PyTorch
search (`decode.translator.Translator`) or an exported CTranslate2 model
(`export.ct2_translator.Ct2Translator`).

    translate(lines) == translate_sources(read(lines))

`read` is the only step that needs the tokenizer, so lines read once (a training run's dev
set) can be translated again by a translator made without one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nmt_bert.config import DecodeConfig
from nmt_bert.errors import UserError
from nmt_bert.data.protected_spans import PLACEHOLDER, Protector, compare, unmask
from nmt_bert.model.vocab import SourceVocab, TargetVocab


@dataclass
class Candidate:
    text: str
    tokens: list[int]  # target ids without BOS/EOS
    score: float  # length-normalised log-probability (see nmt_bert.decode.length_penalty)
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
    """Running totals over every `translate` call of one translator."""

    sentences: int = 0  # input lines, empty ones included
    source_tokens: int = 0  # encoder pieces fed to the model, special tokens included
    target_tokens: int = 0  # tokens of the best hypotheses, EOS excluded
    seconds: float = 0.0
    oov_pieces: int = 0  # source pieces outside a pruned encoder vocabulary (read as unknown)
    truncated: int = 0  # sentences cut to the encoder's maximum length
    # pieces outside the training (pruned) vocabulary read through their pretrained rows
    # (decode.full_vocab); they are not counted in oov_pieces
    pretrained_pieces: int = 0
    span_lines: int = 0  # lines with protected spans (data.protect)
    span_problems: int = 0  # of those, lines whose translation dropped, repeated or invented one

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else 0.0

    @property
    def target_tokens_per_second(self) -> float:
        return self.target_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SourceLines:
    """Lines as the model reads them (`LineTranslator.read`): one entry per input line."""

    ids: list[list[int]]  # encoder-tokenizer ids with special tokens; [] = nothing to translate
    spans: list[list[str]]  # the line's protected spans (what its placeholders stand for)


class LineTranslator:
    """`translate(lines)` for any search over encoder-tokenizer ids.

    `source_vocab` is the vocabulary the model reads through (pieces outside it count as
    unknown); `training_vocab`, when it differs (a full pretrained table in use), is the
    pruned one training saw, for the `pretrained_pieces` count.
    """

    def __init__(self, tokenizer: Any, source_vocab: SourceVocab, target_vocab: TargetVocab,
                 decode_config: DecodeConfig, max_source_tokens: int, max_target_positions: int,
                 training_vocab: SourceVocab | None = None):
        self.tokenizer = tokenizer
        self.source_vocab = source_vocab
        self.target_vocab = target_vocab
        self.config = decode_config
        self.stats = TranslateStats()
        self.kept = source_vocab.kept_mask()  # None when nothing was pruned
        self.training_vocab = training_vocab
        self.trained = training_vocab.kept_mask() if training_vocab is not None else None
        self.max_source_tokens = max_source_tokens
        self.max_target_positions = max_target_positions
        self.protection: Protector | None = None
        self.masking = False

    def protect_spans(self, protector: Protector | None) -> None:
        """Check protected spans with `protector` (the checkpoint's data.protect); mask them
        into placeholders before encoding and restore them after decoding where the target
        vocabulary has the placeholders (the model was trained on masked pairs). Otherwise
        the spans of source and translation are only compared."""
        self.protection = protector
        self.masking = protector is not None and self.target_vocab.has_piece(PLACEHOLDER.format(0))

    def translate_batch(self, sources: list[list[int]],
                        span_counts: list[int] | None = None) -> list[Translation]:
        """Encoder-tokenizer id lists (non-empty, with special tokens) -> translations.

        `span_counts` (with masking): how many placeholders each source carries, for a search
        that can keep each exactly once (decode.constrain_spans)."""
        raise NotImplementedError

    def search_batches(self, batches: list[list[list[int]]],
                       span_counts: list[list[int]] | None = None) -> Iterator[list[Translation]]:
        """The translations of each batch, in order. One batch after the other here; a
        translator that can run several batches at once (CTranslate2's workers) submits them
        all first."""
        for i, batch in enumerate(batches):
            yield (self.translate_batch(batch, span_counts[i]) if span_counts is not None
                   else self.translate_batch(batch))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Held around the batches of one `translate` call (e.g. a model in eval mode)."""
        yield

    def translate(self, lines: list[str],
                  progress: Callable[[int], None] | None = None) -> list[Translation]:
        """One Translation per line, in input order; `progress(n)` after each batch of n lines.

        Empty and whitespace-only lines (and lines the tokenizer reduces to nothing) give an
        empty translation without running the model; no lines give an empty list.
        """
        return self.translate_sources(self.read(lines), progress)

    def read(self, lines: list[str]) -> SourceLines:
        """The lines masked (when masking), encoded and cut to the encoder's positions."""
        if self.tokenizer is None:
            raise ValueError("this translator was made without a tokenizer: it translates "
                             "lines already read (translate_sources) only")
        start = time.perf_counter()
        masked, spans = self.mask_lines(lines)
        sources = SourceLines(self.encode_sources(masked), spans)
        self.stats.seconds += time.perf_counter() - start
        return sources

    def translate_sources(self, sources: SourceLines,
                          progress: Callable[[int], None] | None = None) -> list[Translation]:
        """`translate` from lines already read (by this translator or one with the same
        tokenizer, encoder and data.protect); the tokenizer is not used."""
        start = time.perf_counter()
        encoded, spans = sources.ids, sources.spans
        results = [empty_translation() if not ids else None for ids in encoded]
        items = [(i, ids) for i, ids in enumerate(encoded) if ids]
        empty = len(encoded) - len(items)
        if progress is not None and empty:
            progress(empty)
        # Longest first: padding stays small and memory problems show up at once.
        items.sort(key=lambda item: -len(item[1]))
        size = self.config.batch_size
        batches = [items[first: first + size] for first in range(0, len(items), size)]
        with self.running():
            searched = self.search_batches(
                [[ids for _, ids in batch] for batch in batches],
                [[len(spans[i]) for i, _ in batch] for batch in batches] if self.masking else None)
            for batch, translations in zip(batches, searched):
                for (index, _), translation in zip(batch, translations):
                    results[index] = translation
                if progress is not None:
                    progress(len(batch))
        if self.protection is not None:
            self.restore_spans(results, spans)
        self.stats.sentences += len(encoded)
        self.stats.target_tokens += sum(len(t.candidates[0].tokens) for t in results)
        self.stats.seconds += time.perf_counter() - start
        return results

    def mask_lines(self, lines: list[str]) -> tuple[list[str], list[list[str]]]:
        """Lines with their protected spans masked (when masking), and each line's spans."""
        if self.protection is None:
            return lines, [[] for _ in lines]
        if not self.masking:
            return lines, [self.protection.spans(line) for line in lines]
        pairs = [self.protection.mask(line) for line in lines]
        return [m for m, _ in pairs], [s for _, s in pairs]

    def restore_spans(self, results: list[Translation], spans: list[list[str]]) -> None:
        """Unmask (or compare) every candidate; count lines whose best one has a problem.

        With decode.strict_spans, spans a candidate dropped are appended to it.
        """
        strict = self.config.strict_spans
        for translation, line_spans in zip(results, spans):
            if not line_spans:
                continue
            self.stats.span_lines += 1
            for rank, cand in enumerate(translation.candidates):
                if self.masking:
                    cand.text, report = unmask(cand.text, line_spans, strict)
                else:
                    report = compare(line_spans, self.protection.spans(cand.text))
                    if strict and report.missing:
                        cand.text = " ".join([cand.text, *report.missing]).strip()
                if rank == 0 and not report.ok:
                    self.stats.span_problems += 1

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
            if self.training_vocab is not None:
                self.stats.pretrained_pieces += self.training_vocab.out_of_vocab(ids, self.trained)
            self.stats.source_tokens += len(ids)
            out.append(ids)
        return out

    def max_target_length(self, source_length: int) -> int:
        """a * source tokens + b, at least 1, and leaving a decoder position for the EOS step."""
        cfg = self.config
        length = math.floor(cfg.max_len_a * source_length + cfg.max_len_b)
        return max(1, min(length, self.max_target_positions - 1))

    def candidate(self, tokens: list[int], score: float, logprob: float) -> Candidate:
        # Whitespace collapsed: a decoded newline must never split one translation in two.
        text = self.target_vocab.decode(tokens)
        return Candidate(" ".join(text.split()), tokens, score, logprob)


def check_decode_overrides(overrides: list[str] | None) -> None:
    """Translation takes `decode.*` overrides only."""
    for assignment in overrides or []:
        if not assignment.strip().startswith("decode."):
            raise UserError(f"--set {assignment!r}: translation only accepts decode.* keys")


def stderr_note(text: str) -> None:
    """A one-line note on stderr (what `auto` choices print)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[dim]note:[/] {escape(text)}", highlight=False, soft_wrap=True)
