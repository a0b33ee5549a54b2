"""Stage-1 step time with the cores to itself and beside another job, by OpenMP wait policy.

A training step on a machine another job also uses: the product's stage-1 step (system a of
train_throughput.py, cached encoder states, the same batches) is timed on a quiet machine
and beside a second process that keeps `--load-threads` torch threads busy with matmuls
(an ordinary job: torch's default waiting), once per wait setting:

  default   GNU OpenMP's own spin-wait (300,000 turns before a thread sleeps)
  spin      GOMP_SPINCOUNT=nmt_bert.cpu.SPIN_COUNT, what the nmt-bert command sets
  passive   OMP_WAIT_POLICY=PASSIVE (threads sleep at once)
  spin:N    GOMP_SPINCOUNT=N (another spin-wait to weigh against these)

    python bench/shared_cores.py --data /tmp/prep-bible --recipe recipes/fast-cpu.yaml --threads 2
    python bench/shared_cores.py --smoke

The loss after the timed steps is printed too: the wait policy must not change it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common
from _measure import measure

from nmt_bert.cpu import SPIN_COUNT

SETTINGS = {"default": {}, "spin": {"GOMP_SPINCOUNT": str(SPIN_COUNT)},
            "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}
WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
LOAD = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a * 1e-3)
"""


def start_load(threads: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    return subprocess.Popen([sys.executable, "-c", LOAD, str(threads)], env=env)


def setting_env(setting: str) -> dict:
    """The environment of a wait setting: one of SETTINGS, or spin:N."""
    if setting.startswith("spin:") and setting[5:].isdigit():
        return {"GOMP_SPINCOUNT": setting[5:]}
    return SETTINGS[setting]


def timed(args, config_dict: dict, cache_dir: Path, setting: str) -> dict:
    saved = {k: os.environ.pop(k) for k in WAIT_VARIABLES if k in os.environ}
    os.environ.update(setting_env(setting))  # read by the child's OpenMP runtime as it loads
    try:
        return measure("train_throughput:nmt_bert_system",
                       {"system": "a", "data": str(args.data), "config": config_dict,
                        "warmup": args.warmup, "steps": args.steps, "device": "cpu",
                        "cache_dir": str(cache_dir)}, args.threads)
    finally:
        for k in WAIT_VARIABLES:
            os.environ.pop(k, None)
        os.environ.update(saved)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, help="nmt-bert recipe")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--load-threads", type=int, default=2, help="threads of the other job (0: the quiet runs only)")
    p.add_argument("--settings", default="default,spin,passive", help="wait settings to run")
    args = p.parse_args()
    for setting in args.settings.split(","):
        try:
            setting_env(setting)
        except KeyError:
            p.error(f"--settings: unknown {setting!r} (one of {', '.join(SETTINGS)}, or spin:N)")
    common.quiet()
    if common.apply_smoke(args):
        args.steps, args.warmup, args.settings = min(args.steps, 4), min(args.warmup, 1), "spin"
    if args.data is None:
        p.error("--data is required (or --smoke)")
    config = common.load_run_config(args, args.recipe)
    from nmt_bert.config import config_to_dict

    config_dict = config_to_dict(config)
    cache_dir = Path(tempfile.mkdtemp(prefix="nmt-bert-bench-cache-"))
    rows, results = [], {}
    try:
        measure("train_throughput:build_cache", {"data": str(args.data), "config": config_dict,
                                                 "cache_dir": str(cache_dir), "device": "cpu"},
                args.threads)
        for loaded in (False, True) if args.load_threads else (False,):
            load = start_load(args.load_threads) if loaded else None
            try:
                for setting in args.settings.split(","):
                    r = timed(args, config_dict, cache_dir, setting)
                    key = f"{'loaded' if loaded else 'quiet'}/{setting}"
                    results[key] = r
                    rows.append({"run": key, "s_step": r["s_per_step"], "tok_s": r["tokens_per_s"],
                                 "loss": r["last_loss"]})
                    print(f"{key}: {r['s_per_step']:.3f} s/step, loss {r['last_loss']:.5f}",
                          flush=True)
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    common.print_table(rows, [("run", "run", ""), ("s_step", "s/step", ".3f"),
                              ("tok_s", "tokens/s", ",.0f"), ("loss", "loss after", ".5f")])
    common.write_json(args.out, {"benchmark": "shared_cores", "machine": common.machine_info("cpu"),
                                 "threads": args.threads, "load_threads": args.load_threads,
                                 "spin_count": SPIN_COUNT, "steps": args.steps, "runs": results})


if __name__ == "__main__":
    main()
