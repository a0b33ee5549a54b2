"""Our model as a CTranslate2 `TransformerSpec`: the one place our weights meet its layout.

Encoder (a Hugging Face BERT-family model, post-norm):
    TransformerEncoderSpec(pre_norm=False, activation=the encoder's hidden_act,
    layernorm_embedding=True) with scale_embeddings=False; q/k/v fused into
    self_attention.linear[0]. Token type 0 is added into the position table (our inputs
    never carry another type). RoBERTa-type encoders number positions from
    padding_idx + 1 (`position_offset`), so their table starts at that row.
Decoder (ours, nmt_bert.model.decoder, pre-norm with a final LayerNorm):
    TransformerDecoderSpec(pre_norm=True, activation=GELU (erf, as nn.GELU)) with
    embeddings scaled by sqrt(d_model) (times c, see below); the learned position table
    written explicitly (left unset, CTranslate2 would use its own sinusoids); self-attention
    q/k/v fused; cross-attention q in linear[0], k/v fused in linear[1]; the output
    projection is the embedding matrix itself (tied; stored once) and has no bias.
BERT2BERT decoder (model.decoder_init=encoder, nmt_bert.model.bert_decoder, post-norm):
    TransformerDecoderSpec(pre_norm=False, layernorm_embedding=True, activation=GELU),
    no embedding scale and no final LayerNorm; position table (token type 0 folded in)
    written explicitly; the same sublayer mapping as ours. Its LayerNorms use the encoder's
    epsilon, so the one epsilon CTranslate2 has is exact for both and the stream is not
    scaled (a post-norm stream could not be: each sublayer's LayerNorm resets it).
Adapter:
    affine (memory = A h + a) folds exactly into every layer's cross-attention K/V,
    W(Ah + a) + b = (WA)h + (Wa + b), computed in float64; none leaves K/V as they are. mlp
    and linear end in a LayerNorm, which has no slot between encoder and cross-attention.
LayerNorm epsilon:
    CTranslate2 has one for the whole model; we write the encoder's (BERT: 1e-12), and our
    decoder's LayerNorms were trained with PyTorch's 1e-5. A LayerNorm only sees its input's
    scale through epsilon, LN(c x; e) = LN(x; e / c**2), and the pre-norm decoder's residual
    stream reaches nothing but LayerNorms, so the export carries that stream multiplied by
    c = sqrt(e_encoder / e_decoder) (embedding scale, position table and every sublayer's
    output projection times c): its norms then compute exactly what ours do. Without it the
    log-probs move by up to ~4e-5 on the tiny test models (tests/test_export.py). For BERT's
    1e-12, c is 3.2e-4, which would push the position table below float16's normal range,
    so float16 exports (float16, int8_float16) leave the stream unscaled (c = 1) and take
    the small epsilon difference instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nmt_bert.config import ModelConfig
from nmt_bert.errors import UserError
from nmt_bert.model.encoders import OFFSET_POSITIONS
from nmt_bert.model.seq2seq import Seq2Seq

FOLDABLE_ADAPTERS = ("affine", "none")  # kinds with nothing between encoder and K/V but a map


def check_exportable(config: ModelConfig, where: str) -> None:
    """UserError (one line, naming `where`) unless CTranslate2 can express the model."""
    if config.adapter not in FOLDABLE_ADAPTERS:
        raise UserError(
            f"{where}: model.adapter={config.adapter} ends in a LayerNorm, which CTranslate2 "
            "cannot place between encoder and decoder; to export, train with "
            "--set model.adapter=affine")


def build_spec(model: Seq2Seq, word_table: Tensor, source_tokens: Sequence[str],
               target_tokens: Sequence[str], specials: dict[str, str],
               fold_epsilon: bool = True):
    """A `TransformerSpec` of `model` (to validate, optimize and save) whose encoder reads
    `word_table` (N, E): the model's own (possibly pruned) table or the whole pretrained one.

    `source_tokens` (N) and `target_tokens` (V) name the rows; `specials` gives the unk,
    bos and eos token strings of the target vocabulary (bos starts decoding).
    `fold_epsilon` scales the decoder's residual stream so that its LayerNorms are exact at
    the encoder's epsilon (see the module docstring); off for float16 compute.
    """
    from ctranslate2.specs import common_spec, transformer_spec

    from nmt_bert.model.bert_decoder import BertDecoder

    check_exportable(model.config, "model")
    encoder, decoder = model.encoder, model.decoder
    enc_config = encoder.config
    encoder_spec = transformer_spec.TransformerEncoderSpec(
        len(encoder.encoder.layer), enc_config.num_attention_heads, pre_norm=False,
        activation=_activation(enc_config.hidden_act), layernorm_embedding=True)
    encoder_spec.scale_embeddings = False
    _set_encoder(encoder_spec, encoder, word_table)
    post_norm = isinstance(decoder, BertDecoder)
    decoder_spec = transformer_spec.TransformerDecoderSpec(
        len(decoder.layers), decoder.layers[0].self_attn.heads, pre_norm=not post_norm,
        activation=common_spec.Activation.GELU, layernorm_embedding=post_norm)
    if post_norm:
        if decoder_epsilon(decoder) != float(enc_config.layer_norm_eps):
            raise UserError(f"decoder LayerNorm epsilon {decoder_epsilon(decoder):g} differs from "
                            f"the encoder's {float(enc_config.layer_norm_eps):g}: a post-norm "
                            "decoder cannot be exported with one epsilon")
        decoder_spec.scale_embeddings = False
        _set_bert_decoder(decoder_spec, decoder, _memory_map(model))
    else:
        stream = residual_scale(float(enc_config.layer_norm_eps), decoder) if fold_epsilon \
            else 1.0
        decoder_spec.scale_embeddings = decoder.scale * stream  # Decoder.scale is sqrt(d_model)
        _set_decoder(decoder_spec, decoder, _memory_map(model), stream)
    spec = transformer_spec.TransformerSpec(encoder_spec, decoder_spec)
    spec.config.layer_norm_epsilon = float(enc_config.layer_norm_eps)
    spec.config.unk_token = specials["unk"]
    spec.config.bos_token = specials["bos"]
    spec.config.eos_token = specials["eos"]
    spec.config.decoder_start_token = specials["bos"]
    spec.register_source_vocabulary(list(source_tokens))
    spec.register_target_vocabulary(list(target_tokens))
    return spec


def decoder_epsilon(decoder: nn.Module) -> float:
    """The one epsilon of the decoder's LayerNorms (UserError where they differ)."""
    eps = {float(m.eps) for m in decoder.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) != 1:
        raise UserError(f"decoder LayerNorms with different epsilons {sorted(eps)} cannot be "
                        "exported")
    return eps.pop()


