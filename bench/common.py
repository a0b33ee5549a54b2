"""Shared pieces of the benchmark scripts: arguments, machine facts, data, batches, JSON.

Every script prints figures and writes a JSON result; none asserts a timing. Figures from a
busy machine are still written, with the load average recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SMOKE_ROOT = Path(os.environ.get("NMT_BERT_BENCH_SMOKE", "/tmp/nmt-bert-bench-smoke"))
# --smoke adds these to nmt_bert.tiny.TINY_MODEL (the tiny decoder the tests use too).
SMOKE_EXTRA_SETS = ["train.batch_tokens=800", "decode.batch_size=8"]
# The smoke runs' training: long enough for the word-for-word task to be learnt a little.
SMOKE_TRAIN_SETS = ("train.stage1_steps=200", "train.stage2_steps=20",
                    "train.stage2_warmup_steps=5", "train.eval_every=220", "train.log_every=50",
                    "train.threads=1")


# --- arguments ----------------------------------------------------------------------------
def parser(description: str, data: bool = True) -> argparse.ArgumentParser:
    """The options every script shares: --data --encoder --threads --device --out --set --smoke."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if data:
        p.add_argument("--data", type=Path, help="prepared data directory (nmt-bert prepare)")
    p.add_argument("--encoder", default="multilingual-e5-small",
                   help="encoder name; must be the one the data was prepared with")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--out", type=Path, required=False, help="JSON result file")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="nmt-bert config override (section.key=value), as for `nmt-bert train`")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny encoder, tiny data, seconds of work (assets under {SMOKE_ROOT})")
    return p


def smoke_assets() -> dict[str, Path]:
    """Tiny encoder, tiny prepared corpus and a tiny trained run, built once under SMOKE_ROOT."""
    from nmt_bert.tiny import build_tiny_encoder, tiny_config, write_tiny_corpus

    root = SMOKE_ROOT
    paths = {"encoder": root / "encoder", "data": root / "data", "run": root / "run",
             "src": root / "corpus" / "corpus.es", "tgt": root / "corpus" / "corpus.en"}
    if not (paths["encoder"] / "config.json").exists():
        build_tiny_encoder(paths["encoder"])
    if not paths["src"].exists():
        write_tiny_corpus(root / "corpus", pairs=800)
    config = tiny_config(paths["encoder"], *SMOKE_TRAIN_SETS)
    if not (paths["data"] / "manifest.json").exists():
        from rich.console import Console

        from nmt_bert.data.corpora import CorpusSpec
        from nmt_bert.data.prepare import prepare

        prepare(CorpusSpec(src=paths["src"], tgt=paths["tgt"]), paths["data"], config,
                console=Console(file=open(os.devnull, "w")))
    from nmt_bert.train.run_dir import RunDir

    if not RunDir(paths["run"]).finished:
        import shutil

        from nmt_bert.train.training import train

        shutil.rmtree(paths["run"], ignore_errors=True)  # ours: an unfinished smoke run
        train(paths["data"], paths["run"], config, device="cpu")
    return paths


def smoke_affine_run() -> Path:
    """The smoke run's twin with model.adapter=affine (exportable to CTranslate2), built once."""
    paths = smoke_assets()
    run = SMOKE_ROOT / "run-affine"
    from nmt_bert.train.run_dir import RunDir

    if not RunDir(run).finished:
        import shutil

        from nmt_bert.tiny import tiny_config
        from nmt_bert.train.training import train

        config = tiny_config(paths["encoder"], *SMOKE_TRAIN_SETS, "model.adapter=affine")
        shutil.rmtree(run, ignore_errors=True)  # ours: an unfinished smoke run
        train(paths["data"], run, config, device="cpu")
    return run


def apply_smoke(args: argparse.Namespace) -> dict[str, Path] | None:
    """In --smoke mode point --data/--encoder at the tiny assets and add the tiny decoder."""
    if not args.smoke:
        return None
    paths = smoke_assets()
    from _measure import IN_PROCESS_ENV

    os.environ[IN_PROCESS_ENV] = "1"  # only the code paths are exercised, not figures taken
    if args.threads == 0:
        args.threads = 1  # tiny ops on a shared machine: more threads only add contention
    if getattr(args, "data", None) is None and hasattr(args, "data"):
        args.data = paths["data"]
    args.encoder = str(paths["encoder"])
    from nmt_bert.tiny import TINY_MODEL

    args.sets = [*TINY_MODEL, *SMOKE_EXTRA_SETS, *args.sets]
    return paths


