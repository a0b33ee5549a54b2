"""The Hugging Face peer: `EncoderDecoderModel` = pretrained encoder + random BERT decoder.

Built the way a transformers user would build it (full-vocabulary encoder, `BertLMHeadModel`
decoder with cross-attention, tied output embeddings, HF's own loss and `generate()`), with
nmt-bert's target ids: pad 0, bos 2 (decoder start), eos 3.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor
from torch import Tensor

PAD, BOS, EOS = 0, 2, 3  # nmt-bert's target SentencePiece ids (nmt_bert.model)


def build_peer(encoder, tgt_vocab_size: int, layers: int, hidden: int, heads: int, ffn: int,
               max_positions: int = 512, seed: int = 1):
    """EncoderDecoderModel(encoder, random BertLMHeadModel). When `hidden` differs from the
    encoder's width transformers adds its `enc_to_dec_proj` Linear (the only adapter it has)."""
    from transformers import BertConfig, BertLMHeadModel, EncoderDecoderModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tgt_vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=ffn,
                        max_position_embeddings=max_positions, is_decoder=True,
                        add_cross_attention=True, pad_token_id=PAD, bos_token_id=BOS,
                        eos_token_id=EOS)
    model = EncoderDecoderModel(encoder=encoder, decoder=BertLMHeadModel(config))
    model.config.decoder_start_token_id = BOS
    model.config.pad_token_id = PAD
    model.config.eos_token_id = EOS
    model.generation_config.decoder_start_token_id = BOS
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    model.generation_config.bos_token_id = BOS
    return model


def peer_loss(model, batch) -> Tensor:
    """HF's own loss: mean cross-entropy over labels != -100; decoder inputs made by HF's
    shift_tokens_right (BOS + labels[:-1]), as its documentation says to train it."""
    labels = batch.labels.masked_fill(batch.labels == PAD, -100)
    return model(input_ids=batch.src_ids, attention_mask=batch.src_mask.long(), labels=labels).loss


class ForcedLengths(LogitsProcessor):
    """A logits processor making row r of the batch emit exactly `lengths[r]` tokens, then EOS.

    Before that length EOS is banned; at it every other token is. Rows are sentences
    (greedy) or sentence * num_beams + beam (beam search). Used to make an untrained peer
    generate as many tokens per sentence as the system it is compared with.
    """

    def __init__(self, lengths: list[int], num_beams: int, device):
        self.lengths = torch.tensor(lengths, device=device).repeat_interleave(num_beams)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        generated = input_ids.size(1) - 1  # the decoder start token is not generated
        early = self.lengths > generated
        scores[early, EOS] = -float("inf")
        at = self.lengths == generated
        if at.any():
            eos = scores[at, EOS].clone()
            scores[at] = -float("inf")
            scores[at, EOS] = torch.where(eos.isfinite(), eos, torch.zeros_like(eos))
        return scores


def generate_batch(model, src_ids: Tensor, src_mask: Tensor, num_beams: int, max_new_tokens: int,
                   forced: list[int] | None = None) -> list[list[int]]:
    """generate() on one batch; returns each row's tokens without start, EOS and padding."""
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList()
    if forced is not None:
        processors.append(ForcedLengths(forced, num_beams, src_ids.device))
    out = model.generate(input_ids=src_ids, attention_mask=src_mask.long(), num_beams=num_beams,
                         do_sample=False, max_new_tokens=max_new_tokens,
                         logits_processor=processors)
    hyps = []
    for row in out[:, 1:].tolist():
        hyps.append(row[: row.index(EOS)] if EOS in row else [t for t in row if t != PAD])
    return hyps


def build_bert2bert_peer(encoder_dir, target_ids: list[int], layers: int, seed: int = 1):
    """EncoderDecoderModel.from_encoder_decoder_pretrained(encoder_dir, encoder_dir): the
    Hugging Face BERT2BERT recipe (Rothe et al. 2020), its decoder the first `layers` of the
    checkpoint with new cross-attention and a BertLMHeadModel head.

    The decoder's word table and tied output are cut to the rows of nmt-bert's target
    vocabulary (`target_ids`: the tokenizer id of each row, specials at rows 0-3 = PAD,
    unk, BOS, EOS), so peer and nmt-bert share target ids, softmax size and references.
    """
    from torch import nn
    from transformers import EncoderDecoderModel

    torch.manual_seed(seed)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        str(encoder_dir), str(encoder_dir), decoder_num_hidden_layers=layers)
    decoder, rows = model.decoder, torch.tensor(target_ids)
    old = decoder.get_input_embeddings()
    table = nn.Embedding(len(target_ids), old.embedding_dim, padding_idx=PAD)
    table.weight.data.copy_(old.weight.data[rows])
    decoder.set_input_embeddings(table)
    head = decoder.cls.predictions
    head.decoder = nn.Linear(old.embedding_dim, len(target_ids))
    head.decoder.weight = table.weight  # tied, as BertLMHeadModel ties it
    head.bias = nn.Parameter(head.bias.data[rows].clone())
    head.decoder.bias = head.bias
    decoder.config.vocab_size = len(target_ids)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.pad_token_id = BOS, PAD
        config.eos_token_id = EOS
    model.generation_config.bos_token_id = BOS
    return model
