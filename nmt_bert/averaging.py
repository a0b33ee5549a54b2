"""Averaging the weights of the last K step checkpoints (checkpoints/step-NNNNNNN)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file


def snapshots(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("step-*") if (p / "model.safetensors").exists())


def prune_snapshots(directory: Path, keep: int) -> None:
    for old in snapshots(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def average_checkpoints(directory: Path, k: int) -> dict[str, torch.Tensor] | None:
    """Element-wise mean of the last `k` snapshots' weights; None with fewer than two."""
    chosen = snapshots(directory)[-k:]
    if len(chosen) < 2:
        return None
    total: dict[str, torch.Tensor] = {}
    for path in chosen:
        for name, tensor in load_file(str(path / "model.safetensors")).items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (t / len(chosen)).float() for name, t in total.items()}
