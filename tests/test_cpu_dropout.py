"""model/dropout.py: CPU masks from 64-bit words drop at the asked rate, keep the expectation,
follow torch's seed, and reach every site (our modules, attention weights, the encoder)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_model import build_tiny_model
from nmt_bert.model import dropout as cpu_dropout
from nmt_bert.model.encoders import load_encoder


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_masks_drop_at_the_rate_and_keep_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = cpu_dropout.dropout(x, p, True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.003  # 1M draws: the standard error is below 0.0005
    kept = y[y != 0]
    expected_scale = 65536 / (65536 - round(p * 65536))
    assert torch.allclose(kept, torch.full_like(kept, expected_scale))
    assert abs(y.mean().item() - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the mask times the scale


def test_every_lane_of_a_word_is_uniform():
    torch.manual_seed(0)
    keep, _ = cpu_dropout.keep_mask(torch.Size([400_000]), 0.5, torch.device("cpu"))
    by_lane = keep.view(-1, cpu_dropout.LANES).float().mean(0)  # (4,): each 16-bit lane
    assert torch.all((by_lane - 0.5).abs() < 0.01), by_lane


def test_masks_follow_the_seed_and_switch_off():
    x = torch.randn(64, 64)
    torch.manual_seed(3)
    first = cpu_dropout.dropout(x, 0.2, True)
    torch.manual_seed(3)
    assert torch.equal(cpu_dropout.dropout(x, 0.2, True), first)
    assert not torch.equal(cpu_dropout.dropout(x, 0.2, True), first)
    assert cpu_dropout.dropout(x, 0.2, False) is x
    assert cpu_dropout.dropout(x, 0.0, True) is x
    assert torch.equal(cpu_dropout.dropout(x, 1.0, True), torch.zeros_like(x))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_without_dropout_is_sdpa(causal, mask_kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))  # (B, H, T, Dh)
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[0, ..., 4:] = False
    mask = {"none": None, "bool": keep,
            "additive": torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))}[mask_kind]
    ours = cpu_dropout.attention(q, k, v, mask, causal, 0.0)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_attention_drops_weights_only_in_training_form():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g) for _ in range(3))
    plain = F.scaled_dot_product_attention(q, k, v)
    torch.manual_seed(0)
    dropped = cpu_dropout.attend(q, k, v, None, False, 0.5)
    assert not torch.allclose(dropped, plain, atol=1e-4)
    assert torch.equal(cpu_dropout.attend(q, k, v, None, False, 0.0), plain)


def test_the_encoder_drops_through_our_masks(tiny_encoder_dir):
    encoder = load_encoder(str(tiny_encoder_dir))[0].eval()
    ids = torch.randint(5, 90, (3, 7))
    am = torch.ones(3, 7, dtype=torch.long)
    am[0, 4:] = 0
    before = encoder(input_ids=ids, attention_mask=am).last_hidden_state
    cpu_dropout.use_on_encoder(encoder)
    assert not any(type(m) is nn.Dropout for m in encoder.modules())
    assert encoder.config._attn_implementation == cpu_dropout.ENCODER_ATTENTION
    after = encoder(input_ids=ids, attention_mask=am).last_hidden_state
    assert torch.allclose(after, before, atol=1e-5)  # eval: the same encoder

    calls = []
    real = cpu_dropout.attention

    def counting(q, k, v, mask, causal, p, scale=None):
        calls.append(p)
        return real(q, k, v, mask, causal, p, scale)

    cpu_dropout.attention, trained = counting, encoder.train()
    try:
        torch.manual_seed(1)
        first = trained(input_ids=ids, attention_mask=am).last_hidden_state
    finally:
        cpu_dropout.attention = real
    assert calls and all(p == trained.config.attention_probs_dropout_prob for p in calls)
    torch.manual_seed(1)
    assert torch.equal(trained(input_ids=ids, attention_mask=am).last_hidden_state, first)
    assert not torch.allclose(first, before, atol=1e-4)


def test_the_model_uses_our_dropout_everywhere(tiny_encoder_dir):
    model = build_tiny_model(tiny_encoder_dir, lively=False, dropout=0.1)
    plain = [name for name, m in model.named_modules() if type(m) is nn.Dropout]
    assert plain == []
    assert any(isinstance(m, cpu_dropout.Dropout) for m in model.encoder.modules())
