"""Greedy and beam search over a Seq2Seq model, decoding incrementally.

Shapes: B sentences, A sentences still active, K beam size, S source length, V target vocab.

Both searches share one convention so that beam size 1 reproduces greedy search exactly:
- log-probabilities are the model's own (log_softmax over the full vocabulary, in float32);
  PAD and BOS are then banned (-inf) without renormalising, so `Hypothesis.logprob` equals the
  teacher-forced log-likelihood of `tokens + [EOS]`;
- a hypothesis has at most `max_lens[b]` tokens; at that point EOS is forced and its
  log-probability counted;
- `score = logprob / len ** length_penalty` where len counts the EOS (as fairseq does), so
  the empty hypothesis has length 1;
- the next token is picked with `topk` over (score so far + log-probs) in both searches, so
  ties and rounding break the same way.

With `spans` (protected-span placeholders, data/protected_spans.py), each hypothesis may emit
each placeholder its sentence has once, no other placeholder, and EOS only once it has
emitted them all (or at its length limit); a hypothesis with no more room before that limit
than it has placeholders missing may only emit those. So a placeholder cannot be dropped,
repeated or invented. The bans are masks (-inf), not renormalised, as for PAD and BOS.

Beam search stops a sentence once it holds K finished hypotheses (fairseq's early stopping;
hypotheses finished at the same step are ranked by log-probability, which there orders them
by score too). Only EOS candidates ranked within the top K of a step finish, as in fairseq.
Finished sentences leave the active batch, so late steps only pay for long sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt_bert.decode.length_penalty import normalised
from nmt_bert.model.decoder import DecoderState
from nmt_bert.model.seq2seq import Seq2Seq
from nmt_bert.model.special_tokens import BOS, EOS, PAD


@dataclass
class SpanSlots:
    """The placeholders a batch's sentences carry: `ids` (P,) the target ids of placeholders
    0..P-1, `required` (B, P) bool, True where sentence b has placeholder p."""

    ids: Tensor
    required: Tensor

    def banned(self, prefixes: Tensor, rows: Tensor, vocab: int,
               room: Tensor | None = None) -> Tensor:
        """prefixes: (R, t) tokens so far of rows whose sentences are `rows` (R,) ->
        (R, V) bool: placeholders used already or not the sentence's, and EOS while one of
        its placeholders is missing. `room` (R,): tokens each row may still emit before its
        length limit forces EOS; a row with no more room than it has placeholders missing
        may only emit those (a looping hypothesis still carries every span at its limit)."""
        required = self.required[rows]  # (R, P)
        used = (prefixes.unsqueeze(-1) == self.ids).any(dim=1)  # (R, P)
        missing = required & ~used  # (R, P)
        banned = torch.zeros(rows.numel(), vocab, dtype=torch.bool, device=prefixes.device)
        banned[:, self.ids] = ~missing
        banned[:, EOS] = missing.any(dim=1)
        if room is not None:
            count = missing.sum(dim=1)  # (R,)
            hurry = ((count > 0) & (count >= room)).nonzero().squeeze(1)  # (H,)
            if hurry.numel():
                banned[hurry] = True
                banned[hurry.unsqueeze(1), self.ids] = ~missing[hurry]  # (H, P)
        return banned


@dataclass
class Hypothesis:
    tokens: list[int]  # target ids, without BOS and EOS
    score: float  # logprob / (len(tokens) + 1) ** length_penalty
    logprob: float  # log-probability of tokens + [EOS]


def _start(model: Seq2Seq, states: Tensor, src_mask: Tensor, beams: int = 1) -> DecoderState:
    return model.start(states.to(model.adapter_dtype), src_mask, beams)


def _next_logprobs(model: Seq2Seq, last: Tensor, state: DecoderState, forced: Tensor,
                   banned: Tensor | None = None) -> Tensor:
    """last: (R, 1) newest tokens -> (R, V) float32 log-probs of the next token.

    Rows where `forced` (R,) is True may only emit EOS; `banned` (R, V) bool masks tokens
    (SpanSlots), except EOS on forced rows.
    """
    logits = model.decoder(last, state, incremental=True)[:, -1]  # (R, V)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    logprobs[:, PAD] = -math.inf
    logprobs[:, BOS] = -math.inf
    eos = logprobs[:, EOS].clone()
    if banned is not None:
        logprobs[banned] = -math.inf
        eos = torch.where(forced, eos, logprobs[:, EOS])
    logprobs[forced] = -math.inf
    logprobs[:, EOS] = eos
    return logprobs


@torch.inference_mode()
def greedy_search(model: Seq2Seq, states: Tensor, src_mask: Tensor, max_lens: Tensor,
                  length_penalty: float = 1.0, spans: SpanSlots | None = None) -> list[Hypothesis]:
    """states: (B, S, E) encoder output; src_mask: (B, S) bool; max_lens: (B,) long."""
    batch, device = states.size(0), states.device
    state = _start(model, states, src_mask)
    rows = torch.arange(batch, device=device)  # sentence of each active row (A,)
    last = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    logprob = torch.zeros(batch, device=device)
    out = torch.full((batch, int(max_lens.max()) + 1), EOS, dtype=torch.long, device=device)
    for step in range(out.size(1)):
        banned = None if spans is None else spans.banned(
            out[rows, :step], rows, model.decoder.embed.num_embeddings, max_lens[rows] - step)
        lprobs = _next_logprobs(model, last, state, step >= max_lens[rows], banned)  # (A, V)
        best, token = (logprob[rows].unsqueeze(1) + lprobs).topk(1, dim=-1)  # (A, 1) each
        logprob[rows] = best[:, 0]
        out[rows, step] = token[:, 0]
        going = token[:, 0] != EOS
        if not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            state, rows, token = state.select(keep), rows[keep], token[keep]
        last = token
    hyps = []
    for tokens, lp in zip(out.tolist(), logprob.tolist()):
        tokens = tokens[: tokens.index(EOS)]
        hyps.append(Hypothesis(tokens, normalised(lp, len(tokens) + 1, length_penalty), lp))
    return hyps


@torch.inference_mode()
def beam_search(model: Seq2Seq, states: Tensor, src_mask: Tensor, max_lens: Tensor,
                beam_size: int, length_penalty: float = 1.0,
                nbest: int = 1, spans: SpanSlots | None = None) -> list[list[Hypothesis]]:
    """Up to `nbest` hypotheses per sentence, best first. Arguments as in `greedy_search`."""
    batch, k, device = states.size(0), beam_size, states.device
    # Cross-attention K/V computed once per sentence and shared by its K beam rows (B*K,).
    state = _start(model, states, src_mask, beams=k)
    sents = torch.arange(batch, device=device)  # sentence of each active row (A,)
    scores = torch.zeros(batch, k, device=device)  # (A, K) log-probs of the live beams
    scores[:, 1:] = -math.inf  # all beams start equal: only beam 0 may expand at step 0
    prefixes = torch.empty(batch, k, 0, dtype=torch.long, device=device)  # (A, K, t)
    last = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for step in range(int(max_lens.max()) + 1):
        active = sents.numel()
        forced = (step >= max_lens[sents]).repeat_interleave(k)  # (A*K,)
        banned = None if spans is None else spans.banned(
            prefixes.reshape(active * k, step), sents.repeat_interleave(k),
            model.decoder.embed.num_embeddings, (max_lens[sents] - step).repeat_interleave(k))
        lprobs = _next_logprobs(model, last, state, forced, banned)  # (A*K, V)
        vocab = lprobs.size(-1)
        cand = (scores.view(-1, 1) + lprobs).view(active, k * vocab)  # (A, K*V)
        top, flat = cand.topk(2 * k, dim=-1)  # (A, 2K), best first
        beams, tokens = flat // vocab, flat % vocab  # (A, 2K) each
        _finish(finished, sents, prefixes, top, beams, tokens, k, length_penalty)
        # Live beams: the best K candidates that do not end in EOS (each beam row yields one
        # EOS candidate at most, so 2K candidates always hold K others).
        is_eos = tokens == EOS
        rank = torch.arange(2 * k, device=device) + is_eos * 2 * k
        pick = rank.topk(k, dim=-1, largest=False).indices  # (A, K), positions in the 2K
        scores = top.gather(1, pick)
        beams, tokens = beams.gather(1, pick), tokens.gather(1, pick)
        done = torch.tensor([len(finished[s]) >= k for s in sents.tolist()], device=device)
        done |= (step >= max_lens[sents]) | ~scores[:, 0].isfinite()
        if done.all():
            break
        keep = (~done).nonzero().squeeze(1)  # (A',)
        rows = (keep[:, None] * k + beams[keep]).view(-1)  # (A'*K,) rows of the old state
        state = state.select(rows, memory_index=keep)  # memory rows are sentences
        prefixes = prefixes.view(active * k, step)[rows]  # (A'*K, t)
        prefixes = torch.cat([prefixes, tokens[keep].view(-1, 1)], dim=1).view(-1, k, step + 1)
        scores, sents, last = scores[keep], sents[keep], tokens[keep].view(-1, 1)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _finish(finished: list[list[Hypothesis]], sents: Tensor, prefixes: Tensor, top: Tensor,
            beams: Tensor, tokens: Tensor, k: int, length_penalty: float) -> None:
    """Move finite EOS candidates ranked within the top K into their sentence's list."""
    ends = (tokens[:, :k] == EOS) & top[:, :k].isfinite()  # (A, K)
    if not ends.any():
        return
    sent_ids = sents.tolist()
    for row, rank in ends.nonzero().tolist():
        hyps = finished[sent_ids[row]]
        if len(hyps) >= k:
            continue
        seq = prefixes[row, beams[row, rank]].tolist()
        logprob = top[row, rank].item()
        hyps.append(Hypothesis(seq, normalised(logprob, len(seq) + 1, length_penalty), logprob))
