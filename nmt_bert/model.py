"""The translation model: pretrained BERT encoder -> adapter -> Transformer decoder.

Shapes: B batch, S source length, T target length, E encoder width, D decoder width,
V target vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt_bert.config import ModelConfig
from nmt_bert.decoder import Decoder, DecoderState

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # target SentencePiece ids, fixed by `prepare`


class Adapter(nn.Module):
    """Maps encoder states (B, S, E) to decoder memory (B, S, D).

    "mlp": x = proj(h); LayerNorm(x + MLP(x)), proj only where E != D.
    "linear": LayerNorm(Linear(h)). "none": identity, only valid when E == D.
    """

    def __init__(self, kind: str, enc_dim: int, d_model: int, hidden: int, dropout: float):
        super().__init__()
        if kind == "none" and enc_dim != d_model:
            raise ValueError(
                f"model.adapter=none needs encoder width ({enc_dim}) == model.d_model ({d_model})"
            )
        self.kind = kind
        self.proj = nn.Linear(enc_dim, d_model) if enc_dim != d_model or kind == "linear" else nn.Identity()
        self.mlp = None
        if kind == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_model)
            )
        self.norm = nn.LayerNorm(d_model) if kind != "none" else nn.Identity()
        self.drop = nn.Dropout(dropout)

    def forward(self, states: Tensor) -> Tensor:
        x = self.proj(states)
        if self.mlp is not None:
            x = x + self.drop(self.mlp(x))
        return self.norm(x)


class Seq2Seq(nn.Module):
    def __init__(self, encoder: nn.Module, config: ModelConfig, tgt_vocab_size: int):
        super().__init__()
        self.config = config
        self.encoder = encoder
        enc_dim = encoder.config.hidden_size
        self.adapter = Adapter(config.adapter, enc_dim, config.d_model, config.adapter_hidden,
                               config.dropout)
        self.decoder = Decoder(tgt_vocab_size, config.d_model, config.decoder_layers, config.heads,
                               config.ffn_dim, config.dropout, config.max_target_positions, PAD)
        self.encoder_frozen = False

    def freeze_encoder(self, frozen: bool = True, embeddings_frozen: bool = False) -> None:
        """Frozen: no gradients and dropout off. Unfrozen: optionally keep word embeddings fixed."""
        self.encoder_frozen = frozen
        self.encoder.requires_grad_(not frozen)
        if not frozen and embeddings_frozen:
            self.encoder.get_input_embeddings().requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Seq2Seq":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def encode_states(self, src_ids: Tensor, src_mask: Tensor) -> Tensor:
        """src_ids, src_mask: (B, S) -> encoder hidden states (B, S, E); no graph when frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            out = self.encoder(input_ids=src_ids, attention_mask=src_mask.long())
        return out.last_hidden_state

    def start(self, states: Tensor, src_mask: Tensor, beams: int = 1) -> DecoderState:
        """Encoder states (B, S, E) -> decoder state holding the memory's cross-attention K/V,
        read by `beams` decoder rows per sentence."""
        return self.decoder.start(self.adapter(states), src_mask, beams)

    def forward(self, src_ids: Tensor, src_mask: Tensor, tgt_in: Tensor,
                states: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, T, V). `states` (cached encoder output) skips the encoder."""
        if states is None:
            states = self.encode_states(src_ids, src_mask)
        return self.decoder(tgt_in, self.start(states.to(self.adapter_dtype), src_mask))

    @property
    def adapter_dtype(self) -> torch.dtype:
        return next(self.adapter.norm.parameters(), next(self.decoder.parameters())).dtype


def label_smoothed_loss(logits: Tensor, labels: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL over non-pad labels.

    logits: (B, T, V); labels: (B, T) with PAD where there is no target token.
    """
    flat_logits = logits.reshape(-1, logits.size(-1)).float()  # (B*T, V)
    flat_labels = labels.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=PAD,
                           label_smoothing=smoothing, reduction="sum")
    nll = F.cross_entropy(flat_logits, flat_labels, ignore_index=PAD, reduction="sum")
    return loss, nll


def shift_right(labels: Tensor) -> Tensor:
    """Decoder input: BOS followed by the labels without their last position. (B, T) -> (B, T)."""
    start = torch.full_like(labels[:, :1], BOS)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == EOS, PAD)


def truncate_encoder(encoder: nn.Module, layers: int) -> None:
    """Keep the first `layers` Transformer layers of a BERT-style encoder (0 keeps all)."""
    if layers <= 0:
        return
    stack = encoder.encoder.layer
    if layers > len(stack):
        raise ValueError(f"model.encoder_layers={layers} but the encoder has {len(stack)} layers")
    encoder.encoder.layer = stack[:layers]
    encoder.config.num_hidden_layers = layers


def prune_embeddings(encoder: nn.Module, kept_ids: Tensor) -> None:
    """Keep only the word-embedding rows in `kept_ids` (sorted original ids, shape (K,))."""
    old = encoder.get_input_embeddings()
    new = nn.Embedding(kept_ids.numel(), old.embedding_dim)
    new.weight.data.copy_(old.weight.data.index_select(0, kept_ids))
    encoder.set_input_embeddings(new)
    encoder.config.vocab_size = kept_ids.numel()
    if getattr(encoder.config, "pad_token_id", None) is not None:
        encoder.config.pad_token_id = None  # ids are remapped; padding is masked, not looked up
