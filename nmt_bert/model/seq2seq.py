"""The translation model: pretrained BERT encoder -> adapter -> Transformer decoder.

The decoder is the random pre-LN one (model/decoder.py) or, with model.decoder_init=encoder,
the BERT-shaped one warm-started from the encoder checkpoint (model/bert_decoder.py).

Shapes: B batch, S source length, T target length, E encoder width, D decoder width,
V target vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt_bert.config import ModelConfig
from nmt_bert.model.adapters import ADAPTERS
from nmt_bert.model.bert_decoder import BertDecoder, pretrained_parameters
from nmt_bert.model.decoder import Decoder, DecoderState
from nmt_bert.model.attention import set_encoder_attention
from nmt_bert.model.dropout import swap_encoder_dropout
from nmt_bert.model.special_tokens import PAD


class Seq2Seq(nn.Module):
    def __init__(self, encoder: nn.Module, config: ModelConfig, tgt_vocab_size: int):
        super().__init__()
        self.config = config
        self.encoder = encoder
        swap_encoder_dropout(encoder)  # its dropout on our CPU masks (model/dropout.py)
        set_encoder_attention(encoder)  # in training on a CPU, model/attention.py's product
        enc_dim = encoder.config.hidden_size
        inner_dropouts = {"attention_dropout": config.attention_dropout,  # None: config.dropout
                          "activation_dropout": config.activation_dropout}
        if config.decoder_init == "encoder":  # BERT2BERT: the decoder is the encoder's width
            self.adapter = ADAPTERS[config.adapter](enc_dim, enc_dim, config.adapter_hidden,
                                                    config.dropout)
            self.decoder = BertDecoder(tgt_vocab_size, encoder.config, config.decoder_layers,
                                       config.dropout, config.max_target_positions, PAD,
                                       **inner_dropouts)
        else:
            self.adapter = ADAPTERS[config.adapter](enc_dim, config.d_model,
                                                    config.adapter_hidden, config.dropout)
            self.decoder = Decoder(tgt_vocab_size, config.d_model, config.decoder_layers,
                                   config.heads, config.ffn_dim, config.dropout,
                                   config.max_target_positions, PAD, **inner_dropouts)
        self.encoder_frozen = False

    def freeze_encoder(self, frozen: bool = True, embeddings_frozen: bool = False) -> None:
        """Frozen: no gradients and dropout off. Unfrozen: optionally keep word embeddings fixed."""
        self.encoder_frozen = frozen
        self.encoder.requires_grad_(not frozen)
        if not frozen and embeddings_frozen:
            self.encoder.get_input_embeddings().requires_grad_(False)
        self.train(self.training)

    def freeze_pretrained_decoder(self, frozen: bool = True) -> None:
        """BERT2BERT: hold the decoder's pretrained parameters fixed (only what is new, the
        cross-attention sublayers, and the adapter train); a no-op for the random decoder."""
        if isinstance(self.decoder, BertDecoder):
            for p in pretrained_parameters(self.decoder):
                p.requires_grad_(not frozen)

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

    def decayed_parameters(self) -> list[nn.Parameter]:
        """The parameters that get weight decay, chosen by structure: every Linear weight
        matrix and the decoder's learned position table. Biases, norms, the word tables and
        the encoder's pretrained position/type tables get none (the measured recipes' rule)."""
        linear = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        return linear + [self.decoder.positions.weight]

    @property
    def adapter_dtype(self) -> torch.dtype:
        """The dtype encoder states are cast to before the adapter."""
        return self.adapter.dtype or next(self.decoder.parameters()).dtype

