"""Encoder states computed once and read from disk while the encoder is frozen.

A frozen encoder gives the same output for the same input every epoch, so stage 1 reads
states from a flat (total source tokens, E) file instead of running 12 BERT layers per
step. The cache directory is named by a key over the encoder's weights, its layer count,
the source token ids and the storage dtype, so a changed encoder or corpus never reuses
stale states.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from nmt_bert.train.batches import TokenData, token_batches
from nmt_bert.devices import autocast_context
from nmt_bert.atomic import atomic_dir

DTYPES = {"float16": np.float16, "float32": np.float32}


def cache_key(encoder_fingerprint: str, data: TokenData, dtype: str) -> str:
    h = hashlib.sha256()
    h.update(encoder_fingerprint.encode())
    h.update(dtype.encode())
    h.update(np.ascontiguousarray(data.src_offsets).tobytes())
    h.update(np.ascontiguousarray(data.src_flat).tobytes())
    return h.hexdigest()[:20]


class DamagedCache(Exception):
    """A cache directory whose files do not match its meta.json (truncated, edited)."""


class EncoderCache:
    """Read side: gathers the states of a batch's examples into a padded tensor."""

    def __init__(self, directory: Path, data: TokenData):
        """Open the cache in `directory`; DamagedCache when its files do not add up."""
        try:
            meta = json.loads((directory / "meta.json").read_text())
            dtype, shape = DTYPES[meta["dtype"]], (int(meta["tokens"]), int(meta["width"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DamagedCache(f"unreadable meta.json ({type(err).__name__})") from None
        states = directory / "states.bin"
        expected = shape[0] * shape[1] * np.dtype(dtype).itemsize
        size = states.stat().st_size if states.is_file() else -1
        if size != expected or shape[0] != int(data.src_offsets[-1]):
            raise DamagedCache(f"states.bin has {max(size, 0):,} bytes, expected {expected:,}")
        self.directory = directory
        self.meta = meta
        self.offsets = data.src_offsets
        self.dtype, self.width = np.dtype(dtype), shape[1]
        self.row_bytes = self.width * self.dtype.itemsize  # one token's states
        # Read, not memory-mapped: the pages read stay in the OS's page cache instead of
        # this process's resident memory (a map had the whole file resident by the end of
        # an epoch: 795 MiB for the fast recipe).
        self.file = open(states, "rb", buffering=0)

    def gather(self, index: Tensor, length: int) -> Tensor:
        """States for examples `index` (B,), zero-padded to (B, length, E), as float32."""
        out = np.zeros((len(index), length, self.width), dtype=np.float32)
        for row, i in enumerate(index.tolist()):
            s0, s1 = int(self.offsets[i]), int(self.offsets[i + 1])
            states = np.empty((s1 - s0, self.width), dtype=self.dtype)  # (S_i, E)
            self.file.seek(s0 * self.row_bytes)
            if self.file.readinto(states) != states.nbytes:
                raise DamagedCache(f"{self.directory / 'states.bin'} ended early")
            out[row, : s1 - s0] = states
        return torch.from_numpy(out)

    def close(self) -> None:
        self.file.close()


def build_or_load(root: Path, model, data: TokenData, fingerprint: str, dtype: str,
                  device: torch.device, batch_tokens: int = 8192, log=print) -> EncoderCache:
    """Return the cache for (encoder, data, dtype) under `root`, computing it if missing."""
    directory = Path(root) / f"encoder-{cache_key(fingerprint, data, dtype)}"
    if (directory / "meta.json").exists():
        try:
            cache = EncoderCache(directory, data)
            log(f"encoder cache: reusing {directory}")
            return cache
        except DamagedCache as err:  # ours, and rebuilt from the same inputs: replace it
            log(f"encoder cache: {directory} is damaged ({err}); rebuilding it")
    start = time.perf_counter()
    width = model.encoder.config.hidden_size
    total = int(data.src_offsets[-1])
    with atomic_dir(directory, ours=_is_cache, what="an encoder-state cache") as tmp:
        row_bytes = width * np.dtype(DTYPES[dtype]).itemsize
        batches = token_batches(data.src_lens, np.zeros_like(data.src_lens), batch_tokens,
                                seed=0, epoch=0, shuffle=False)
        # a half-precision cache is computed in bf16 where the hardware runs it natively
        precision = "fp32" if dtype == "float32" else "auto"
        # written, not mapped: see EncoderCache
        with open(tmp / "states.bin", "wb") as out, Progress(transient=True) as progress, \
                torch.inference_mode(), autocast_context(device, precision, cpu_bf16=True):
            out.truncate(total * row_bytes)
            task = progress.add_task("caching encoder states", total=total)
            for index in batches:
                batch = data.collate(index)
                hidden = model.encode_states(batch.src_ids.to(device), batch.src_mask.to(device))
                hidden = hidden.float().cpu().numpy().astype(DTYPES[dtype], copy=False)  # (B, S, E)
                for row, i in enumerate(index):
                    s0, s1 = int(data.src_offsets[i]), int(data.src_offsets[i + 1])
                    out.seek(s0 * row_bytes)
                    out.write(np.ascontiguousarray(hidden[row, : s1 - s0]).data)
                progress.advance(task, int(batch.src_mask.sum()))
        seconds = time.perf_counter() - start
        meta = {"dtype": dtype, "tokens": total, "width": width, "sentences": len(data),
                "seconds": round(seconds, 2), "encoder": fingerprint}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    size_mb = total * width * np.dtype(DTYPES[dtype]).itemsize / 2**20
    log(f"encoder cache: {len(data)} sentences, {total} tokens, {size_mb:.0f} MiB "
        f"in {seconds:.1f}s ({total / seconds:.0f} tokens/s)")
    return EncoderCache(directory, data)


def _is_cache(path: Path) -> bool:
    return (Path(path) / "meta.json").is_file() and Path(path).name.startswith("encoder-")


