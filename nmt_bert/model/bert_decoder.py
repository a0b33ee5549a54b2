"""A BERT-shaped decoder warm-started from the encoder checkpoint (BERT2BERT, Rothe et al. 2020).

Post-LayerNorm as in BERT: embeddings (word + position, token type 0 folded into the
position table) -> LayerNorm, then per layer causal self-attention -> add & LayerNorm,
cross-attention -> add & LayerNorm, FFN (GELU) -> add & LayerNorm; logits through the tied
word table. Width, heads, FFN size and LayerNorm epsilon are the encoder's. Self-attention,
FFN, their LayerNorms and the embeddings are copied from chosen pretrained encoder layers
(`init_from_encoder`); the cross-attention sublayers are new and initialised as the
random decoder's are.

The interface (`start`, `forward(tokens, state, incremental)`, DecoderState/LayerState) is
model/decoder.py's, so search, scoring and training need not know which decoder they have.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt_bert.model.decoder import (DecoderLayer, DecoderState, LayerState, self_attention,
                                    start_state, step_positions)
from nmt_bert.model.dropout import Dropout


class PostNormDecoderLayer(DecoderLayer):
    """model/decoder.py's layer (same parameters and names) with BERT's post-LN order."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float, eps: float,
                 attention_dropout: float | None = None, activation_dropout: float | None = None):
        super().__init__(d_model, heads, ffn_dim, dropout, attention_dropout, activation_dropout)
        for norm in (self.norm_self, self.norm_cross, self.norm_ffn):
            norm.eps = eps

    def forward(self, x: Tensor, state: LayerState, memory_mask: Tensor, incremental: bool,
                beams: int = 1) -> Tensor:
        """x: (B, t, D), the whole prefix (training) or just the newest position (incremental)."""
        q, k, v = self_attention(self.self_attn, x, state, incremental)
        x = self.norm_self(x + self.drop(self.self_attn.attend(q, k, v, None,
                                                               causal=not incremental)))
        cross = self.cross_attn
        x = self.norm_cross(x + self.drop(cross.attend(
            cross.q(x), state.memory_k, state.memory_v, memory_mask, causal=False, group=beams)))
        return self.norm_ffn(x + self.drop(self.ffn(x)))


class BertDecoder(nn.Module):
    """The encoder's architecture as a causal decoder with cross-attention; tied output."""

    def __init__(self, vocab_size: int, encoder_config, layers: int, dropout: float,
                 max_positions: int, pad_id: int = 0, attention_dropout: float | None = None,
                 activation_dropout: float | None = None):
        super().__init__()
        d = encoder_config.hidden_size
        eps = encoder_config.layer_norm_eps
        self.embed = nn.Embedding(vocab_size, d, padding_idx=pad_id)
        self.positions = nn.Embedding(max_positions, d)
        self.embed_norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            PostNormDecoderLayer(d, encoder_config.num_attention_heads,
                                 encoder_config.intermediate_size, dropout, eps,
                                 attention_dropout, activation_dropout)
            for _ in range(layers))
        self.drop = Dropout(dropout)
        self.max_positions = max_positions

    def start(self, memory: Tensor, source_mask: Tensor, beams: int = 1) -> DecoderState:
        """memory: (M, S, D); source_mask: (M, S) bool; `beams` decoder rows per memory row."""
        return start_state(self.layers, memory, source_mask, beams)

    def forward(self, tokens: Tensor, state: DecoderState, incremental: bool = False) -> Tensor:
        """tokens: (B, T) whole prefixes, or (B, 1) the newest token when incremental.

        Returns logits (B, T, V). Incremental calls extend `state`'s self-attention caches.
        """
        pos = step_positions(tokens, state, incremental, self.max_positions)
        t = tokens.size(1)
        x = self.drop(self.embed_norm(self.embed(tokens) + self.positions(pos)))  # (B, T, D)
        for layer, layer_state in zip(self.layers, state.layers):
            x = layer(x, layer_state, state.memory_mask, incremental, state.beams)
        if incremental:
            state.step += t
        return x @ self.embed.weight.t()  # (B, T, V)


def source_layer_ids(available: int, layers: int, which: str) -> list[int]:
    """Indices of the pretrained layers the decoder copies: the first or last `layers`."""
    if layers > available:
        raise ValueError(f"model.decoder_layers={layers} but the encoder checkpoint has "
                         f"{available} layers to initialise them from")
    return list(range(layers)) if which == "first" else list(range(available - layers, available))


@torch.no_grad()
def init_from_encoder(decoder: BertDecoder, word_table: Tensor, embeddings: nn.Module,
                      layers: list[nn.Module], target_ids: list[int],
                      position_offset: int = 0) -> None:
    """Copy pretrained weights into `decoder`; the cross-attention sublayers stay as built.

    `word_table` (original vocabulary, E) is the pretrained word table before pruning,
    `embeddings` a BertModel-style embeddings module (positions, token types, LayerNorm),
    `layers` the pretrained layers to copy (one per decoder layer), `target_ids` the
    tokenizer id of each target row. Positions start at `position_offset` (2: RoBERTa-style).
    """
    emb = embeddings
    decoder.embed.weight.copy_(word_table[torch.tensor(target_ids)])
    n = decoder.max_positions
    positions = emb.position_embeddings.weight[position_offset:position_offset + n]
    if positions.size(0) < n:
        raise ValueError(f"model.max_target_positions={n} exceeds the encoder's "
                         f"{positions.size(0)} positions")
    token_type = getattr(emb, "token_type_embeddings", None)
    folded = positions + (token_type.weight[0] if token_type is not None else 0)
    decoder.positions.weight.copy_(folded)
    decoder.embed_norm.load_state_dict(emb.LayerNorm.state_dict())
    for ours, theirs in zip(decoder.layers, layers, strict=True):
        self_attn = theirs.attention.self
        for name, linear in (("q", self_attn.query), ("k", self_attn.key),
                             ("v", self_attn.value), ("out", theirs.attention.output.dense)):
            getattr(ours.self_attn, name).load_state_dict(linear.state_dict())
        ours.norm_self.load_state_dict(theirs.attention.output.LayerNorm.state_dict())
        ours.ffn[0].load_state_dict(theirs.intermediate.dense.state_dict())
        ours.ffn[3].load_state_dict(theirs.output.dense.state_dict())
        ours.norm_ffn.load_state_dict(theirs.output.LayerNorm.state_dict())


def pretrained_parameters(decoder: BertDecoder) -> list[nn.Parameter]:
    """The parameters `init_from_encoder` fills: everything but the cross-attention sublayers."""
    new = {id(p) for layer in decoder.layers
           for module in (layer.cross_attn, layer.norm_cross) for p in module.parameters()}
    return [p for p in decoder.parameters() if id(p) not in new]
