"""Ctrl-C and SIGTERM during training: a clean stop that never splits an optimizer step.

Both signals raise KeyboardInterrupt at once, except while a step is held (the update, its
counters and its log line), where the interrupt waits for the step to complete. A checkpoint
written on the way out then never pairs updated weights with the step count from before.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupts:
    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def handle(self, signum, frame) -> None:
        if self.holding:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Defer SIGINT/SIGTERM to the end of the block; raise KeyboardInterrupt there."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Route SIGINT and SIGTERM here for the block (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
