"""Stage-1 memory over a run: resident memory by kind at chosen steps, per oneDNN cache size.

A throughput run's 12 steps show a peak, not a trend. This one runs the product's stage-1
step (`Trainer.train_step()` from the state cache, as train_throughput's system a) for
--steps steps, each configuration in its own process, and reads /proc/self/status at the
--marks steps: VmRSS, VmHWM (the peak so far), RssAnon (heap) and RssFile (file-backed
pages, e.g. a mapped file's). `--primitive-cache` runs one process per oneDNN primitive
cache size ("product" is whatever nmt-bert sets, nmt_bert/cpu.py; a number is set in the
child before its first matmul, the user's choice that nmt-bert leaves alone).

    python bench/stage1_memory.py --data /tmp/prep-bible --recipe recipes/fast-cpu.yaml \\
        --threads 2 --steps 150 --primitive-cache product,1024
    python bench/stage1_memory.py --smoke
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import common
from _measure import measure

KINDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def memory_now() -> dict[str, float]:
    """This process's resident memory by kind, in MB (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in KINDS:
                out[key] = round(int(value.split()[0]) / 1024, 1)  # kB
    return out


def memory_curve(data: str, config: dict, cache_dir: str, steps: int, marks: list[int],
                 primitive_cache: str) -> dict:
    """The child: `steps` stage-1 steps from the cache, memory at each mark."""
    if primitive_cache != "product":  # before the first oneDNN primitive is built
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = primitive_cache
    import torch

    from nmt_bert.config import config_from_dict
    from nmt_bert.train.training import Trainer
    from train_throughput import _setup

    cfg = config_from_dict(config)
    cfg.train.cache_encoder, cfg.train.cache_dir = True, str(cache_dir)
    curve, start = [], None
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-run-") as tmp:
        setup, log = _setup(data, cfg, Path(tmp))
        trainer = Trainer(setup, log.run, torch.device("cpu"), log)
        trainer.begin_stage(1)
        curve.append({"step": 0, **memory_now()})
        for step in range(1, steps + 1):
            if step == 3:
                start = time.perf_counter()  # the first two steps build the optimizer state
            trainer.train_step()
            if step in marks:
                curve.append({"step": step, **memory_now()})
        seconds = time.perf_counter() - start if start else 0.0
    return {"primitive_cache": primitive_cache,
            "capacity": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "oneDNN default"),
            "curve": curve, "s_per_step": round(seconds / max(steps - 2, 1), 4)}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, help="nmt-bert recipe")
    p.add_argument("--steps", type=int, default=150, help="stage-1 steps per configuration")
    p.add_argument("--marks", default="12,30,60,100,150", help="steps at which memory is read")
    p.add_argument("--primitive-cache", default="product,1024",
                   help="comma-separated oneDNN primitive cache sizes, or 'product'")
    p.add_argument("--cache-dir", type=Path,
                   help="encoder-state cache to reuse or build (default: a temporary directory)")
    args = p.parse_args()
    common.quiet()
    if common.apply_smoke(args):
        args.steps, args.marks = min(args.steps, 6), "2,6"
    if args.data is None:
        p.error("--data is required (or --smoke)")
    if not Path("/proc/self/status").exists():
        p.error("reads /proc/self/status: Linux only")
    common.set_threads(args.threads)
    from nmt_bert.config import config_to_dict

    config = config_to_dict(common.load_run_config(args, args.recipe))
    marks = sorted({int(m) for m in args.marks.split(",")} | {args.steps})
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="nmt-bert-bench-cache-"))
    results = {}
    try:
        cache = measure("train_throughput:build_cache",
                        {"data": str(args.data), "config": config, "cache_dir": str(cache_dir),
                         "device": "cpu"}, args.threads)
        print(f"cache: {cache['size_mb']} MiB in {cache['seconds']} s, "
              f"peak RSS while building {cache['peak_rss_mb']:.0f} MB")
        for size in args.primitive_cache.split(","):
            print(f"primitive cache {size}: {args.steps} steps ...", flush=True)
            results[size] = measure("stage1_memory:memory_curve",
                                    {"data": str(args.data), "config": config,
                                     "cache_dir": str(cache_dir), "steps": args.steps,
                                     "marks": marks, "primitive_cache": size}, args.threads)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"\n{'cache size':>14} {'step':>5} " + " ".join(f"{k:>8}" for k in KINDS) + "  s/step")
    for size, r in results.items():
        for point in r["curve"]:
            print(f"{size:>14} {point['step']:>5} "
                  + " ".join(f"{point[k]:>8.0f}" for k in KINDS) + f"  {r['s_per_step']}")
    common.write_json(args.out, {
        "benchmark": "stage1_memory", "machine": common.machine_info("cpu"),
        "threads": args.threads, "steps": args.steps, "data": str(args.data),
        "config": config, "cache_build": cache, "systems": results})


if __name__ == "__main__":
    main()