def residual_scale(epsilon: float, decoder: nn.Module) -> float:
    """c such that our pre-norm decoder's LayerNorms, run at `epsilon` on a residual stream
    scaled by c, compute what they compute at their own epsilon on the unscaled one (1 for
    the post-norm BERT2BERT decoder, which shares the encoder's epsilon)."""
    from nmt_bert.model.bert_decoder import BertDecoder

    if isinstance(decoder, BertDecoder):
        return 1.0
    return math.sqrt(epsilon / decoder_epsilon(decoder))


def _activation(name: str):
    from ctranslate2.specs.common_spec import Activation

    known = {"gelu": Activation.GELU, "relu": Activation.RELU, "gelu_new": Activation.GELUTanh,
             "gelu_pytorch_tanh": Activation.GELUTanh}
    if name not in known:
        raise UserError(f"encoder activation {name!r} has no CTranslate2 equivalent "
                        f"(exportable: {', '.join(known)})")
    return known[name]


def _memory_map(model: Seq2Seq) -> tuple[Tensor, Tensor] | None:
    """(A (D, E), a (D,)) of an affine adapter; None for the identity."""
    if model.config.adapter == "none":
        return None
    proj = model.adapter.proj
    return proj.weight.detach(), proj.bias.detach()


def _f32(t: Tensor) -> Tensor:
    # A copy: CTranslate2 quantizes the arrays it is given in place.
    return t.detach().to("cpu", torch.float32, copy=True).contiguous()


def _linear(spec, weight: Tensor, bias: Tensor | None) -> None:
    spec.weight = _f32(weight)
    if bias is not None:
        spec.bias = _f32(bias)


def _fused(spec, *layers: nn.Linear) -> None:
    _linear(spec, torch.cat([m.weight for m in layers]), torch.cat([m.bias for m in layers]))


def _norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _f32(norm.weight), _f32(norm.bias)


def position_offset(encoder: nn.Module) -> int:
    """The position-table row of the first token: RoBERTa-type embeddings number positions
    from padding_idx + 1 (as Hugging Face computes them, for inputs without padding)."""
    padding_idx = getattr(encoder.embeddings, "padding_idx", None)
    if padding_idx is not None:
        return int(padding_idx) + 1
    return OFFSET_POSITIONS.get(encoder.config.model_type, 0)


