"""Run one measured system in a fresh process, so its peak memory is its own.

Peak RSS is a per-process high-water mark: two systems measured in one process would report
the larger of the two. So each system runs here, in a new interpreter:

    measure("train_throughput:nmt_bert_system", {"system": "a", ...})
        -> the function's dict + peak_rss_mb (+ cuda_peak_mb)

and each CLI command through `run_command`. Under --smoke, where only the code paths are
exercised, `measure` calls the function in the calling process instead (IN_PROCESS_ENV).

Linux carries `ru_maxrss` across exec: a process started from a 2 GB parent reports at least
2 GB, whatever it used itself. So a child reads its own peak from /proc/self/status (VmHWM,
which belongs to the new address space), and `run_command` starts commands through a small
launcher that forks them, whose rusage then holds only the command's own peak.

As a script (the child side): python _measure.py MODULE:FUNCTION KWARGS.json RESULT.json
The launcher: python _measure.py --spawn RESULT.json COMMAND...
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


# Set (by --smoke) where only the code paths are being exercised, not figures taken: the
# systems then run in this process, which saves a torch import per system.
IN_PROCESS_ENV = "NMT_BERT_BENCH_IN_PROCESS"


def measure(target: str, kwargs: dict, threads: int = 0) -> dict:
    """Call `target` ("module:function", a module in bench/) with `kwargs` in a new process.

    The child's stdout/stderr pass through. Raises RuntimeError when the child fails.
    """
    if os.environ.get(IN_PROCESS_ENV):
        return _call(target, kwargs, threads)
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
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-") as tmp:
        result = Path(tmp) / "rusage.json"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__)), "--spawn", str(result), *cmd],
                              stdout=out, stderr=subprocess.STDOUT if out else None,
                              env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - start
        peak = json.loads(result.read_text())["peak_rss_mb"] if result.exists() else None
    if out is not None:
        out.close()
    return {"seconds": round(seconds, 2), "returncode": proc.returncode, "peak_rss_mb": peak}


def _spawn(result_path: str, cmd: list[str]) -> None:
    """Fork and exec `cmd` from this small process, wait, write its own peak RSS, exit as it did."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    Path(result_path).write_text(json.dumps({"peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}))
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(target: str, args_path: str, result_path: str) -> None:
    spec = json.loads(Path(args_path).read_text())
    result = _call(target, spec["kwargs"], spec["threads"])
    Path(result_path).write_text(json.dumps(result, default=str))


def _call(target: str, kwargs: dict, threads: int) -> dict:
    """Torch is set up only for systems that import it: a CTranslate2 system runs without it,
    as `translate` on an export does, so its peak is what serving it costs."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    if threads > 0:  # read by torch when (and if) a system imports it
        os.environ["OMP_NUM_THREADS"] = str(threads)
    import common

    common.quiet()
    module, function = target.split(":")
    fn = getattr(importlib.import_module(module), function)
    if threads > 0 and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    rss_before = peak_rss_mb()  # interpreter + the module's imports
    result = fn(**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_after_imports_mb"] = rss_before
    torch = sys.modules.get("torch")
    result["torch_imported"] = torch is not None
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


if __name__ == "__main__":
    if sys.argv[1] == "--spawn":
        _spawn(sys.argv[2], sys.argv[3:])
    else:
        _child(*sys.argv[1:4])
