"""The training loss: label-smoothed cross-entropy over the target vocabulary, in blocks of rows.

With logits (N, V), the plain path (`F.cross_entropy(logits.float(), ...)`) makes several
full (N, V) float32 tensors a step: the cast, the log-probabilities kept for backward, the
smoothing term's gradient and their sum. At a stage-1 batch of the fast recipe (about 2,100
target tokens, V = 4,000) each is 34 MB, above glibc's 32 MB ceiling for reusing freed
memory, so each is mapped afresh and its pages faulted in, and every pass runs from memory.
Here one pass works through one cache-sized float32 block of rows at a time: it keeps the
per-row statistics (the log-sum-exp and the mean logit) and, in training, writes the
gradient from the same exponentials straight into the logits' dtype, as the plain path's
cast back does; backward only scales it by the loss's gradient (one backward per forward).
On 2 CPU cores the loss's forward and backward take about 8.5 ms instead of 72 (12 ms with
a second pass that recomputed the exponentials in backward), and a stage-1 step of the fast
recipe took 0.258 s instead of 0.282 with the first blocked form (medians of alternating
steps; bench/step_parts.py, bench/README.md).

Shapes: N rows (target positions), V target vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nmt_bert.model.special_tokens import PAD

# Float32 elements per block: 4 MB on a CPU (the fastest of the sizes measured on 2 cores,
# bench/step_parts.py); on a GPU the blocks only bound the float32 temporaries.
CPU_BLOCK = 2**20
GPU_BLOCK = 2**26


def label_smoothed_loss(logits: Tensor, labels: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL over non-pad labels.

    logits: (B, T, V); labels: (B, T) with PAD where there is no target token. The smoothing
    mass is spread over all V classes, as `F.cross_entropy(label_smoothing=...)` spreads it.
    Only the first result carries a gradient; the NLL is for reporting.
    """
    flat_logits = logits.reshape(-1, logits.size(-1))  # (N, V)
    return _SmoothedCrossEntropy.apply(flat_logits, labels.reshape(-1), float(smoothing))


def _blocks(logits: Tensor):
    """(row slice, that block of `logits` (N, V) in float32) pairs of about one block of
    elements each; the float32 block is one buffer, overwritten by the next."""
    block = CPU_BLOCK if logits.device.type == "cpu" else GPU_BLOCK
    rows = max(1, block // logits.size(1))
    buffer = logits.new_empty((min(rows, logits.size(0)), logits.size(1)), dtype=torch.float32)
    for start in range(0, logits.size(0), rows):
        chunk = logits[start:start + rows]
        z = buffer[:chunk.size(0)]
        z.copy_(chunk)
        yield slice(start, start + chunk.size(0)), z


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
        n, v = logits.shape
        lse = logits.new_empty(n, dtype=torch.float32)  # (N,) log-sum-exp of each row
        mean = logits.new_empty(n, dtype=torch.float32)  # (N,) mean logit of each row
        # The loss ends the graph, so its gradient is known here up to backward's scalar: it
        # is written while each block is in cache, from the same exponentials.
        # fp16 logits keep it in float32 until backward: under a loss scaler the scale comes
        # in backward, and small probabilities would underflow in fp16 before it (bf16 has
        # float32's range).
        held = torch.float32 if logits.dtype == torch.float16 else logits.dtype
        grad = torch.empty_like(logits, dtype=held) if ctx.needs_input_grad[0] else None
        for rows, z in _blocks(logits):  # z: (rows, V) float32, reused block to block
            top = z.amax(dim=-1, keepdim=True)  # (rows, 1)
            mean[rows] = z.mean(dim=-1)
            e = z.sub_(top).exp_()  # (rows, V)
            total = e.sum(dim=-1)  # (rows,)
            lse[rows] = total.log() + top.squeeze(1)
            if grad is not None:
                # d loss / d z = softmax(z) - ((1 - eps) one_hot(label) + eps / V)
                p = e.div_(total[:, None]).sub_(smoothing / v)
                p.scatter_add_(1, labels[rows, None], p.new_full((p.size(0), 1), smoothing - 1.0))
                grad[rows] = p
        target = logits.gather(1, labels[:, None]).squeeze(1).float()  # (N,)
        keep = labels != PAD
        if grad is not None:  # pad rows get no gradient
            if grad.device.type == "cpu":  # only their rows (a full masked pass: 2-4 ms here)
                grad.index_fill_(0, (~keep).nonzero().squeeze(1), 0)
            else:  # no host sync for nonzero()
                grad.masked_fill_(~keep[:, None], 0)
        nll = lse - target  # -log p(label)
        # -sum_j log p(j) / V = lse - mean logit: the smoothing term
        smoothed = (1.0 - smoothing) * nll + smoothing * (lse - mean)
        ctx.save_for_backward(grad)
        ctx.spent, ctx.dtype = False, logits.dtype
        nll_sum = torch.where(keep, nll, 0.0).sum()
        ctx.mark_non_differentiable(nll_sum)
        return torch.where(keep, smoothed, 0.0).sum(), nll_sum

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        if ctx.spent:  # the gradient was scaled in place by the first backward
            raise RuntimeError("label_smoothed_loss supports one backward pass per forward "
                               "(retain_graph=True with a second backward is not supported)")
        ctx.spent = True
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_loss).to(ctx.dtype), None, None  # (N, V) in the logits' dtype
