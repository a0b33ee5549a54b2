"""FLOP accounting for the MFU estimates: the machine's peak, parameters per part, MFU.

See README "Methods: MFU" for the two estimates and why both are kept.
"""

from __future__ import annotations

import time

import common


def peak_flops(device, n: int = 2048, reps: int = 5, dtype: str = "float32") -> dict:
    """Best sustained FLOP/s of an n x n `dtype` matmul: the denominator of the MFU estimates.

    Best of `reps` timed runs after two warm-up runs.
    """
    import torch

    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    for _ in range(2):
        a @ b
    common.sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        common.sync(device)
        best = min(best, time.perf_counter() - start)
    return {"flops": 2 * n**3 / best, "matmul_n": n, "dtype": dtype}


def compute_dtype(device, precision: str, cpu_bf16: bool) -> str:
    """The matmul dtype a system trains in, by nmt-bert's own autocast rule."""
    from nmt_bert.devices import resolve_precision

    precision = resolve_precision(device, precision, cpu_bf16)
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision]


def param_stats(parts: dict, lookup: dict) -> dict:
    """Per part: trainable/frozen parameters, all and matmul-only (lookup tables excluded).

    `parts` maps a name to a module; `lookup[name](param_name)` says whether a parameter is an
    embedding table that is only indexed (its rows cost no FLOPs).
    """
    stats = {}
    for name, module in parts.items():
        s = dict.fromkeys(("trainable", "frozen", "trainable_matmul", "frozen_matmul"), 0)
        for pname, p in (module.named_parameters() if module is not None else []):
            kind = "trainable" if p.requires_grad else "frozen"
            s[kind] += p.numel()
            if not lookup[name](pname):
                s[kind + "_matmul"] += p.numel()
        stats[name] = s
    return stats


def bert_lookup(name: str) -> bool:
    return "embeddings." in name and "LayerNorm" not in name


def mfu(result: dict, peak: float) -> dict:
    """Two estimates of model FLOPs utilisation (see README: method).

    simple: (6 * trainable + 2 * frozen-and-run) parameters * (src+tgt) tokens/s.
    split: each part's matmul parameters times the tokens it actually processes: encoder and
    adapter on source tokens, decoder (with its tied output projection) on target tokens;
    6 FLOPs per parameter and token when trainable, 2 when frozen but run, 0 when cached.
    """
    p, tok_s = result["params"], result["tokens_per_s"]
    trainable = sum(part["trainable"] for part in p.values())
    frozen_run = sum(part["frozen"] for name, part in p.items()
                     if name != "encoder" or result["encoder_runs"])
    simple = (6 * trainable + 2 * frozen_run) * tok_s
    split = 0.0
    for name, part in p.items():
        if name == "encoder" and not result["encoder_runs"]:
            continue
        rate = result["tgt_tokens_per_s"] if name == "decoder" else result["src_tokens_per_s"]
        split += (6 * part["trainable_matmul"] + 2 * part["frozen_matmul"]) * rate
    return {"model_flops_simple": simple, "model_flops_split": split,
            "mfu_simple": simple / peak, "mfu_split": split / peak}
