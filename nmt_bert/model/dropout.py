"""Dropout on CPU with masks drawn 64 random bits at a time; torch's own kernel elsewhere.

torch's CPU dropout draws one Bernoulli sample per element, serially: on 2 cores it was a
fifth of a stage-2 step (torch.profiler) and most of what dropout costs a stage-1 step of the
full recipe. Here each 64-bit word from torch's generator gives four 16-bit uniforms, one
per element, so a mask takes a quarter of the draws; the rate is p rounded to 1/65,536 and
kept values are scaled by the inverse of the kept share, so the expectation is unchanged.
Masks come from torch's seeded generator: runs stay reproducible.

Three sites use it: our modules' `Dropout`, the pretrained encoder's dropout modules (swapped
by `swap_encoder_dropout`) and the attention weights in training on a CPU (model/attention.py, in
place of the dropout inside scaled_dot_product_attention's math kernel).
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


def swap_encoder_dropout(encoder: nn.Module) -> None:
    """Swap a transformers encoder's dropout modules for `Dropout` (its attention weights'
    dropout follows model/attention.py's set_encoder_attention)."""
    for parent in list(encoder.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace).train(child.training))
