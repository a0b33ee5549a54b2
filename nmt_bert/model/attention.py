"""Scaled dot-product attention: torch's SDPA, or on a CPU in training an explicit product.

On a CPU, SDPA's math kernel (the one our decoder uses there: devices.attention_kernels)
casts bf16 queries, keys and values to float32 before its products, so under bf16 autocast
the attention's matmuls run at float32 speed, and its dropout is torch's serial one. In
training on a CPU, `attention` computes the same thing with the products in the compute
dtype (float32 accumulation inside each product, the softmax in float32) and dropout on
model/dropout.py's masks: 2.7 ms against 6.4-8.1 for a forward and backward at a stage-1
batch's shape, and a fast-recipe step about 5% shorter in stage 1 and 6-9% in stage 2
(bench/step_parts.py --parts attention). Evaluation and decoding keep SDPA, so
translations are unchanged; on a GPU SDPA picks its fused kernels.

Our decoders call `attend`; `set_encoder_attention` gives a transformers encoder the same rule.
Shapes: B batch, H heads, T queries, S keys, Dh head width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt_bert.model.dropout import dropout

CPU_EXPLICIT = True  # False: SDPA everywhere (bench/step_parts.py --parts attention)
ENCODER_ATTENTION = "nmt_bert_attention"


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, p: float,
              scale: float | None = None) -> Tensor:
    """scaled_dot_product_attention with dropout `p` on the weights (always applied: call it
    in training). q: (B, H, T, Dh); k, v: (B, H, S, Dh); mask broadcastable to (B, H, T, S),
    bool (True: attend) or additive; causal as SDPA's (query t sees keys 0..t) -> (B, H, T, Dh).
    """
    scale = q.size(-1) ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if causal:
        t, s = scores.shape[-2:]
        seen = torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~seen, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
            else scores + mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    return dropout(weights, p, True) @ v  # (B, H, T, Dh)


def explicit(device: torch.device, training: bool) -> bool:
    """Whether attention on `device` takes `attention` above rather than SDPA."""
    return training and device.type == "cpu" and CPU_EXPLICIT


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, p: float,
           training: bool) -> Tensor:
    """SDPA, or `attention` in training on a CPU; `p` is the weights' dropout in training."""
    p = p if training else 0.0
    if explicit(q.device, training):
        return attention(q, k, v, mask, causal, p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                          is_causal=causal)


def _encoder_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                       **kwargs):
    """transformers' SDPA attention, or `attention` above in training on a CPU."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not explicit(query.device, module.training):
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    out = attention(query, key, value, attention_mask, False, dropout, scaling)  # (B, H, T, Dh)
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, Dh), as SDPA's


def set_encoder_attention(encoder: nn.Module) -> None:
    """Give a transformers encoder that runs transformers' SDPA attention, and can switch,
    the rule above (one that cannot keeps its own attention)."""
    config = getattr(encoder, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return
    if not getattr(encoder, "_can_set_attn_implementation", lambda: False)():
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ENCODER_ATTENTION, _encoder_attention)
    AttentionMaskInterface.register(ENCODER_ATTENTION, sdpa_mask)
    encoder.set_attn_implementation(ENCODER_ATTENTION)
