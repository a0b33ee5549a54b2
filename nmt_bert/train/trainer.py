"""The two-stage trainer: one class owns a run's lifecycle from first step to finished.json.

Stage 1 trains adapter and decoder with the encoder frozen (read from the encoder-state
cache when enabled); stage 2 unfreezes the encoder with its own, smaller learning rate,
a fresh warmup and a reset optimizer (Imamura & Sumita 2019). Every `eval_every` steps: dev
loss and BLEU, a resumable `last` checkpoint and, when BLEU improves, `best`. At the end:
optional checkpoint averaging, the curves and the finished marker. How many steps a stage
takes, its learning rate and its evaluation points are its StageSchedule's
(stage_schedule.py): configured, or fitted to the time budget.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nmt_bert.train import distributed as dist
from nmt_bert.train.averaging import average_checkpoints, prune_snapshots
from nmt_bert.train.budget import TimeBudget
from nmt_bert.caches import encoder_states_dir
from nmt_bert.model.checkpoint import WEIGHTS, load_trainer_state, save_checkpoint
from nmt_bert.train.curves import plot_curves
from nmt_bert.train.batches import Batch, EpochBatches, stage_plan
from nmt_bert.devices import autocast_context
from nmt_bert.train.encoder_cache import EncoderCache, build_or_load
from nmt_bert.errors import UserError
from nmt_bert.train.interrupts import Interrupts
from nmt_bert.model.loss import label_smoothed_loss
from nmt_bert.train.optim import make_optimizer, set_lr
from nmt_bert.train.progress import TrainProgress
from nmt_bert.train.run_dir import RunDir
from nmt_bert.train.run_log import RunLog
from nmt_bert.train.run_setup import RunSetup, count_parameters
from nmt_bert.train.stage_schedule import StageSchedule
from nmt_bert.train.train_state import TrainState
from nmt_bert.train.validation import evaluate_dev


class Trainer:
    def __init__(self, setup: RunSetup, run: RunDir, device: torch.device, log: RunLog):
        self.setup, self.run_dir, self.device, self.log = setup, run, device, log
        self.cfg = setup.config.train
        self.model = setup.model.to(device)
        self.state = TrainState()
        self.optimizer: torch.optim.Optimizer | None = None
        self.cache: EncoderCache | None = None
        self.batches = EpochBatches(setup.train_data, self.cfg.batch_tokens, self.cfg.seed, dist.shard)
        self.interrupts = Interrupts()  # signals wait for the step in progress to complete
        self.schedule = StageSchedule(self.cfg, log.info)  # its budget: set by `train`
        dev = setup.dev_data
        self.schedule.dev_batches = (int(dev.src_lens.sum()) + int(dev.tgt_lens.sum())) \
            * max(1, self.cfg.valid_beam) / max(1, self.cfg.batch_tokens)

    @property
    def budget(self) -> TimeBudget | None:
        return self.schedule.budget

    def stage_steps(self, stage: int) -> int:
        return self.schedule.steps(self.state, stage)

    # --- stages -----------------------------------------------------------------------
    def begin_stage(self, stage: int) -> None:
        """Start `stage` from its first step: freezing, a fresh optimizer, the state cache."""
        self.state.stage, self.state.step = stage, 0
        self.schedule.begin(self.state)
        self.enter_stage(stage)
        self.schedule.set_deadline(self.state, stage)  # after the cache: its build counts

    def enter_stage(self, stage: int) -> None:
        self.model.freeze_encoder(stage == 1, embeddings_frozen=self.cfg.freeze_embeddings_stage2)
        self.model.freeze_pretrained_decoder(stage == 1 and self.cfg.stage1_decoder == "new")
        self.optimizer = make_optimizer(self.model, stage, self.cfg)
        self.ddp_model = dist.wrap(self.model, self.device)
        if self.cache is not None:  # stage 2 runs the encoder itself
            self.cache.close()
        self.cache = None
        if stage == 1 and self.cfg.cache_encoder:
            self.cache = dist.on_rank0_first(lambda: build_or_load(
                encoder_states_dir(self.cfg.cache_dir), self.model, self.setup.train_data, self.setup.fingerprint,
                self.cfg.cache_dtype, self.device, batch_tokens=self.cfg.cache_batch_tokens,
                log=self.log.info))
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.log.info(f"stage {stage}: {self.stage_steps(stage)} steps, encoder "
                      f"{'frozen' if stage == 1 else 'trainable'}, {trainable:,} trainable parameters"
                      + (", encoder states from cache" if self.cache else ""))

    # --- data -------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        return self.batches.next(self.state, stage_plan(self.cfg, self.state.stage))

    # --- one optimizer step -----------------------------------------------------------
    def train_step(self) -> dict:
        self.ddp_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = 0.0
        tokens = targets = 0
        micro = [self.next_batch() for _ in range(self.cfg.accumulate)]
        total_targets = sum(b.target_tokens for b in micro)
        for batch in micro:
            batch = batch.to(self.device)
            states = None
            if self.cache is not None:
                states = self.cache.gather(batch.index, batch.src_ids.size(1)).to(self.device)
            with autocast_context(self.device, self.cfg.precision, cpu_bf16=True):
                logits = self.ddp_model(batch.src_ids, batch.src_mask, batch.tgt_in, states)
                loss, nll = label_smoothed_loss(logits, batch.labels, self.cfg.label_smoothing)
            (loss / total_targets).backward()
            loss_sum, nll_sum = loss_sum + loss.item(), nll_sum + nll.item()
            tokens, targets = tokens + batch.tokens, targets + batch.target_tokens
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_norm)
        if not (math.isfinite(loss_sum) and math.isfinite(float(grad_norm))):
            self.state.skipped_steps += 1  # the update is dropped, the batch is consumed
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped": True, "tokens": tokens}
        set_lr(self.optimizer, self.schedule.factor(self.state, self.state.step + 1))
        self.optimizer.step()
        self.state.step += 1
        self.state.global_step += 1
        return {"loss": loss_sum / targets, "nll": nll_sum / targets, "tokens": tokens,
                "grad_norm": float(grad_norm), "lr": self.optimizer.param_groups[0]["lr"]}

    # --- checkpoints ------------------------------------------------------------------
    def trainer_state(self) -> dict:
        if self.budget is not None:
            self.state.seconds_spent, self.state.saved_at = self.budget.elapsed(), time.time()
        return {"state": asdict(self.state), "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state()}

    def save(self, name: str, meta: dict, resumable: bool) -> None:
        if not dist.is_rank0():
            return
        started = time.perf_counter()
        try:
            save_checkpoint(self.run_dir.checkpoint(name), self.model, self.setup.config,
                            self.setup.assets, {**meta, "step": self.state.global_step,
                                                "stage": self.state.stage},
                            self.trainer_state() if resumable else None)
        except OSError as err:  # a full disk, most often: say how to go on from here
            where = err.filename or self.run_dir.checkpoint(name)
            then = (f"continue with --resume {self.run_dir.path}" if self.run_dir.resumable()
                    else f"start again with --out {self.run_dir.path}")
            raise UserError(f"{where}: cannot write the checkpoint ({err.strerror or err}); "
                            f"free space, then {then}") from None
        self.schedule.save_seconds = max(self.schedule.save_seconds, time.perf_counter() - started)

    def restore(self, path: Path) -> None:
        saved = load_trainer_state(path)
        self.state = TrainState(**saved["state"])
        if self.budget is not None:  # the time spent so far counts, up to the last log line
            lost = max(0.0, (self.log.last_record_time() or 0.0) - self.state.saved_at)
            self.budget.spent_before = self.state.seconds_spent + min(lost, 24 * 3600)
        replayed = self.log.drop_after(self.state.global_step)
        self.enter_stage(self.state.stage)
        self.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        self.log.info(f"resumed at stage {self.state.stage}, step {self.state.step} "
                      f"(epoch {self.state.epoch}, batch {self.state.position})"
                      + (f"; {replayed} records after the checkpoint dropped" if replayed else ""))

    def evaluate(self) -> bool:
        """Dev loss and BLEU, checkpoints; returns True when early stopping says stop."""
        began = time.perf_counter()
        digest = dist.check_replicas(self.model)
        if digest is not None:
            self.log.info(f"{dist.world_size()} replicas identical (weights sha256 {digest[:16]})")
        scores = evaluate_dev(self.model, self.setup, self.device, self.cfg.valid_beam)
        if self.state.stage == 2 and self.state.best_bleu > 1 and \
                scores["bleu"] < self.cfg.collapse_ratio * self.state.best_bleu:
            self.roll_back(f"dev BLEU collapsed from {self.state.best_bleu:.2f} to {scores['bleu']:.2f}")
            return False
        self.state.evals_in_stage += 1
        improved = scores["bleu"] > self.state.best_bleu
        if improved:
            self.state.best_bleu, self.state.evals_without_gain = scores["bleu"], 0
        else:
            self.state.evals_without_gain += 1
        meta = {"dev": scores}
        self.save("last", meta, resumable=True)
        if improved:
            self.save("best", meta, resumable=False)
        if self.cfg.average_last > 0:
            self.save(self.run_dir.snapshot_name(self.state.global_step), meta, resumable=False)
            prune_snapshots(self.run_dir, self.cfg.average_last)
        seconds = time.perf_counter() - began
        self.schedule.eval_seconds.append(seconds)  # what the budget plans with
        self.log.record(kind="eval", stage=self.state.stage, step=self.state.global_step,
                        seconds=round(seconds, 2), **scores)
        self.log.info(f"eval step {self.state.global_step}: dev loss {scores['loss']:.3f} "
                      f"BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f}"
                      + (" (best)" if improved else ""))
        return 0 < self.cfg.patience <= self.state.evals_without_gain

    def roll_back(self, reason: str) -> None:
        """Stage 2 faults: restore the best weights, halve the encoder rate, reset the optimizer."""
        from safetensors.torch import load_file

        from nmt_bert.config import save_config

        best = self.run_dir.checkpoint("best") / WEIGHTS
        if self.state.stage != 2 or not best.exists() or self.state.rollbacks >= self.cfg.max_rollbacks:
            raise UserError(f"{reason}; lower train.lr / train.encoder_lr or check the data")
        self.model.load_state_dict(load_file(str(best)))
        self.cfg.encoder_lr *= 0.5
        save_config(self.setup.config, self.run_dir.config)  # a resumed run keeps it
        self.state.rollbacks += 1
        self.state.bad_in_a_row = 0
        self.enter_stage(2)
        self.log.record(kind="rollback", step=self.state.global_step, reason=reason,
                        encoder_lr=self.cfg.encoder_lr)
        self.log.info(f"{reason}: rolled back to the best checkpoint (dev BLEU "
                      f"{self.state.best_bleu:.2f}); encoder learning rate lowered to "
                      f"{self.cfg.encoder_lr:.2e}")

    # --- the end ----------------------------------------------------------------------
    def finish(self, seconds: float) -> None:
        """Optional checkpoint averaging, the curves PNG and the `finished.json` marker."""
        k = self.cfg.average_last
        if k > 0:
            averaged = average_checkpoints(self.run_dir, k)
            if averaged is not None:
                self.model.load_state_dict(averaged)
                scores = evaluate_dev(self.model, self.setup, self.device, self.cfg.valid_beam)
                self.save("averaged", {"dev": scores, "averaged_last": k}, resumable=False)
                self.log.info(f"average of last {k} checkpoints: dev BLEU {scores['bleu']:.2f}")
                if scores["bleu"] > self.state.best_bleu:
                    self.state.best_bleu = scores["bleu"]
                    self.save("best", {"dev": scores, "averaged_last": k}, resumable=False)
        if plot_curves(self.run_dir.metrics, self.run_dir.curves):
            self.log.info(f"curves: {self.run_dir.curves}")
        finished = {
            "best_dev_bleu": self.state.best_bleu, "steps": self.state.global_step,
            "skipped_steps": self.state.skipped_steps, "seconds_this_session": round(seconds, 1),
        }
        if self.budget is not None:
            finished.update(budget_minutes=self.cfg.max_minutes,
                            seconds_in_budget=round(self.budget.elapsed(), 1))
        self.run_dir.finished_file.write_text(json.dumps(finished, indent=2))

    # --- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        params = count_parameters(self.model)
        self.log.info("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))
        first_stage = self.state.stage
        for stage in (1, 2):
            if stage < first_stage or self.stage_steps(stage) == 0:
                continue
            if stage != first_stage or self.optimizer is None:
                self.begin_stage(stage)
            if self.run_stage():
                break
        self.log.info(f"done: best dev BLEU {self.state.best_bleu:.2f}, "
                      f"{self.state.skipped_steps} steps skipped for NaN/inf loss")

    def run_stage(self) -> bool:
        """Train the current stage to its end; True when early stopping ended training."""
        total = self.stage_steps(self.state.stage)
        with TrainProgress(self.state.stage, total, self.state.step, self.log) as progress:
            while self.state.step < self.stage_steps(self.state.stage):
                start = time.perf_counter()
                with self.interrupts.hold():  # an update and its log line land together
                    out = self.train_step()
                    progress.update(self.state.step, out, time.perf_counter() - start)
                    if not out.get("skipped") and self.state.step % self.cfg.log_every == 0:
                        self.log.record(kind="train", stage=self.state.stage,
                                        step=self.state.global_step, **out, **progress.rates())
                        progress.log_step(self.state.step, out)
                if out.get("skipped"):
                    self.state.bad_in_a_row += 1
                    if self.state.bad_in_a_row >= self.cfg.max_bad_steps:
                        self.roll_back(f"{self.state.bad_in_a_row} consecutive steps had NaN/inf loss")
                    continue
                self.state.bad_in_a_row = 0
                due = self.schedule.step_done(self.state, time.perf_counter() - start)
                self.follow_plan(progress)
                if due:
                    if self.evaluate():
                        self.log.info("early stopping: no dev BLEU gain in "
                                      f"{self.cfg.patience} evaluations")
                        return True
                    self.schedule.evaluated(self.state)
                    self.follow_plan(progress)
        return False

    def follow_plan(self, progress: TrainProgress) -> None:
        """The progress bar shows the stage's steps as (re-)planned."""
        total = self.stage_steps(self.state.stage)
        if total != progress.total:
            progress.set_total(total)
