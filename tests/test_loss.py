"""The blocked label-smoothed loss against PyTorch's own cross-entropy: values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from nmt_bert.model import loss as loss_module
from nmt_bert.model.loss import label_smoothed_loss
from nmt_bert.model.special_tokens import PAD


def reference(logits, labels, smoothing):
    flat, flat_labels = logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1)
    loss = F.cross_entropy(flat, flat_labels, ignore_index=PAD, label_smoothing=smoothing,
                           reduction="sum")
    nll = F.cross_entropy(flat, flat_labels, ignore_index=PAD, reduction="sum")
    return loss, nll


def batch(dtype, seed=0, b=5, t=7, v=37):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, t, v, generator=g) * 3).to(dtype)
    labels = torch.randint(1, v, (b, t), generator=g)
    labels[0, 4:] = PAD  # a short row
    labels[3, 1] = PAD  # a pad inside (never in real data, but masked all the same)
    return logits, labels


@pytest.mark.parametrize("block", [16, 37 * 3, 37 * 4 + 5, 2**20])  # 1 row, ragged, one block
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_fp32_loss_and_gradient_match_cross_entropy(monkeypatch, block, smoothing):
    monkeypatch.setattr(loss_module, "CPU_BLOCK", block)
    logits, labels = batch(torch.float32)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    loss, nll = label_smoothed_loss(ours_in, labels, smoothing)
    ref_loss, ref_nll = reference(ref_in, labels, smoothing)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(nll, ref_nll, rtol=1e-6, atol=1e-4)
    (loss / 13).backward()
    (ref_loss / 13).backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-7)
    assert ours_in.grad[0, 4:].abs().sum() == 0  # pad positions get no gradient
    assert not nll.requires_grad


def test_bf16_gradient_is_written_in_the_logits_dtype():
    logits, labels = batch(torch.bfloat16, seed=1, b=16, t=30, v=400)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    label_smoothed_loss(ours_in, labels, 0.1)[0].backward()
    reference(ref_in, labels, 0.1)[0].backward()
    assert ours_in.grad.dtype == torch.bfloat16
    # Both compute in float32 and round once to bf16; summation order may flip a last bit.
    same = (ours_in.grad == ref_in.grad).float().mean().item()
    assert same > 0.99
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad.float(), rtol=1e-2, atol=1e-6)


def test_inference_mode_needs_no_graph():
    logits, labels = batch(torch.float32, seed=2)
    with torch.inference_mode():
        loss, nll = label_smoothed_loss(logits, labels, 0.0)
    torch.testing.assert_close(loss, nll)
    torch.testing.assert_close(nll, reference(logits, labels, 0.0)[1], rtol=1e-6, atol=1e-4)


def test_a_scaled_bf16_gradient_stays_within_bf16_rounding():
    """The gradient is rounded to bf16 in the forward and scaled in the backward."""
    logits, labels = batch(torch.bfloat16, seed=3, b=16, t=30, v=400)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    (label_smoothed_loss(ours_in, labels, 0.1)[0] / 437).backward()
    (reference(ref_in, labels, 0.1)[0] / 437).backward()
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad.float(), rtol=2e-2, atol=1e-8)


def test_a_second_backward_of_one_forward_is_refused():
    logits, labels = batch(torch.float32, seed=4)
    logits.requires_grad_()
    loss, _ = label_smoothed_loss(logits, labels, 0.1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_fp16_gradients_keep_small_values_under_a_loss_scale():
    """A loss scaler's factor arrives in backward: fp16 logits must not lose the small
    probabilities to fp16's range before it is applied."""
    logits, labels = batch(torch.float32, seed=5, b=8, t=20, v=3000)
    logits = (logits * 4).half()  # wide logits: many probabilities below fp16's 6e-8
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    (label_smoothed_loss(ours_in, labels, 0.0)[0] * 2.0**16).backward()
    (reference(ref_in, labels, 0.0)[0] * 2.0**16).backward()
    assert ours_in.grad.dtype == torch.float16
    small = (ref_in.grad != 0) & (ref_in.grad.float().abs() < 1e-2)  # p * 2^16 below 1e-2
    assert small.sum() > 1000
    assert (ours_in.grad[small] != 0).float().mean() > 0.999
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad.float(), rtol=2e-3, atol=1e-7)
