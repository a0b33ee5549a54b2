"""Averaging the weights of the run's last K step checkpoints (`RunDir.snapshots`)."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file

from nmt_bert.model.checkpoint import WEIGHTS
from nmt_bert.train.run_dir import RunDir


def prune_snapshots(run: RunDir, keep: int) -> None:
    for old in run.snapshots()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def average_checkpoints(run: RunDir, k: int) -> dict[str, torch.Tensor] | None:
    """Element-wise mean of the last `k` snapshots' weights; None with fewer than two."""
    chosen = run.snapshots()[-k:]
    if len(chosen) < 2:
        return None
    total: dict[str, torch.Tensor] = {}
    for path in chosen:
        for name, tensor in load_file(str(path / WEIGHTS)).items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (t / len(chosen)).float() for name, t in total.items()}
