"""The two digests nmt-bert relies on: of files (inputs, bundled models) and of weights."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; a directory (a saved dataset) hashes its files in name order."""
    path = Path(path)
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def state_sha256(model) -> str:
    """sha256 (hex) over every state_dict entry's name, dtype, shape and raw bytes, in name order.

    Exact: any change to any weight or buffer changes it; identical weights give the same
    digest across processes and machines. Cost: one pass over the weights (~0.5 s for the
    470 MB multilingual-e5-small on one core).
    """
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
