"""model/dropout.py: CPU masks from 64-bit words drop at the asked rate, keep the expectation,
follow torch's seed, and reach every site (our modules, the encoder's; the attention weights'
are in test_attention.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers_model import build_tiny_model
from nmt_bert.model import dropout as cpu_dropout


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


def test_the_model_uses_our_dropout_everywhere(tiny_encoder_dir):
    model = build_tiny_model(tiny_encoder_dir, lively=False, dropout=0.1)
    plain = [name for name, m in model.named_modules() if type(m) is nn.Dropout]
    assert plain == []
    assert any(isinstance(m, cpu_dropout.Dropout) for m in model.encoder.modules())
