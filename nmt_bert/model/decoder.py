"""A pre-LayerNorm Transformer decoder with incremental decoding.

Shapes: B batch rows, M memory rows, K rows per memory row (beams), T target length,
S source length, D model width, H heads, Dh = D / H.
During search, each layer keeps its self-attention keys/values (growing by one position a
step) and the cross-attention keys/values of the memory, computed once per sentence and
never copied per beam: the K beams of a sentence read its one memory row as K queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nmt_bert.devices import attention_kernels
from nmt_bert.model.attention import attend
from nmt_bert.model.dropout import Dropout


@dataclass
class LayerState:
    """What one layer keeps between decoding steps."""

    memory_k: Tensor  # (M, H, S, Dh)
    memory_v: Tensor  # (M, H, S, Dh)
    self_k: Tensor | None = None  # (B, H, t, Dh), t = positions decoded so far
    self_v: Tensor | None = None


@dataclass
class DecoderState:
    layers: list[LayerState]
    memory_mask: Tensor  # (M, 1, 1, S) bool, True where the source token is real
    beams: int = 1  # K: batch row r reads memory row r // K, so B = M * K
    step: int = 0  # positions already decoded

    def select(self, index: Tensor, memory_index: Tensor | None = None) -> "DecoderState":
        """Keep the batch rows in `index` (B',): beam reordering and dropping finished rows.

        `memory_index` (M',) keeps memory rows; it defaults to `index` when K is 1, and must
        be given when K > 1, where B' = M' * K. The identity copies nothing.
        """
        if memory_index is None:
            if self.beams != 1:
                raise ValueError("select() with beams > 1 needs the memory rows to keep")
            memory_index = index
        same = memory_index.numel() == self.memory_mask.size(0) and bool(
            (memory_index == torch.arange(memory_index.numel(), device=memory_index.device)).all())

        def pick(t: Tensor | None, rows: Tensor, keep: bool = False) -> Tensor | None:
            return t if t is None or keep else t.index_select(0, rows)

        layers = [
            LayerState(pick(s.memory_k, memory_index, same), pick(s.memory_v, memory_index, same),
                       pick(s.self_k, index), pick(s.self_v, index))
            for s in self.layers
        ]
        return DecoderState(layers, pick(self.memory_mask, memory_index, same), self.beams,
                            self.step)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, t, Dh)

    def project(self, x: Tensor, *names: str) -> tuple[Tensor, ...]:
        """x (B, t, D) through the named projections ("q", "k", "v"): n x (B, t, D).

        One matmul each: joined into one (D, n * D) product they made a stage-1 step on CPU
        no faster (bench/step_parts.py --parts projections), so they stay apart.
        """
        return tuple(getattr(self, name)(x) for name in names)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
               group: int = 1) -> Tensor:
        """q: (B, t, D); k, v: (B / group, H, S, Dh) -> (B, t, D).

        With group K, the K consecutive query rows of one key row attend to it together:
        (M * K, t, D) queries become (M, H, K * t, Dh), so the keys are never repeated.
        """
        b, t, d = q.shape
        q = q.reshape(b // group, group * t, self.heads, d // self.heads).transpose(1, 2)
        y = attend(q, k, v, mask, causal, self.dropout, self.training)  # (B/group, H, group*t, Dh)
        return self.out(y.transpose(1, 2).reshape(b, t, d))  # (B, t, D)


class DecoderLayer(nn.Module):
    """`dropout` on each sublayer's output; `attention_dropout` on the attention weights and
    `activation_dropout` on the FFN's hidden units, each `dropout` when None (separate rates,
    as in fairseq and Marian: each site has its own price in a step)."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float,
                 attention_dropout: float | None = None, activation_dropout: float | None = None):
        super().__init__()
        attention = dropout if attention_dropout is None else attention_dropout
        activation = dropout if activation_dropout is None else activation_dropout
        self.self_attn = MultiHeadAttention(d_model, heads, attention)
        self.cross_attn = MultiHeadAttention(d_model, heads, attention)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.GELU(), Dropout(activation),
            nn.Linear(ffn_dim, d_model)
        )
        self.norm_self = nn.LayerNorm(d_model)
        self.norm_cross = nn.LayerNorm(d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.cross_attn.project(memory, "k", "v")
        return self.cross_attn.split(k), self.cross_attn.split(v)  # 2 x (B, H, S, Dh)

    def forward(self, x: Tensor, state: LayerState, memory_mask: Tensor, incremental: bool,
                beams: int = 1) -> Tensor:
        """x: (B, t, D), the whole prefix (training) or just the newest position (incremental)."""
        q, k, v = self_attention(self.self_attn, self.norm_self(x), state, incremental)
        # One new query attends to every cached key, so causality needs no mask then.
        x = x + self.drop(self.self_attn.attend(q, k, v, None, causal=not incremental))
        h = self.norm_cross(x)
        x = x + self.drop(self.cross_attn.attend(
            self.cross_attn.q(h), state.memory_k, state.memory_v, memory_mask, causal=False,
            group=beams))
        return x + self.drop(self.ffn(self.norm_ffn(x)))


class Decoder(nn.Module):
    """Target embeddings tied with the output projection, learned positions, N layers."""

    def __init__(self, vocab_size: int, d_model: int, layers: int, heads: int, ffn_dim: int,
                 dropout: float, max_positions: int, pad_id: int = 0,
                 attention_dropout: float | None = None, activation_dropout: float | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.positions = nn.Embedding(max_positions, d_model)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, heads, ffn_dim, dropout, attention_dropout, activation_dropout)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)
        self.scale = math.sqrt(d_model)
        self.max_positions = max_positions
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        nn.init.zeros_(self.embed.weight[pad_id])
        nn.init.normal_(self.positions.weight, std=0.02)

    def start(self, memory: Tensor, source_mask: Tensor, beams: int = 1) -> DecoderState:
        """memory: (M, S, D); source_mask: (M, S) bool; `beams` decoder rows per memory row.

        Cross-attention K/V are computed once here.
        """
        return start_state(self.layers, memory, source_mask, beams)

    def forward(self, tokens: Tensor, state: DecoderState, incremental: bool = False) -> Tensor:
        """tokens: (B, T) whole prefixes, or (B, 1) the newest token when incremental.

        Returns logits (B, T, V). Incremental calls extend `state`'s self-attention caches.
        """
        pos = step_positions(tokens, state, incremental, self.max_positions)
        t = tokens.size(1)
        x = self.drop(self.embed(tokens) * self.scale + self.positions(pos))  # (B, T, D)
        with attention_kernels(x.device):
            for layer, layer_state in zip(self.layers, state.layers):
                x = layer(x, layer_state, state.memory_mask, incremental, state.beams)
        if incremental:
            state.step += t
        return self.norm(x) @ self.embed.weight.t()  # (B, T, V)


