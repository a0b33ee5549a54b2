"""Adapters between the encoder and the decoder: encoder states (B, S, E) -> memory (B, S, D).

A new kind is one subclass here, named in ADAPTERS and in `ModelConfig.adapter`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt_bert.model.dropout import Dropout


class Adapter(nn.Module):
    """Maps encoder states (B, S, E) to decoder memory (B, S, D).

    A kind is a subclass named in ADAPTERS (and in ModelConfig.adapter): a new kind is one
    class here and one name there.
    """

    def __init__(self, enc_dim: int, d_model: int, hidden: int, dropout: float):
        super().__init__()

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype memory is computed in; None for a parameter-free adapter."""
        return next((p.dtype for p in self.parameters()), None)


class MlpAdapter(Adapter):
    """x = proj(h); LayerNorm(x + MLP(x)); proj only where E != D."""

    def __init__(self, enc_dim: int, d_model: int, hidden: int, dropout: float):
        super().__init__(enc_dim, d_model, hidden, dropout)
        self.proj = nn.Linear(enc_dim, d_model) if enc_dim != d_model else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(), Dropout(dropout), nn.Linear(hidden, d_model)
        )
        self.norm = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)

    def forward(self, states: Tensor) -> Tensor:
        x = self.proj(states)
        return self.norm(x + self.drop(self.mlp(x)))


class LinearAdapter(Adapter):
    """LayerNorm(Linear(h))."""

    def __init__(self, enc_dim: int, d_model: int, hidden: int, dropout: float):
        super().__init__(enc_dim, d_model, hidden, dropout)
        self.proj = nn.Linear(enc_dim, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, states: Tensor) -> Tensor:
        return self.norm(self.proj(states))


class IdentityAdapter(Adapter):
    """The encoder states themselves; only valid when E == D."""

    def __init__(self, enc_dim: int, d_model: int, hidden: int, dropout: float):
        super().__init__(enc_dim, d_model, hidden, dropout)
        if enc_dim != d_model:
            raise ValueError(
                f"model.adapter=none needs encoder width ({enc_dim}) == model.d_model ({d_model})"
            )

    def forward(self, states: Tensor) -> Tensor:
        return states


class AffineAdapter(Adapter):
    """Linear(h) and nothing after it: memory = A h + a.

    The one kind with a norm-free, nonlinearity-free path to the decoder, so an export can
    fold it into every cross-attention K/V projection exactly (nmt_bert.export).
    """

    def __init__(self, enc_dim: int, d_model: int, hidden: int, dropout: float):
        super().__init__(enc_dim, d_model, hidden, dropout)
        self.proj = nn.Linear(enc_dim, d_model)

    def forward(self, states: Tensor) -> Tensor:
        return self.proj(states)


ADAPTERS: dict[str, type[Adapter]] = {"mlp": MlpAdapter, "linear": LinearAdapter,
                                      "none": IdentityAdapter, "affine": AffineAdapter}