def _set_encoder(spec, encoder: nn.Module, word_table: Tensor) -> None:
    emb = encoder.embeddings
    if getattr(encoder.config, "position_embedding_type", "absolute") != "absolute":
        raise UserError("only encoders with absolute position embeddings can be exported")
    positions = emb.position_embeddings.weight[position_offset(encoder):]  # (P, E): row i = i
    spec.embeddings[0].weight = _f32(word_table)
    spec.position_encodings.encodings = _f32(positions + emb.token_type_embeddings.weight[0])
    _norm(spec.layernorm_embedding, emb.LayerNorm)
    for layer_spec, layer in zip(spec.layer, encoder.encoder.layer):
        attn = layer.attention
        _fused(layer_spec.self_attention.linear[0], attn.self.query, attn.self.key,
               attn.self.value)
        _linear(layer_spec.self_attention.linear[1], attn.output.dense.weight,
                attn.output.dense.bias)
        _norm(layer_spec.self_attention.layer_norm, attn.output.LayerNorm)
        _linear(layer_spec.ffn.linear_0, layer.intermediate.dense.weight,
                layer.intermediate.dense.bias)
        _linear(layer_spec.ffn.linear_1, layer.output.dense.weight, layer.output.dense.bias)
        _norm(layer_spec.ffn.layer_norm, layer.output.LayerNorm)


def _set_decoder(spec, decoder: nn.Module, memory_map: tuple[Tensor, Tensor] | None,
                 stream: float) -> None:
    """`stream` (c) multiplies what enters the residual stream: positions (the embedding
    scale is set by the caller) and each sublayer's output projection."""
    embed = _f32(decoder.embed.weight)
    spec.embeddings.weight = embed
    spec.projection.weight = embed  # tied: the same tensor, stored once
    spec.position_encodings.encodings = _f32(decoder.positions.weight.double() * stream)
    _norm(spec.layer_norm, decoder.norm)
    _set_decoder_layers(spec, decoder, memory_map, stream)


def _set_bert_decoder(spec, decoder: nn.Module, memory_map: tuple[Tensor, Tensor] | None) -> None:
    """The post-norm BERT2BERT decoder: LayerNorm after the embeddings, none at the end."""
    embed = _f32(decoder.embed.weight)
    spec.embeddings.weight = embed
    spec.projection.weight = embed  # tied
    spec.position_encodings.encodings = _f32(decoder.positions.weight)  # token type 0 folded in
    _norm(spec.layernorm_embedding, decoder.embed_norm)
    _set_decoder_layers(spec, decoder, memory_map, 1.0)


def _set_decoder_layers(spec, decoder: nn.Module, memory_map: tuple[Tensor, Tensor] | None,
                        stream: float) -> None:
    """Each layer's sublayers (the same names in both decoders; only the norm order differs,
    which the spec's pre_norm says)."""
    for layer_spec, layer in zip(spec.layer, decoder.layers):
        self_attn, cross = layer.self_attn, layer.cross_attn
        _fused(layer_spec.self_attention.linear[0], self_attn.q, self_attn.k, self_attn.v)
        _scaled(layer_spec.self_attention.linear[1], self_attn.out, stream)
        _norm(layer_spec.self_attention.layer_norm, layer.norm_self)
        _linear(layer_spec.attention.linear[0], cross.q.weight, cross.q.bias)
        kv_weight = torch.cat([cross.k.weight, cross.v.weight]).detach()  # (2D, D)
        kv_bias = torch.cat([cross.k.bias, cross.v.bias]).detach()
        if memory_map is not None:  # W(Ah + a) + b = (WA)h + (Wa + b)
            a_weight, a_bias = (t.double() for t in memory_map)
            kv_weight, kv_bias = (kv_weight.double() @ a_weight,
                                  kv_weight.double() @ a_bias + kv_bias.double())
        _linear(layer_spec.attention.linear[1], kv_weight, kv_bias)  # (2D, E)
        _scaled(layer_spec.attention.linear[2], cross.out, stream)
        _norm(layer_spec.attention.layer_norm, layer.norm_cross)
        _linear(layer_spec.ffn.linear_0, layer.ffn[0].weight, layer.ffn[0].bias)
        _scaled(layer_spec.ffn.linear_1, layer.ffn[3], stream)
        _norm(layer_spec.ffn.layer_norm, layer.norm_ffn)


def _scaled(spec, linear: nn.Linear, factor: float) -> None:
    _linear(spec, linear.weight.double() * factor, linear.bias.double() * factor)
