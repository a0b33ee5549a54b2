"""Run one measured system in a fresh process, so its peak memory is its own.

Peak RSS (`ru_maxrss`) is a per-process high-water mark: two systems measured in one process
would report the larger of the two. So each system runs here, in a new interpreter:

    measure("train_throughput:nmt_bert_system", {"system": "a", ...})
        -> the function's dict + peak_rss_mb (+ cuda_peak_mb)

and each CLI command through `run_command`, which reads the child's own rusage (wait4).

As a script (the child side): python _measure.py MODULE:FUNCTION KWARGS.json RESULT.json
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(target: str, kwargs: dict, threads: int = 0) -> dict:
    """Call `target` ("module:function", a module in bench/) with `kwargs` in a new process.

    The child's stdout/stderr pass through. Raises RuntimeError when the child fails.
    """
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-") as tmp:
        args, result = Path(tmp) / "kwargs.json", Path(tmp) / "result.json"
        args.write_text(json.dumps({"kwargs": kwargs, "threads": threads}, default=str))
        proc = subprocess.run([sys.executable, str(Path(__file__)), target, str(args), str(result)])
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"{target} {kwargs.get('system', '')} failed (exit {proc.returncode})")
        return json.loads(result.read_text())


def run_command(cmd: list[str], log: Path | None = None, env: dict | None = None) -> dict:
    """Run a command; its wall time, exit code and peak RSS (its own, from wait4).

    Output goes to `log` when given (else passes through).
    """
    out = open(log, "w") if log is not None else None
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if out is not None:
        out.close()
    return {"seconds": round(seconds, 2), "returncode": proc.returncode,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # Linux reports KiB


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(target: str, args_path: str, result_path: str) -> None:
    sys.path.insert(0, str(HERE))
    spec = json.loads(Path(args_path).read_text())
    import torch

    import common

    common.quiet()
    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    module, function = target.split(":")
    fn = getattr(importlib.import_module(module), function)
    rss_before = peak_rss_mb()  # interpreter + torch + the module's imports
    result = fn(**spec["kwargs"])
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_after_imports_mb"] = rss_before
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    Path(result_path).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
