"""Translating with an export directory: CTranslate2's search, our semantics.

`Ct2Translator` offers what `Translator` offers (`translate(lines, progress)`, `.config`,
`.stats`), so `translate`, `pipeline` and the benchmarks take an export as they take a
checkpoint. Our decode options map onto `ctranslate2.Translator.translate_batch` thus:

- beam_size, nbest: beam_size (1 = greedy); all K finished hypotheses are asked for
  (num_hypotheses = K) and the best nbest kept. Where more than K hypotheses finish by the
  step a sentence completes (several EOS in the top K of that step), ours keeps the first
  K in finishing order and CTranslate2 ranks them all: the best hypothesis is the same, a
  lower n-best entry can be a better-scored one than ours.
- length_penalty: CTranslate2's score is logprob / length**length_penalty with the length
  counting EOS when return_end_token is on: ours exactly. For length_penalty 0 we pass
  1e-12: CTranslate2 would otherwise stop a sentence as soon as its top beam finishes,
  where ours (and CTranslate2 with any penalty) waits for K finished hypotheses; len**1e-12
  rounds to 1.0 in float32, so the scores stay raw log-probabilities.
- PAD and BOS are banned (suppress_sequences). CTranslate2 bans them before its softmax,
  ours after it, so its per-step log-probs are renormalised over the other tokens: a shift
  of -log(1 - p(PAD) - p(BOS)), zero to float precision for a trained model.
- EOS may end a hypothesis at once (min_decoding_length 0), sources are never cut again
  (max_input_length 0; they are truncated to the encoder's positions beforehand).
- The max length rule a * source + b is per sentence, CTranslate2's max_decoding_length per
  call. A batch runs with its longest limit; a sentence whose search reached its own limit
  L (a hypothesis of L tokens or more, or one CTranslate2 ended at its limit) is
  redone alone with max_decoding_length L (beam search) or cut to L tokens (greedy), and
  hypotheses without EOS get it appended with its log-probability from score_batch. Greedy
  search thus equals ours exactly. At the limit, beam search differs in one way: ours
  forces EOS one step after L - 1 for the K best live beams, CTranslate2 ends at step L - 1
  with its top K candidates of that step (EOS appended to them here), so where the limit
  binds a beam hypothesis can differ. For a trained model the limit rarely binds.

Batches are ours (length-sorted, decode.batch_size), and all the batches of a chunk are
handed to CTranslate2 at once (asynchronously): on CPU its workers (inter_threads) search
several side by side, each on its share of the threads (`thread_split`). The output is the
same for any split; results are taken, finished and reported batch by batch, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmt_bert.config import DecodeConfig, apply_override, config_from_dict, read_yaml
from nmt_bert.config_rules import validate
from nmt_bert.cpu import usable_cores
from nmt_bert.data.protected_spans import Protector
from nmt_bert.decode.length_penalty import normalised
from nmt_bert.decode.line_translator import (LineTranslator, Translation,
                                             check_decode_overrides, stderr_note)
from nmt_bert.errors import UserError
from nmt_bert.export.export_dir import ExportDir
from nmt_bert.model.special_tokens import BOS, EOS, PAD
from nmt_bert.model.vocab import SourceVocab, TargetVocab, load_target_vocab

NO_PENALTY = 1e-12  # stands for length_penalty 0 (see the module docstring)


@dataclass
class _Hyp:
    tokens: list[int]  # target ids without BOS/EOS
    logprob: float  # of tokens + [EOS]
    ended: bool  # whether CTranslate2 ended it with EOS (else EOS must be appended)


class Ct2Translator(LineTranslator):
    def __init__(self, model: Any, tokenizer: Any, rows: np.ndarray, source_tokens: list[str],
                 source_vocab: SourceVocab, target_vocab: TargetVocab,
                 decode_config: DecodeConfig, max_source_tokens: int, max_target_positions: int,
                 training_vocab: SourceVocab | None = None):
        """`model` is a loaded `ctranslate2.Translator`; `rows` (original_size,) maps each
        encoder-tokenizer id to a row of its word table, `source_tokens` names the rows."""
        super().__init__(tokenizer, source_vocab, target_vocab, decode_config,
                         max_source_tokens, max_target_positions, training_vocab)
        self.model = model
        self.rows = rows
        self.source_tokens = source_tokens
        self.target_tokens = target_vocab.piece_names()
        self.target_ids = {piece: i for i, piece in enumerate(self.target_tokens)}
        self.banned = [[self.target_tokens[PAD]], [self.target_tokens[BOS]]]

    @classmethod
    def from_export(cls, path: Path, device: str = "cpu", overrides: list[str] | None = None,
                    note: Callable[[str], None] | None = None,
                    threads: int = 0, workers: int = 0) -> "Ct2Translator":
        """Open an export directory; `overrides` may only touch `decode.*` keys.

        `decode.full_vocab` off makes a whole-table export read as the pruned vocabulary of
        training; on fails for an export that stores the pruned table only. On CPU,
        `threads` (0: the cores this process may use) are shared out among `workers`
        batches searched side by side (CTranslate2's inter_threads; 0: `cpu_workers`).
        """
        from nmt_bert.export.runtime import import_ctranslate2
        from nmt_bert.model.encoders import load_local_tokenizer

        check_decode_overrides(overrides)
        ct2 = import_ctranslate2()
        export = ExportDir(path)
        manifest = export.manifest()
        config = config_from_dict(read_yaml(export.config), str(export.config))
        for assignment in overrides or []:
            apply_override(config, assignment)
        validate(config)
        training = SourceVocab.load(export.source_vocab)
        rows, reading, trained, message = _source_rows(manifest["source_table"], training,
                                                      config.decode.full_vocab, export)
        if message is not None:
            (note or stderr_note)(message)
        kind, index = ct2_device(ct2, device)
        inter, intra = thread_split(kind, threads, workers)
        try:
            model = ct2.Translator(str(export.ct2), device=kind, device_index=index,
                                   compute_type="default", inter_threads=inter,
                                   intra_threads=intra)
        except (RuntimeError, ValueError) as err:
            raise UserError(f"{export.ct2}: CTranslate2 cannot load this model "
                            f"({str(err).strip().splitlines()[0]})") from None
        tokenizer = load_local_tokenizer(export.tokenizer_dir, backend_only=True)
        translator = cls(model, tokenizer, rows, export.source_tokens(), reading,
                         load_target_vocab(export.target_vocab, tokenizer), config.decode,
                         int(manifest["max_source_tokens"]), config.model.max_target_positions,
                         trained)
        translator.protect_spans(Protector.from_config(config.data))  # as the checkpoint did
        return translator

    def translate_batch(self, sources: list[list[int]],
                        span_counts: list[int] | None = None) -> list[Translation]:
        """Encoder-tokenizer id lists (non-empty, with special tokens) -> translations.
        CTranslate2 takes no per-sentence constraint: `span_counts` is not used (spans are
        restored and counted all the same)."""
        return next(self.search_batches([sources]))

    def search_batches(self, batches: list[list[list[int]]],
                       span_counts: list[list[int]] | None = None) -> Iterator[list[Translation]]:
        """Every batch is handed to CTranslate2 at once (asynchronously), so its workers
        (`inter_threads`) search several side by side; each is then finished against its
        own length limits and yielded in order."""
        submitted = []
        for sources in batches:
            tokens = [[self.source_tokens[r] for r in self.rows[np.asarray(ids)]]
                      for ids in sources]
            limits = [self.max_target_length(len(s)) for s in sources]
            submitted.append((tokens, limits, self._submit(tokens, max(limits))))
        for tokens, limits, pending in submitted:
            yield self._finish(tokens, limits, self._collect(pending))

    def _finish(self, tokens: list[list[str]], limits: list[int],
                results: list[list[_Hyp]]) -> list[Translation]:
        """Sentences whose search reached their own limit are cut or searched again with it
        (see the module docstring)."""
        redo: dict[int, list[int]] = {}  # limit -> sentences to search again with it
        for i, limit in enumerate(limits):
            if not any(not h.ended or len(h.tokens) >= limit for h in results[i]):
                continue  # its search stopped before its own limit: exactly ours
            if self.config.beam_size == 1 or limit == max(limits):
                results[i] = self._cut(tokens[i], results[i], limit)
            else:
                redo.setdefault(limit, []).append(i)
        for limit, rows in redo.items():
            again = self._collect(self._submit([tokens[i] for i in rows], limit))
            for i, hyps in zip(rows, again):
                results[i] = self._cut(tokens[i], hyps, limit)
        return [self._translation(hyps) for hyps in results]

    def _submit(self, tokens: list[list[str]], limit: int) -> list[Any]:
        """One asynchronous search of `tokens` (a batch): CTranslate2's pending results."""
        cfg = self.config
        return self.model.translate_batch(
            tokens, beam_size=cfg.beam_size, num_hypotheses=cfg.beam_size,
            length_penalty=cfg.length_penalty or NO_PENALTY, max_decoding_length=limit,
            min_decoding_length=0, max_input_length=0, return_scores=True,
            return_end_token=True, suppress_sequences=self.banned, asynchronous=True)

    def _collect(self, pending: list[Any]) -> list[list[_Hyp]]:
        """Wait for a submitted search; its hypotheses with raw log-probabilities."""
        eos = self.target_tokens[EOS]
        results = []
        for future in pending:
            result = future.result()
            hyps = []
            for pieces, score in zip(result.hypotheses, result.scores):
                ended = bool(pieces) and pieces[-1] == eos
                ids = [self.target_ids[p] for p in (pieces[:-1] if ended else pieces)]
                length = len(ids) + 1 if ended else len(ids)
                hyps.append(_Hyp(ids, score * length ** self.config.length_penalty, ended))
            results.append(hyps)
        return results

    def _cut(self, source: list[str], hyps: list[_Hyp], limit: int) -> list[_Hyp]:
        """Hypotheses of at most `limit` tokens, each ending in EOS: longer ones cut, EOS
        appended where missing, and their log-probabilities scored again."""
        fixed = [h if h.ended and len(h.tokens) < limit else _Hyp(h.tokens[:limit], 0.0, False)
                 for h in hyps]
        todo = [h for h in fixed if not h.ended]
        if todo:
            scored = self.model.score_batch([source] * len(todo),
                                            [[self.target_tokens[t] for t in h.tokens]
                                             for h in todo], max_input_length=0)
            for h, result in zip(todo, scored):
                h.logprob, h.ended = float(sum(result.log_probs)), True
        return fixed

    def _translation(self, hyps: list[_Hyp]) -> Translation:
        alpha = self.config.length_penalty
        ranked = sorted(((normalised(h.logprob, len(h.tokens) + 1, alpha), h) for h in hyps),
                        key=lambda item: -item[0])
        return Translation([self.candidate(h.tokens, score, h.logprob)
                            for score, h in ranked[: self.config.nbest]])


def cpu_workers(threads: int) -> int:
    """How many batches CTranslate2 searches side by side on `threads` CPU threads: one
    per thread, each single-threaded. At beam 5 on 2 cores this beats one batch on two
    threads (bench/decode_speed.py --ct2-workers): the matrices of a small decoder step
    are too small to share out, two searches are not."""
    return max(1, threads)


def thread_split(kind: str, threads: int, workers: int) -> tuple[int, int]:
    """(inter_threads, intra_threads) for a CTranslate2 Translator on `kind`."""
    if kind != "cpu":
        return max(1, workers), 0  # GPU: one worker per stream, threads do not apply
    threads = threads or usable_cores()
    workers = min(workers or cpu_workers(threads), threads)
    return workers, max(1, threads // workers)


def _source_rows(table: dict, training: SourceVocab, mode: str, export: ExportDir):
    """(id -> row map, vocabulary read through, training vocabulary or None, note or None)
    for an export whose word table is `table["rows"]`: pretrained, complete or pruned."""
    whole = SourceVocab(training.original_size, training.unk_id)
    if table["rows"] == "complete":
        return whole.lookup_table(), whole, None, None
    if table["rows"] == "pruned":
        if mode == "on":
            raise UserError(f"{export.manifest_file}: decode.full_vocab=on, but this export "
                            f"holds the pruned word table only ({table.get('note')})")
        note = table.get("note") if mode == "auto" else None
        return training.lookup_table(), training, None, note
    if mode == "off":  # the whole table, read as the pruned vocabulary of training
        kept = np.asarray(training.kept_ids, dtype=np.int64)
        return kept[training.lookup_table()], training, None, None
    return whole.lookup_table(), whole, training, None


def ct2_device(ct2: Any, name: Any = "auto") -> tuple[str, int]:
    """"auto", "cpu", "cuda" or "cuda:N" -> CTranslate2's (device, device_index), asking
    CTranslate2 (not torch, which this path never imports) which CUDA devices it sees.
    The same rule and messages as nmt_bert.devices.resolve_device."""
    text = str(name).strip().lower()
    kind, _, index_text = text.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index_text and not index_text.isdigit()) or \
            (index_text and kind != "cuda"):
        raise UserError(f"--device {text!r}: expected auto, cpu, cuda or cuda:N")
    count = ct2.get_cuda_device_count()
    if kind == "auto":
        return ("cuda", 0) if count > 0 else ("cpu", 0)
    if kind == "cpu":
        return "cpu", 0
    if count == 0:
        raise UserError(f"--device {text}: CUDA is not available here (use --device cpu)")
    index = int(index_text or 0)
    if index >= count:
        raise UserError(f"--device {text}: only {count} CUDA device(s) visible")
    return "cuda", index
