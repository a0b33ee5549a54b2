"""One writer per directory: an advisory lock that names its holder and dies with it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from nmt_bert.atomic import umask
from nmt_bert.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; one writer is up to the user
    fcntl = None

LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold DIRECTORY/.lock for the block; UserError naming the holder if another process has it.

    The lock is flock(2)'s: the kernel releases it when its process ends, however it ends, so
    a killed run never leaves a lock that blocks the next one. The file stays behind (empty
    of meaning once released) and records who held it last.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{directory}: in use by another nmt-bert process ({holder(path)}); "
                        "wait for it to end, or stop it") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv[1:2])}).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holder(path: Path) -> str:
    """Who holds (or last held) the lock at `path`, in words."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']}, since {info['since']}"
                + (f", nmt-bert {info['command']}" if info.get("command") else ""))
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
