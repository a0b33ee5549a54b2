"""The run's two logs: train.log for people (mirrored on the console), metrics.jsonl for tools."""

from __future__ import annotations

import json
import time

from rich.console import Console

from nmt_bert.atomic import atomic_file
from nmt_bert.train.run_dir import RunDir


class RunLog:
    """Writes human lines to train.log (and the console) and records to metrics.jsonl."""

    def __init__(self, run: RunDir, console: Console | None = None, enabled: bool = True):
        self.run, self.enabled = run, enabled
        self.console = console or Console(stderr=True)

    def info(self, message: str, echo: bool = True) -> None:
        """Append `message` to train.log; print it on the console too unless not `echo`."""
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.run.log_file, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")
        if echo:  # soft_wrap: a log file or CI console gets each message on one line
            self.console.print(message, highlight=False, soft_wrap=True)

    def record(self, **fields) -> None:
        if not self.enabled:
            return
        with open(self.run.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")

    def last_record_time(self) -> float | None:
        """Wall-clock time of the last metrics record (how far a killed session got)."""
        if not self.run.metrics.exists():
            return None
        for line in reversed(self.run.metrics.read_text(encoding="utf-8").splitlines()):
            try:
                return float(json.loads(line)["time"])
            except (ValueError, KeyError, TypeError):
                continue
        return None

    def drop_after(self, step: int) -> int:
        """Remove records of steps after `step` (replayed after a resume); return how many."""
        if not self.enabled or not self.run.metrics.exists():
            return 0
        lines = self.run.metrics.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and _step(line) <= step]
        if len(kept) != len(lines):
            with atomic_file(self.run.metrics) as f:
                f.write("".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", -1))
    except (ValueError, TypeError, AttributeError):
        return -1  # a damaged line (a kill mid-write) is kept as it is
