"""Dropout on CPU with masks drawn 64 random bits at a time; torch's own kernel elsewhere.

torch's CPU dropout draws one Bernoulli sample per element, serially: on 2 cores it was a
fifth of a stage-2 step (torch.profiler) and most of what dropout costs a stage-1 step of the
full recipe. Here each 64-bit word from torch's generator gives four 16-bit uniforms, one
per element, so a mask takes a quarter of the draws; the rate is p rounded to 1/65,536 and
kept values are scaled by the inverse of the kept share, so the expectation is unchanged.
Masks come from torch's seeded generator: runs stay reproducible.

Three sites use it: our modules' `Dropout`, the attention weights (`attention`, in place of
the dropout inside scaled_dot_product_attention's math kernel) and, through `use_on_encoder`,
the pretrained encoder's dropout modules and attention weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CPU_MASKS = True  # False: torch's dropout at every site (bench/step_parts.py --parts masks)
LEVELS = 1 << 16  # one 16-bit lane per element
LANES = 4  # 16-bit lanes in one 64-bit random word


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """A bool mask of `shape`, True with probability 1 - p' (p' = p rounded to 1/65,536),
    and the scale 1 / (1 - p') for the kept values."""
    n = shape.numel()
    words = torch.empty(-(-n // LANES), dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None)  # the full 64-bit range: every lane uniform
    dropped = round(p * LEVELS)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over [-32,768, 32,767]
    return lanes >= dropped - LEVELS // 2, LEVELS / (LEVELS - dropped)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout(x, p, training), with CPU masks from 64-bit words."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or not CPU_MASKS:
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p, x.device)
    return x * keep * scale  # the backward keeps only the bool mask


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, same switch by train/eval) on `dropout` above."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


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
    weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    return dropout(weights, p, True) @ v  # (B, H, T, Dh)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
           p: float) -> Tensor:
    """SDPA, or `attention` where dropout runs on a CPU (SDPA's own dropout is torch's)."""
    if p > 0.0 and q.device.type == "cpu" and CPU_MASKS:
        return attention(q, k, v, mask, causal, p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                          is_causal=causal)


ENCODER_ATTENTION = "nmt_bert_cpu_dropout"


def _encoder_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                       **kwargs):
    """transformers' SDPA attention, with `attention` above when dropout runs on a CPU."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0 or query.device.type != "cpu" or not CPU_MASKS:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    out = attention(query, key, value, attention_mask, False, dropout, scaling)  # (B, H, T, Dh)
    return out.transpose(1, 2).contiguous(), None  # (B, T, H, Dh), as SDPA's


def use_on_encoder(encoder: nn.Module) -> None:
    """Move a transformers encoder's dropout onto this module's CPU masks: its dropout modules
    in place, and its attention weights when it runs transformers' SDPA attention and can
    switch (an encoder that cannot keeps torch's dropout there)."""
    for parent in list(encoder.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace).train(child.training))
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
