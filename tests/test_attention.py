"""model/attention.py: the explicit CPU product is SDPA's attention (float32 exactly, bf16
within its rounding), taken only in training on a CPU, by our decoder and by the encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_model import build_tiny_model
from nmt_bert.model import attention as attn
from nmt_bert.model.dropout import swap_encoder_dropout
from nmt_bert.model.encoders import load_encoder


def qkv(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def spy_on_attention(monkeypatch, argument: int) -> list:
    """Record `argument` (by position) of each call to attention.attention, which still runs."""
    calls, real = [], attn.attention
    monkeypatch.setattr(attn, "attention", lambda *a: calls.append(a[argument]) or real(*a))
    return calls


def padding_mask(kind: str):
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[0, ..., 4:] = False
    return {"none": None, "bool": keep,
            "additive": torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))}[kind]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_without_dropout_is_sdpa(causal, mask_kind):
    q, k, v = qkv(2, 4, 6, 8)  # (B, H, T, Dh)
    mask = padding_mask(mask_kind)
    ours = attn.attention(q, k, v, mask, causal, 0.0)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_products_stay_within_bf16_rounding_of_float32(causal):
    """Forward and gradients in bf16 against float32 SDPA on the same values."""
    q, k, v = qkv(2, 4, 6, 8, seed=1, dtype=torch.bfloat16)
    mask = padding_mask("bool")
    ours = attn.attention(q, k, v, mask, causal, 0.0)
    ours.float().square().sum().backward()
    grads = [t.grad.float() for t in (q, k, v)]
    ref = [t.detach().float().requires_grad_() for t in (q, k, v)]
    theirs = F.scaled_dot_product_attention(*ref, attn_mask=mask, is_causal=causal)
    theirs.square().sum().backward()
    assert ours.dtype == torch.bfloat16
    assert torch.allclose(ours.float(), theirs, atol=3e-2, rtol=3e-2)
    for mine, exact in zip(grads, (t.grad for t in ref)):
        assert torch.allclose(mine, exact, atol=1e-1, rtol=5e-2)
        assert (mine - exact).abs().mean() < 2e-2 * exact.abs().mean()


def test_attend_takes_the_explicit_product_only_in_training(monkeypatch):
    q, k, v = qkv(1, 2, 5, 4)
    calls = spy_on_attention(monkeypatch, 5)  # p
    plain = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(attn.attend(q, k, v, None, False, 0.5, training=False), plain)
    assert calls == []  # evaluation and decoding: SDPA, no dropout
    assert torch.allclose(attn.attend(q, k, v, None, False, 0.0, training=True), plain,
                          atol=1e-6)
    torch.manual_seed(0)
    dropped = attn.attend(q, k, v, None, False, 0.5, training=True)
    assert calls == [0.0, 0.5]
    assert not torch.allclose(dropped, plain, atol=1e-4)
    monkeypatch.setattr(attn, "CPU_EXPLICIT", False)
    assert torch.equal(attn.attend(q, k, v, None, False, 0.0, training=True), plain)
    assert calls == [0.0, 0.5]


def test_the_decoder_trains_through_the_explicit_product(tiny_encoder_dir, monkeypatch):
    """Without dropout a training forward is the eval forward, through the other kernel."""
    model = build_tiny_model(tiny_encoder_dir, dropout=0.0)
    src = torch.randint(5, 90, (3, 7))
    src_mask = torch.ones(3, 7, dtype=torch.bool)
    src_mask[0, 4:] = False
    tgt = torch.randint(3, 50, (3, 6))
    calls = spy_on_attention(monkeypatch, 4)  # causal
    with torch.no_grad():
        states = model.encode_states(src, src_mask)  # (B, S, E), the encoder apart
        evaluated = model(src, src_mask, tgt, states)
        assert calls == []
        trained = model.train()(src, src_mask, tgt, states)
    layers = len(model.decoder.layers)
    assert calls == [True, False] * layers  # each layer: causal self-, then cross-attention
    assert torch.allclose(trained, evaluated, atol=1e-5)


def test_the_encoder_attends_and_drops_through_ours(tiny_encoder_dir, monkeypatch):
    encoder = load_encoder(str(tiny_encoder_dir))[0].eval()
    ids = torch.randint(5, 90, (3, 7))
    am = torch.ones(3, 7, dtype=torch.long)
    am[0, 4:] = 0
    before = encoder(input_ids=ids, attention_mask=am).last_hidden_state
    swap_encoder_dropout(encoder)
    attn.set_encoder_attention(encoder)
    assert not any(type(m) is nn.Dropout for m in encoder.modules())
    assert encoder.config._attn_implementation == attn.ENCODER_ATTENTION
    calls = spy_on_attention(monkeypatch, 5)  # p
    after = encoder(input_ids=ids, attention_mask=am).last_hidden_state
    assert calls == []
    assert torch.allclose(after, before, atol=1e-5)  # eval: the same encoder, SDPA

    trained = encoder.train()
    torch.manual_seed(1)
    first = trained(input_ids=ids, attention_mask=am).last_hidden_state
    assert calls and all(p == trained.config.attention_probs_dropout_prob for p in calls)
    torch.manual_seed(1)
    assert torch.equal(trained(input_ids=ids, attention_mask=am).last_hidden_state, first)
    assert not torch.allclose(first, before, atol=1e-4)
