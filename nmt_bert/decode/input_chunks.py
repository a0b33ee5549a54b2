"""The `translate` command's input as chunks of lines, read lazily so memory stays bounded.

A file is read `chunk_lines` lines at a time. A pipe or terminal is read as lines arrive:
when no further input is immediately available (a pause of `PAUSE_SECONDS`) and at least
`buffer_lines` lines are waiting, those lines form a chunk at once, so a program that holds
a pipe open and writes one line gets its translation back without closing the pipe.

Lines are decoded as strictly as `textio.iter_lines` decodes files; errors name
`<stdin>:LINE` (or the device's path and line).
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from nmt_bert.textio import check_readable_file, decode_line, iter_lines

# How long a pipe must stay quiet before the lines it has sent are translated. Long enough
# that lines written back to back (a shell loop, `cat`) still share a chunk, short enough
# that nobody waits on it.
PAUSE_SECONDS = 0.05
READ_BYTES = 1 << 16
STDIN = "<stdin>"


def chunked(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of `size` lines (the last one shorter); nothing for no lines."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class FdLines:
    """Lines (bytes with their "\\n") read from a file descriptor through our own buffer.

    Reading with os.read rather than a buffered file object keeps `select` truthful: no line
    can sit in a hidden buffer while the descriptor looks idle.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = bytearray()
        self.ended = False

    def next_line(self, timeout: float | None) -> bytes | None:
        """The next line; b"" at the end of input; None if none came within `timeout` s.

        `timeout` None waits as long as it takes. A last line without "\\n" is returned
        at the end of input.
        """
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line = bytes(self.pending[: end + 1])
                del self.pending[: end + 1]
                return line
            if self.ended:
                line = bytes(self.pending)
                self.pending.clear()
                return line
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
            try:
                data = os.read(self.fd, READ_BYTES)
            except BlockingIOError:  # a descriptor a parent left non-blocking
                continue
            if data:
                self.pending += data
            else:
                self.ended = True


def stream_chunks(reader: FdLines, chunk_lines: int, buffer_lines: int,
                  pause: float = PAUSE_SECONDS, name: str = STDIN) -> Iterator[list[str]]:
    """Chunks of at most `chunk_lines` decoded lines from `reader` (errors name `name`).

    A partial chunk is handed over as soon as it holds `buffer_lines` lines (or more) and no
    further line arrives within `pause` seconds; the end of input hands over the rest.
    """
    chunk: list[str] = []
    number = 0
    while True:
        raw = reader.next_line(pause if len(chunk) >= buffer_lines else None)
        if raw is None:  # the input paused: translate what has arrived
            yield chunk
            chunk = []
            continue
        if raw == b"":
            break
        number += 1
        chunk.append(decode_line(raw, name, number))
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def input_chunks(source: Path | None, chunk_lines: int,
                 buffer_lines: int) -> Iterator[list[str]]:
    """Chunks of the input file `source`, or of stdin when it is None.

    A regular file is read `chunk_lines` lines at a time; stdin, and a path that is a pipe
    or a device (`<(command)`, /dev/stdin), as lines arrive (`stream_chunks`).
    """
    if source is None:
        return stdin_chunks(chunk_lines, buffer_lines)
    source = check_readable_file(source, "input file")
    if source.is_file():
        return chunked(iter_lines(source, "input file"), chunk_lines)
    return _device_chunks(source, chunk_lines, buffer_lines)


def _device_chunks(source: Path, chunk_lines: int, buffer_lines: int) -> Iterator[list[str]]:
    fd = os.open(source, os.O_RDONLY)
    try:
        yield from stream_chunks(FdLines(fd), chunk_lines, buffer_lines, name=str(source))
    finally:
        os.close(fd)


def stdin_chunks(chunk_lines: int, buffer_lines: int,
                 stdin: IO | None = None) -> Iterator[list[str]]:
    """Chunks of standard input: as lines arrive where stdin has a descriptor (a pipe, a
    terminal, a redirected file), else (an in-memory stdin) read line by line."""
    stdin = sys.stdin if stdin is None else stdin
    fd = None
    if os.name == "posix":  # select() takes pipes and terminals only on POSIX systems
        try:
            fd = stdin.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: OSError
            fd = None
    if fd is not None:
        return stream_chunks(FdLines(fd), chunk_lines, buffer_lines)
    return chunked(_readline_lines(stdin), chunk_lines)


def _readline_lines(stdin: IO) -> Iterator[str]:
    stream = getattr(stdin, "buffer", stdin)
    number = 0
    while raw := stream.readline():
        number += 1
        if isinstance(raw, str):  # a text-only stdin (embedding applications)
            raw = raw.encode("utf-8", errors="surrogateescape")
        yield decode_line(raw, STDIN, number)
