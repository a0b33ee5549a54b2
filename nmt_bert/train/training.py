"""`nmt-bert train`: a new run or a resumed one, written by one process, stopped cleanly."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from rich.console import Console

from nmt_bert.train import distributed as dist
from nmt_bert.config import Config
from nmt_bert.devices import resolve_device
from nmt_bert.errors import UserError
from nmt_bert.data.prepared_dir import reconcile_encoder
from nmt_bert.train.run_dir import RunDir
from nmt_bert.train.run_log import RunLog
from nmt_bert.train.budget import TimeBudget
from nmt_bert.train.run_setup import build, seed_everything
from nmt_bert.train.trainer import Trainer

__all__ = ["Trainer", "train"]


def train(data_dir: Path | None, run_dir: Path, config: Config | None, device: str = "auto",
          resume: bool = False) -> Path:
    """Train a new run (data_dir + config) or resume one; returns the run directory.

    One process writes a run: the run's lock is held throughout (rank 0 under torchrun).
    With train.max_minutes the budget's clock starts here (budget.py).
    """
    started = time.perf_counter()
    run = RunDir(run_dir)
    dist.init()
    try:
        if not resume:
            config = reconcile_encoder(config, Path(data_dir))
            if dist.is_rank0():
                run.check_new(data_dir)  # before creating anything
        with run.lock() if dist.is_rank0() else contextlib.nullcontext():
            _train_locked(run, data_dir, config, device, resume, started)
    finally:
        dist.cleanup()
    return run.path


def _train_locked(run: RunDir, data_dir: Path | None, config: Config | None, device: str,
                  resume: bool, started: float) -> None:
    if resume:
        config, data_dir, _ = run.read()
        last = run.resumable()
        if last is None:
            raise UserError(f"{run.path}: no resumable checkpoint yet (the run stopped before "
                            f"its first checkpoint); start it again: nmt-bert train --data "
                            f"{data_dir} --out {run.path}")
    elif dist.is_rank0():
        run.create(data_dir, config, log=Console(stderr=True).print)
    dist.barrier()
    log = RunLog(run, enabled=dist.is_rank0())
    torch_device = dist.rank_device(resolve_device(device))
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    setup = build(run, Path(data_dir), config, last if resume else None, log)
    trainer = Trainer(setup, run, torch_device, log)
    if config.train.max_minutes > 0:
        trainer.schedule.budget = TimeBudget(config.train.max_minutes)
        trainer.schedule.budget.started = started
    if resume:
        trainer.restore(last)
    session = time.perf_counter()
    try:
        # A scheduler's SIGTERM gets the same clean stop as Ctrl-C: checkpoint, then exit.
        with trainer.interrupts.installed():
            trainer.run()
            if dist.is_rank0():
                trainer.finish(time.perf_counter() - session)
    except KeyboardInterrupt:
        if trainer.optimizer is not None:
            trainer.save("last", {"interrupted": True}, resumable=True)
            log.info(f"interrupted: checkpoint saved; continue with --resume {run.path}")
        raise
