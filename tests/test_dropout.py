"""Dropout by site: model.dropout, model.attention_dropout and model.activation_dropout each
reach their own modules, and a site at 0 leaves the training forward pass unchanged (within
float rounding: training on a CPU takes model/attention.py's written-out attention)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers_model import build_tiny_model
from nmt_bert.config import load_config
from nmt_bert.errors import UserError
from nmt_bert.model.decoder import Decoder, DecoderLayer, MultiHeadAttention


def test_each_rate_reaches_its_sites(tiny_encoder_dir):
    model = build_tiny_model(tiny_encoder_dir, lively=False, dropout=0.1,
                             attention_dropout=0.3, activation_dropout=0.2)
    attention = [m for m in model.decoder.modules() if isinstance(m, MultiHeadAttention)]
    layers = [m for m in model.decoder.modules() if isinstance(m, DecoderLayer)]
    assert len(attention) == 2 * len(layers) == 4
    assert all(m.dropout == 0.3 for m in attention)
    ffn = {id(layer.ffn[2]) for layer in layers}
    assert all(layer.ffn[2].p == 0.2 for layer in layers)
    others = [m for m in [*model.decoder.modules(), *model.adapter.modules()]
              if isinstance(m, nn.Dropout) and id(m) not in ffn]
    assert others and all(m.p == 0.1 for m in others)


def test_unset_inner_rates_follow_model_dropout(tiny_encoder_dir):
    model = build_tiny_model(tiny_encoder_dir, lively=False, dropout=0.2, activation_dropout=0.0)
    assert all(m.dropout == 0.2 for m in model.decoder.modules()
               if isinstance(m, MultiHeadAttention))
    assert all(m.ffn[2].p == 0.0 for m in model.decoder.modules() if isinstance(m, DecoderLayer))


def test_rates_are_set_and_checked_like_any_key():
    config = load_config(None, ["model.attention_dropout=0.3"])
    assert (config.model.attention_dropout, config.model.activation_dropout) == (0.3, None)
    with pytest.raises(UserError, match="model.activation_dropout"):
        load_config(None, ["model.activation_dropout=1.5"])


def decoder_logits(decoder: Decoder, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(3, 5, 16, generator=g)  # (M, S, D)
    mask = torch.ones(3, 5, dtype=torch.bool)
    tokens = torch.randint(1, 40, (3, 6), generator=g)  # (B, T)
    torch.manual_seed(seed)
    return decoder(tokens, decoder.start(memory, mask))


@pytest.mark.parametrize("site", ["dropout", "attention_dropout", "activation_dropout"])
def test_only_the_sites_with_a_rate_drop(site):
    rates = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
    torch.manual_seed(0)
    silent = Decoder(40, 16, 2, 2, 32, max_positions=16, **rates)
    torch.manual_seed(0)
    dropping = Decoder(40, 16, 2, 2, 32, max_positions=16, **{**rates, site: 0.5})
    assert torch.equal(silent.state_dict()["layers.0.ffn.0.weight"],
                       dropping.state_dict()["layers.0.ffn.0.weight"])
    reference = decoder_logits(silent.eval(), 1)
    # No site: no change (in training on a CPU the attention is model/attention.py's
    # written-out product, SDPA's within float rounding).
    torch.testing.assert_close(decoder_logits(silent.train(), 1), reference, rtol=1e-5, atol=1e-6)
    trained = decoder_logits(dropping.train(), 1)
    assert not torch.allclose(trained, reference, atol=1e-4)
    assert torch.equal(decoder_logits(dropping.train(), 1), trained)  # the seed decides
    assert torch.equal(decoder_logits(dropping.eval(), 1), reference)  # eval: no dropout