def load_run_config(args: argparse.Namespace, recipe: Path | None = None):
    """Defaults <- recipe <- --set, with model.encoder = --encoder; checked against --data."""
    from nmt_bert.config import load_config
    from nmt_bert.data.prepared_dir import reconcile_encoder
    from nmt_bert.errors import UserError

    config = load_config(recipe, [f"model.encoder={args.encoder}", *args.sets])
    try:
        return reconcile_encoder(config, args.data)  # the product's own check
    except UserError as err:
        sys.exit(str(err))


# --- machine ------------------------------------------------------------------------------
def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, memory, library versions, threads, GPU and the load right now."""
    import torch
    import transformers

    cpu, physical = platform.processor() or "unknown", set()
    try:
        core = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                cpu = value
            elif key in ("physical id", "core id"):
                core[key] = value
                if len(core) == 2:
                    physical.add((core["physical id"], core["core id"]))
                    core = {}
    except OSError:
        pass
    mem_gib = None
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        mem_gib = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "physical_cores": len(physical) or None,
        "memory_gib": mem_gib,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "bf16_cpu": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def quiet() -> None:
    """No weight-loading progress bars, no transformers deprecation warning per training step."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)


def set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def device_of(name: str):
    from nmt_bert.devices import resolve_device

    return resolve_device(name)


def sync(device) -> None:
    """Wait for queued GPU work so wall-clock timings mean what they say."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


# --- data ---------------------------------------------------------------------------------
def token_data(data_dir: Path, split: str = "train", lookup: np.ndarray | None = None):
    """A prepared split as nmt-bert TokenData; `lookup` maps encoder ids to embedding rows
    (None: identity, i.e. the unpruned encoder a Hugging Face peer uses)."""
    from nmt_bert.model.encoders import load_local_tokenizer

    from nmt_bert.train.batches import TokenData
    from nmt_bert.data.prepared_dir import load_prepared

    prepared = load_prepared(data_dir)
    if lookup is None:
        lookup = np.arange(len(load_local_tokenizer(prepared.tokenizer_dir)), dtype=np.int64)
    return TokenData.from_dataset(prepared.split(split), lookup)


def batch_stream(data, batch_tokens: int, seed: int, accumulate: int = 1,
                 plan=None) -> Iterator[list[np.ndarray]]:
    """The example indices of each optimizer step, exactly as `Trainer.next_batch` draws them
    in a single process within one stage: token_batches(seed, epoch, plan) in order, epoch
    after epoch, grouped into `accumulate` batches per step (`plan` as the stage cuts them,
    nmt_bert.train.batches.stage_plan; collate each with `plan.multiples`). No plan: exact
    lengths sorted by source, the batches of earlier trees."""
    from nmt_bert.train.batches import BatchPlan, token_batches

    plan = plan or BatchPlan()

    def batches() -> Iterator[np.ndarray]:
        epoch = 0
        while True:
            yield from token_batches(data.src_lens, data.tgt_lens, batch_tokens, seed, epoch,
                                     sort_by=plan.sort_by, multiples=plan.multiples)
            epoch += 1

    flat = batches()
    while True:
        yield [next(flat) for _ in range(accumulate)]


def read_lines(path: Path, limit: int = 0) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return lines[:limit] if limit > 0 else lines


def reference_sets(data_dir: Path) -> dict[str, list[Path]]:
    """Named reference sets of the test split: each reference alone, then all together.

    For the bundled Bible corpus the first reference is the WEB, the second the KJV.
    """
    from nmt_bert.data.prepared_dir import load_prepared

    prepared = load_prepared(data_dir)
    refs = prepared.references("test")
    bundled = any(i.get("kind") == "bundled" for i in prepared.manifest.get("inputs", []))
    names = ["WEB", "KJV"] if bundled else [f"ref{i + 1}" for i in range(len(refs))]
    sets = {name: [ref] for name, ref in zip(names, refs)}
    if len(refs) > 1:
        sets["+".join(names)] = refs
    return sets


# --- output -------------------------------------------------------------------------------
def write_json(path: Path | None, result: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print `rows` as an aligned text table; columns are (key, header, format spec).

    Columns with an empty format spec hold text and are left-aligned; the others right.
    """
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append([("-" if row.get(k) is None else format(row[k], f)) for k, _, f in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if not columns[i][2] else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
