"""Search invariants on tiny random models: caching, beam 1 == greedy, exactness, n-best."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers_model import build_tiny_model, tiny_source_lines

from nmt_bert.train.batches import shift_right
from nmt_bert.model.special_tokens import BOS, EOS, PAD
from nmt_bert.decode.search import beam_search, greedy_search


@pytest.fixture(scope="module")
def model(tiny_encoder_dir):
    return build_tiny_model(tiny_encoder_dir, tgt_vocab_size=50, seed=0)


@pytest.fixture(scope="module")
def sources(tiny_encoder_dir):
    """Eight sentences of 2-8 words, padded: ids (8, S), mask (8, S)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    enc = tokenizer(tiny_source_lines(8, seed=3), padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"].bool()


def encode(model, ids, mask):
    with torch.inference_mode():
        return model.encode_states(ids, mask)


def teacher_forced_logprobs(model, states, mask, sequences: list[list[int]]) -> list[float]:
    """log P(seq + EOS | source) for each sequence, from one full (non-incremental) forward.

    states, mask: one sentence, (1, S, E) and (1, S).
    """
    width = max(len(seq) for seq in sequences) + 1
    labels = torch.tensor([seq + [EOS] + [PAD] * (width - len(seq) - 1) for seq in sequences])
    n = len(sequences)
    with torch.inference_mode():
        logits = model(None, mask.expand(n, -1), shift_right(labels),
                       states=states.expand(n, -1, -1))  # (N, T, V)
    picked = F.log_softmax(logits.float(), dim=-1).gather(2, labels[..., None])[..., 0]
    return picked.masked_fill(labels == PAD, 0.0).sum(dim=1).tolist()


def reference_greedy(model, states, mask, max_len: int) -> tuple[list[int], float]:
    """Greedy decoding of one sentence that recomputes the whole prefix at every step."""
    prefix, logprob = [BOS], 0.0
    with torch.inference_mode():
        start = model.start(states, mask)  # a full forward reads it without changing it
        for step in range(max_len + 1):
            logits = model.decoder(torch.tensor([prefix]), start)[0, -1]
            lprobs = F.log_softmax(logits.float(), dim=-1)
            lprobs[[PAD, BOS]] = -float("inf")
            if step == max_len:
                lprobs[torch.arange(lprobs.numel()) != EOS] = -float("inf")
            token = int(lprobs.argmax())
            logprob += lprobs[token].item()
            if token == EOS:
                return prefix[1:], logprob
            prefix.append(token)
    raise AssertionError("EOS was not forced at max_len")


def test_incremental_steps_match_full_forward_also_after_select(model):
    torch.manual_seed(0)
    states, mask = torch.randn(4, 7, 32), torch.ones(4, 7, dtype=torch.bool)
    mask[2:, 5:] = False
    target = torch.randint(4, 50, (4, 9))
    target[:, 0] = BOS
    with torch.inference_mode():
        full = model.decoder(target, model.start(states, mask))  # (4, 9, V)
        state = model.start(states, mask)
        rows = torch.arange(4)
        for t in range(9):
            if t == 3:  # beam-style reordering with a duplicated row
                rows = torch.tensor([2, 0, 0, 3])
                state = state.select(rows)
            if t == 6:  # a finished row leaves the batch
                rows, state = rows[[0, 2, 3]], state.select(torch.tensor([0, 2, 3]))
            step = model.decoder(target[rows, t: t + 1], state, incremental=True)[:, 0]
            torch.testing.assert_close(step, full[rows, t], atol=1e-4, rtol=1e-4)


def test_beams_sharing_one_memory_row_match_a_repeated_memory(model):
    """K beam rows reading one memory row give what K copies of that memory give."""
    torch.manual_seed(1)
    k, states, mask = 3, torch.randn(2, 6, 32), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    target = torch.randint(4, 50, (2 * k, 5))  # (M*K, T), row m*K + j is beam j of sentence m
    target[:, 0] = BOS
    with torch.inference_mode():
        shared = model.start(states, mask, beams=k)
        copied = model.start(states.repeat_interleave(k, 0), mask.repeat_interleave(k, 0))
        rows = torch.arange(2 * k)
        for t in range(5):
            if t == 2:  # reorder beams within each sentence; the memory stays as it is
                rows = torch.tensor([2, 2, 0, 4, 3, 3])
                shared = shared.select(rows, memory_index=torch.arange(2))
                copied = copied.select(rows)
            if t == 4:  # sentence 0 finishes: its beams and its memory row leave
                rows, keep = rows[k:], torch.arange(k, 2 * k)
                shared = shared.select(keep, memory_index=torch.tensor([1]))
                copied = copied.select(keep)
            a = model.decoder(target[rows, t: t + 1], shared, incremental=True)
            b = model.decoder(target[rows, t: t + 1], copied, incremental=True)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert shared.layers[0].memory_k.size(0) == 1 and copied.layers[0].memory_k.size(0) == k
    with pytest.raises(ValueError, match="memory rows"):
        shared.select(torch.arange(k))


def test_greedy_matches_a_decoder_that_recomputes_every_prefix(model, sources):
    ids, mask = sources
    states = encode(model, ids, mask)
    max_lens = torch.tensor([12, 3, 12, 0, 8, 12, 1, 12])
    hyps = greedy_search(model, states, mask, max_lens)
    for b, hyp in enumerate(hyps):
        tokens, logprob = reference_greedy(model, states[b: b + 1], mask[b: b + 1], int(max_lens[b]))
        assert hyp.tokens == tokens
        assert hyp.logprob == pytest.approx(logprob, abs=1e-4)
    assert hyps[3].tokens == [] and len(hyps[6].tokens) <= 1
    assert max(len(h.tokens) for h in hyps) > 3


@pytest.mark.parametrize("rows, max_len", [(range(8), 20), (range(3), 6), ([5], 25), (range(8), 2)])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_beam_size_one_is_greedy(model, sources, rows, max_len, length_penalty):
    ids, mask = (t[list(rows)] for t in sources)
    states = encode(model, ids, mask)
    max_lens = torch.full((ids.size(0),), max_len)
    max_lens[0] = max(1, max_len // 2)
    greedy = greedy_search(model, states, mask, max_lens, length_penalty)
    beam = beam_search(model, states, mask, max_lens, 1, length_penalty, nbest=1)
    assert [[h] for h in greedy] == beam  # tokens, score and log-probability, exactly
    if max_len > 3:
        assert max(len(h.tokens) for h in greedy) > 3
        assert len({tuple(h.tokens) for h in greedy}) == len(greedy) or len(greedy) < 3


def test_scores_are_teacher_forced_log_likelihoods(model, sources):
    ids, mask = sources
    states = encode(model, ids, mask)
    max_lens = torch.tensor([15, 4, 15, 15, 8, 15, 2, 15])
    nbests = beam_search(model, states, mask, max_lens, beam_size=4, length_penalty=0.6, nbest=4)
    assert any(len(h.tokens) > 3 for hyps in nbests for h in hyps)
    for b, hyps in enumerate(nbests):
        assert len(hyps) == 4
        expected = teacher_forced_logprobs(model, states[b: b + 1], mask[b: b + 1],
                                           [hyp.tokens for hyp in hyps])
        for hyp, logprob in zip(hyps, expected):
            assert len(hyp.tokens) <= max_lens[b]
            assert not {PAD, BOS, EOS} & set(hyp.tokens)
            assert hyp.logprob == pytest.approx(logprob, abs=1e-3)
            assert hyp.score == pytest.approx(hyp.logprob / (len(hyp.tokens) + 1) ** 0.6)


def test_nbest_is_sorted_distinct_and_led_by_the_best(model, sources):
    ids, mask = sources
    states = encode(model, ids, mask)
    max_lens = torch.full((8,), 15)
    five = beam_search(model, states, mask, max_lens, beam_size=5, nbest=5)
    one = beam_search(model, states, mask, max_lens, beam_size=5, nbest=1)
    for hyps, best in zip(five, one):
        assert len(hyps) == 5
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5
        assert hyps[0] == best[0]


def test_beam_wide_enough_to_be_exhaustive_finds_every_hypothesis(tiny_encoder_dir, sources):
    """With vocab {UNK, 4, 5} + EOS and at most 3 tokens there are 1+3+9+27 = 40 hypotheses;
    beam 40 never prunes one, so its 40-best list must equal brute-force enumeration (and
    its best score can be no worse than greedy's)."""
    model = build_tiny_model(tiny_encoder_dir, tgt_vocab_size=6, seed=1)
    ids, mask = (t[:3] for t in sources)
    states = encode(model, ids, mask)
    max_lens = torch.tensor([3, 2, 3])
    for b in range(3):
        sequences = [list(seq) for n in range(int(max_lens[b]) + 1)
                     for seq in itertools.product([1, 4, 5], repeat=n)]
        logprobs = teacher_forced_logprobs(model, states[b: b + 1], mask[b: b + 1], sequences)
        for length_penalty in (0.0, 1.0):
            one = (states[b: b + 1], mask[b: b + 1], max_lens[b: b + 1])
            beam = beam_search(model, *one, 40, length_penalty, nbest=40)[0]
            greedy = greedy_search(model, *one, length_penalty)[0]
            scored = sorted(((lp / (len(seq) + 1) ** length_penalty, seq)
                             for lp, seq in zip(logprobs, sequences)), key=lambda item: -item[0])
            assert [h.tokens for h in beam] == [seq for _, seq in scored]
            assert [h.score for h in beam] == pytest.approx([s for s, _ in scored], abs=1e-4)
            assert beam[0].score >= greedy.score - 1e-6
            as_found = [h for h in beam if h.tokens == greedy.tokens]
            assert as_found[0].logprob == pytest.approx(greedy.logprob, abs=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_finished_sentences_leave_the_batch(model, sources, monkeypatch, beam_size):
    ids, mask = sources
    states = encode(model, ids, mask)
    lengths = [len(h.tokens) for h in greedy_search(model, states, mask, torch.full((8,), 20))]
    long = max(range(8), key=lengths.__getitem__)  # a sentence that decodes for many steps
    pair = torch.tensor([0, long]) if long != 0 else torch.tensor([1, 0])
    rows_per_step = []
    forward = model.decoder.forward

    def counting_forward(tokens, state, incremental=False):
        rows_per_step.append(tokens.size(0))
        return forward(tokens, state, incremental)

    monkeypatch.setattr(model.decoder, "forward", counting_forward)
    search_states, search_mask = states[pair], mask[pair]
    max_lens = torch.tensor([1, 20])  # the first sentence must stop after step 1
    if beam_size == 1:
        greedy_search(model, search_states, search_mask, max_lens)
    else:
        beam_search(model, search_states, search_mask, max_lens, beam_size)
    assert rows_per_step[0] == 2 * beam_size
    assert len(rows_per_step) > 3, "the long sentence should still be decoding"
    assert all(rows <= beam_size for rows in rows_per_step[2:])


def test_span_slots_ban_used_foreign_placeholders_and_an_early_end():
    from nmt_bert.decode.search import SpanSlots

    slots = SpanSlots(torch.tensor([7, 8, 9]), torch.tensor([[True, True, False],
                                                             [False, False, False]]))
    prefixes = torch.tensor([[5, 7], [5, 6]])  # row 0 (sentence 0) has used placeholder 0
    banned = slots.banned(prefixes, torch.tensor([0, 1]), vocab=12)
    assert banned[0].nonzero().flatten().tolist() == [EOS, 7, 9]  # 8 still missing: no EOS
    assert banned[1].nonzero().flatten().tolist() == [7, 8, 9]  # none of its own: EOS free


def test_span_slots_leave_a_row_near_its_limit_only_its_missing_placeholders():
    from nmt_bert.decode.search import SpanSlots

    slots = SpanSlots(torch.tensor([7, 8, 9]), torch.tensor([[True, True, True]]))
    prefixes = torch.tensor([[5, 7], [5, 7], [5, 6]])  # rows 0-1 used placeholder 0, row 2 none
    banned = slots.banned(prefixes, torch.tensor([0, 0, 0]), vocab=12,
                          room=torch.tensor([2, 3, 2]))
    assert (~banned[0]).nonzero().flatten().tolist() == [8, 9]  # room 2 for 2 missing: only them
    assert (~banned[1]).nonzero().flatten().tolist() == [t for t in range(12) if t not in (EOS, 7)]
    assert (~banned[2]).nonzero().flatten().tolist() == [7, 8, 9]  # 3 missing, room 2: as many as fit


@pytest.mark.parametrize("beam", [1, 3])
def test_constrained_search_keeps_every_placeholder_at_a_binding_limit(model, sources, beam):
    """A random model never learned to emit placeholders: the constraint alone must place all
    of each sentence's, even where the length limit leaves room for little else."""
    from nmt_bert.decode.search import SpanSlots

    ids, mask = sources
    states = encode(model, ids, mask)
    placeholders = torch.tensor([40, 41, 42])
    required = torch.tensor([[p < 1 + b % 3 for p in range(3)] for b in range(len(ids))])
    max_lens = torch.tensor([3 + b % 2 for b in range(len(ids))])  # 3-4 tokens for 1-3 spans
    slots = SpanSlots(placeholders, required)
    if beam == 1:
        outputs = [[h] for h in greedy_search(model, states, mask, max_lens, spans=slots)]
    else:
        outputs = beam_search(model, states, mask, max_lens, beam, nbest=beam, spans=slots)
    for b, hyps in enumerate(outputs):
        assert hyps
        want = sorted(placeholders[required[b]].tolist())
        for h in hyps:
            assert len(h.tokens) <= int(max_lens[b])
            assert sorted(t for t in h.tokens if t in placeholders.tolist()) == want, (b, h.tokens)
