"""Reading user text files strictly and writing outputs atomically.

Every reader error names the file and, where one applies, the 1-based line. Writers are
atomic (nmt_bert.atomic): an interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from nmt_bert.atomic import atomic_file
from nmt_bert.errors import UserError

BOM = "\ufeff"
# What a truncated or damaged ".gz" file raises while being read.
CORRUPT_GZIP = (gzip.BadGzipFile, EOFError, zlib.error)


def check_readable_file(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: {what} is not readable")
    return path


def iter_lines(path: Path, what: str = "file") -> Iterator[str]:
    """Yield the lines of a UTF-8 text file without their line endings.

    Only "\\n" ends a line (with an optional "\\r" before it), so Unicode line separators
    inside a sentence never split it. A leading BOM is dropped. Invalid UTF-8 or a NUL byte
    raises UserError naming the file and line. A ".gz" file is decompressed on the fly.
    """
    path = check_readable_file(path, what)
    number = 0
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                yield decode_line(raw, path, number)
    except CORRUPT_GZIP as err:
        raise UserError(f"{path}:{number + 1}: corrupt gzip data ({err})") from None


def read_lines(path: Path, what: str = "file") -> list[str]:
    return list(iter_lines(path, what))


def count_lines(path: Path) -> int:
    """Lines as `iter_lines` sees them (a last line without "\\n" counts), without decoding."""
    count, last = 0, b"\n"
    try:
        with _open_binary(Path(path)) as handle:
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except CORRUPT_GZIP as err:
        raise UserError(f"{path}: corrupt gzip data ({err})") from None
    return count + (last != b"\n")


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def decode_line(raw: bytes, path: Path | str, number: int) -> str:
    if b"\x00" in raw:
        raise UserError(f"{path}:{number}: contains a NUL byte (binary file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}:{number}: invalid UTF-8 ({err.reason} at byte {err.start})"
        ) from None
    if number == 1 and text.startswith(BOM):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_file(path) as handle:
        for line in lines:
            handle.write(line + "\n")
