"""The CPU cores this process may use, how its threads share them, and the memory it hands
back (torch-free: export serving asks it too)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's affinity mask (a container's or taskset's share), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# OpenMP threads that finish their share of a parallel region spin, waiting for the next
# one, for GNU OpenMP's default of 300,000 turns before they sleep. On a machine whose cores
# another job also wants, that spinning takes the cores the other threads need; too short a
# spin makes every parallel region on a quiet machine wake sleeping threads. Fast recipe,
# stage-1 steps, 2 cores (bench/shared_cores.py; s/step quiet / beside a two-thread job):
#   AMD EPYC:        default 0.47 / 1.77-2.31, 2,000 turns 0.47 / 0.93-0.98
#   Intel Xeon AMX:  default 0.15 / 0.36-1.65, 2,000 turns 0.19 / 0.33-0.38,
#                    20,000 turns 0.155 / 0.60-0.62, 100,000 turns 0.155 / 1.53-1.79
# (the Intel figures paired within one run; 5,000 turns fell between 2,000 and 20,000 both
# quiet and loaded). 20,000 keeps the quiet speed (on the AMD host 2,000 already did; 20,000
# is not measured there); beside another job it is 1.6-1.9x slower than 2,000 turns, still
# faster than the default's slow runs. A time-budgeted run ends inside its budget either
# way. The results are the same to the bit: only the waiting changes. A machine that is
# always shared does better with GOMP_SPINCOUNT=2000.
SPIN_COUNT = 20000


def share_cores_politely(environ: dict | None = None) -> None:
    """Give OpenMP a bounded spin-wait unless the user chose a wait policy. Only an effect
    before torch is first imported (the OpenMP runtime reads it once, when it loads)."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)


# oneDNN (torch's CPU kernels for bf16 matmuls) keeps a compiled primitive for each matmul
# shape it has seen, least recently used out first. With a new shape nearly every step, a
# cache of 1,024 only grew the heap (about 15 MB a step; fast recipe, peak at step 150:
# 3,306 MB against 2,058 MB with 64 kept). Stage 1 now rounds its batches' lengths
# (`train.stage1_*_multiple`), so its few dozen shapes come back, and kept kernels pay:
# fast recipe, stage-1 steps on 2 cores of an Intel Xeon with AMX, 15,335 tok/s with 1,024
# kept, 13,508 with 512, 10,894 with 256, 11,067 with 64, for about 300 MB more resident
# memory than 64 (1,624 against 1,300 MB). A stage of exact lengths (stage 2) fills the
# cache with kernels used once: more memory, no speed (bench/README.md, "Batch shapes that
# come back"). ONEDNN_PRIMITIVE_CACHE_CAPACITY=64 trades the speed back for the memory.
PRIMITIVE_CACHE = 1024


def bound_kernel_cache(environ: dict | None = None) -> None:
    """Keep oneDNN's primitive cache to PRIMITIVE_CACHE entries unless the user sized it.
    oneDNN reads the variable when it first builds a primitive, so this must run before the
    first bf16 matmul, not before torch loads."""
    environ = os.environ if environ is None else environ
    if not any(k in environ for k in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY",
                                      "DNNL_PRIMITIVE_CACHE_CAPACITY")):
        environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(PRIMITIVE_CACHE)


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's `malloc_trim`; elsewhere
    nothing). glibc keeps what a program frees for its next allocations, so a large object
    built from many small ones (a 250k-piece tokenizer: ~300 MB) stays in the process's
    resident size after it is gone unless trimmed. One call costs milliseconds: for after
    such an object is dropped, not for every step."""
    import ctypes

    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the symbols already loaded
    except (OSError, TypeError):  # no such handle on this platform
        return
    if trim is not None:
        trim(0)
