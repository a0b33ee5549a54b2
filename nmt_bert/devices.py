"""Choosing the device, the mixed-precision context and the attention kernels for it."""

from __future__ import annotations

import contextlib

import torch

from nmt_bert.cpu import bound_kernel_cache
from nmt_bert.errors import UserError

bound_kernel_cache()  # every path that runs a model imports this module before its first matmul


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N" -> a usable device.

    Raises UserError for a malformed name or a CUDA device that this machine does not have.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here (use --device cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UserError(f"--device {name}: only {count} CUDA device(s) visible")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively: a bf16-capable GPU, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(device: torch.device, precision: str = "auto", cpu_bf16: bool = False) -> str:
    """`precision` with "auto" resolved to "bf16" or "fp32" for `device`.

    "auto" means bf16 on a CUDA device that supports it and plain fp32 everywhere else, and
    with `cpu_bf16` also bf16 on a CPU that runs it natively (emulated bf16 is slower than
    fp32, and translation keeps fp32 on CPU so its output never depends on batch padding).
    """
    if precision != "auto":
        return precision
    wanted = device.type == "cuda" or cpu_bf16
    return "bf16" if wanted and native_bf16(device) else "fp32"


def autocast_context(device: torch.device | str, precision: str = "auto",
                     cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` ("auto", "fp32", "bf16", "fp16") on `device`;
    "auto" as in `resolve_precision`."""
    device = torch.device(device)
    precision = resolve_precision(device, precision, cpu_bf16)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise UserError(f"unknown precision {precision!r}: expected auto, fp32, bf16 or fp16")


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """The scaled-dot-product attention kernels our decoder may use on `device`. On a CPU,
    the plain (math) kernel: on sentence-length sequences the fused flash kernel's backward
    is the slower one (a stage-1 step of the fast recipe on 2 cores: 0.36-0.40 s against
    0.53-0.57 s; bench/train_throughput.py). Training on a CPU no longer calls SDPA at all
    (model/attention.py); this is for evaluation and decoding. Elsewhere, torch's own choice."""
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)
