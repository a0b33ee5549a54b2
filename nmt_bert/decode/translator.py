"""Translator: lines of source text in, detokenized translations out, by our PyTorch search.

Used by `translate` (through a checkpoint) and by training-time validation (from the live
model). Sentences are sorted by length and batched so padding stays small (`LineTranslator`),
encoded once per batch, searched (greedy when beam_size is 1, else beam), and returned in
input order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from nmt_bert.config import DecodeConfig, apply_override
from nmt_bert.config_rules import validate
from nmt_bert.data.protected_spans import Protector, placeholder_symbols
from nmt_bert.devices import autocast_context, resolve_device
from nmt_bert.model.encoders import encoder_max_tokens
from nmt_bert.model.seq2seq import Seq2Seq
from nmt_bert.decode.line_translator import (  # noqa: F401 - the names callers import from here
    Candidate, LineTranslator, TranslateStats, Translation, check_decode_overrides,
    empty_translation, stderr_note)
from nmt_bert.decode.search import Hypothesis, SpanSlots, beam_search, greedy_search
from nmt_bert.model.vocab import SourceVocab, TargetVocab


class Translator(LineTranslator):
    def __init__(self, model: Seq2Seq, tokenizer: Any, source_vocab: SourceVocab,
                 target_vocab: TargetVocab, decode_config: DecodeConfig,
                 device: str | torch.device | None = None, precision: str = "auto",
                 training_vocab: SourceVocab | None = None):
        """`device` defaults to the model's; `precision` as in `devices.autocast_context`.

        `source_vocab` maps encoder-tokenizer ids to rows of the model's word table;
        `training_vocab` is the pruned vocabulary of training when the model reads through a
        wider table than it (see `LineTranslator`). `tokenizer` may be None for a translator
        that only translates lines already read (`translate_sources`: training's dev
        evaluations).
        """
        super().__init__(tokenizer, source_vocab, target_vocab, decode_config,
                         encoder_max_tokens(model.encoder, tokenizer), model.decoder.max_positions,
                         training_vocab)
        self.model = model
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        self.precision = precision
        self.rows = torch.from_numpy(source_vocab.lookup_table())  # encoder id -> embedding row

    @classmethod
    def from_checkpoint(cls, path: Path, device: str | torch.device = "cpu",
                        overrides: list[str] | None = None,
                        note: Callable[[str], None] | None = None) -> "Translator":
        """Load a checkpoint (or run) directory; `overrides` may only touch `decode.*` keys.

        The encoder reads through the whole pretrained word table where `decode.full_vocab`
        allows (`nmt_bert.model.full_vocab`); `note` receives the one line saying why not, where
        `auto` keeps the pruned table (default: printed on stderr).
        """
        from nmt_bert.model.checkpoint import load_checkpoint
        from nmt_bert.model.full_vocab import choose_full_vocab, widen_encoder

        check_decode_overrides(overrides)
        device = resolve_device(device)
        ckpt = load_checkpoint(path, device)
        for assignment in overrides or []:
            apply_override(ckpt.config, assignment)
        validate(ckpt.config)
        source_vocab, training_vocab = ckpt.source_vocab, None
        table = ckpt.model.encoder.get_input_embeddings().weight
        choice = choose_full_vocab(ckpt.config, source_vocab, table)
        if choice.weight is not None:
            training_vocab = source_vocab
            source_vocab = widen_encoder(ckpt.model.encoder, choice.weight, source_vocab)
        if choice.note is not None:
            (note or stderr_note)(choice.note)
        translator = cls(ckpt.model, ckpt.tokenizer, source_vocab, ckpt.target_vocab,
                         ckpt.config.decode, device, training_vocab=training_vocab)
        translator.protect_spans(Protector.from_config(ckpt.config.data))
        return translator

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def translate_batch(self, sources: list[list[int]],
                        span_counts: list[int] | None = None) -> list[Translation]:
        """Encoder-tokenizer id lists (non-empty, with special tokens) -> translations;
        with `span_counts` and decode.constrain_spans, each placeholder exactly once."""
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
            spans = self.span_slots(span_counts)
            if cfg.beam_size == 1:
                nbest = [[h] for h in greedy_search(self.model, states, mask, max_lens,
                                                    cfg.length_penalty, spans)]
            else:
                nbest = beam_search(self.model, states, mask, max_lens, cfg.beam_size,
                                    cfg.length_penalty, cfg.nbest, spans)
        return [Translation([self.hypothesis_candidate(h) for h in hyps]) for hyps in nbest]

    def span_slots(self, span_counts: list[int] | None) -> SpanSlots | None:
        """The placeholder constraint of a batch: None without masking or when switched off."""
        if span_counts is None or not self.config.constrain_spans:
            return None
        ids = torch.tensor([self.target_vocab.piece_id(p) for p in placeholder_symbols()],
                           device=self.device)  # (P,)
        counts = torch.tensor(span_counts, device=self.device)
        return SpanSlots(ids, torch.arange(ids.numel(), device=self.device) < counts[:, None])

    def max_target_lengths(self, source_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) source lengths -> (B,) longest targets, by `max_target_length`'s rule."""
        return torch.tensor([self.max_target_length(n) for n in source_lengths.tolist()],
                            device=source_lengths.device)

    def hypothesis_candidate(self, hyp: Hypothesis) -> Candidate:
        return self.candidate(hyp.tokens, hyp.score, hyp.logprob)
