"""Adapter kinds: the existing kinds keep their parameters; affine is one Linear, nothing after."""

from __future__ import annotations

import pytest
import torch

from nmt_bert.model.adapters import ADAPTERS, AffineAdapter

# The parameter names checkpoints of each kind hold: a renamed parameter would break every
# saved checkpoint, and a changed init order would move every trained recipe's BLEU.
NAMES = {
    "mlp": ["mlp.0.bias", "mlp.0.weight", "mlp.3.bias", "mlp.3.weight", "norm.bias",
            "norm.weight", "proj.bias", "proj.weight"],
    "linear": ["norm.bias", "norm.weight", "proj.bias", "proj.weight"],
    "none": [],
    "affine": ["proj.bias", "proj.weight"],
}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_adapter_parameter_names(kind):
    adapter = ADAPTERS[kind](48, 48 if kind == "none" else 32, 64, 0.1)
    assert sorted(adapter.state_dict()) == NAMES[kind]


GOLDEN_MLP_SUM = 24.41189506095543  # sum of an mlp adapter's weights at seed 0, measured
# with the code before the affine kind existed


def test_mlp_adapter_init_is_unchanged_by_the_new_kind():
    torch.manual_seed(0)
    adapter = ADAPTERS["mlp"](48, 32, 64, 0.0)
    total = sum(float(p.detach().double().sum()) for p in adapter.parameters())
    assert total == pytest.approx(GOLDEN_MLP_SUM, abs=1e-9)


def test_affine_adapter_is_one_linear_map():
    torch.manual_seed(1)
    adapter = AffineAdapter(48, 32, 64, 0.5).train()  # dropout would show in train mode
    h = torch.randn(2, 5, 48)
    expected = h @ adapter.proj.weight.T + adapter.proj.bias
    assert torch.allclose(adapter(h), expected, atol=1e-6)
    # affine means affine: f(x + y) - f(y) = f(x) - f(0)
    zero = torch.zeros_like(h)
    assert torch.allclose(adapter(h + h) - adapter(h), adapter(h) - adapter(zero), atol=1e-5)