def self_attention(attn: MultiHeadAttention, h: Tensor, state: LayerState,
                   incremental: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Queries (B, t, D), keys and values (B, H, t', Dh) of `h` (B, t, D); incrementally the
    keys and values extend the layer's cache (t' = positions decoded so far)."""
    q, k, v = attn.project(h, "q", "k", "v")
    k, v = attn.split(k), attn.split(v)  # (B, H, t, Dh)
    if incremental:
        if state.self_k is not None:
            k = torch.cat([state.self_k, k], dim=2)
            v = torch.cat([state.self_v, v], dim=2)
        state.self_k, state.self_v = k, v
    return q, k, v


def start_state(layers: nn.ModuleList, memory: Tensor, source_mask: Tensor,
                beams: int = 1) -> DecoderState:
    """Each layer's cross-attention K/V of `memory` (M, S, D), computed once per sentence."""
    states = [LayerState(*layer.memory_kv(memory)) for layer in layers]
    return DecoderState(states, source_mask[:, None, None, :], beams)


def step_positions(tokens: Tensor, state: DecoderState, incremental: bool,
                   max_positions: int) -> Tensor:
    """(T,) positions of `tokens` (B, T): from 0, or one token at `state.step` when incremental."""
    t = tokens.size(1)
    if incremental and t != 1:
        raise ValueError("incremental decoding takes one token per step")
    first = state.step if incremental else 0
    if first + t > max_positions:
        raise ValueError(f"target length {first + t} exceeds {max_positions} positions")
    return torch.arange(first, first + t, device=tokens.device)
