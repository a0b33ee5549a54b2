"""The two-stage trainer: one class owns a run's lifecycle from first step to finished.json.

Stage 1 trains adapter and decoder with the encoder frozen (read from the encoder-state
cache when enabled); stage 2 unfreezes the encoder with its own, smaller learning rate,
a fresh warmup and a reset optimizer (Imamura & Sumita 2019). Every `eval_every` steps: dev
loss and BLEU, a resumable `last` checkpoint and, when BLEU improves, `best`. At the end:
optional checkpoint averaging, the curves and the finished marker.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nmt_bert.train import distributed as dist
from nmt_bert.train.averaging import average_checkpoints, prune_snapshots
from nmt_bert.train.budget import (MEASURE_STEPS, TimeBudget, eval_estimate, eval_points,
                                   fit_steps, replanned_factor, scaled_warmup, step_estimate)
from nmt_bert.caches import encoder_states_dir
from nmt_bert.model.checkpoint import WEIGHTS, load_trainer_state, save_checkpoint
from nmt_bert.train.curves import plot_curves
from nmt_bert.train.batches import Batch, token_batches
from nmt_bert.devices import autocast_context
from nmt_bert.train.encoder_cache import EncoderCache, build_or_load
from nmt_bert.errors import UserError
from nmt_bert.train.interrupts import Interrupts
from nmt_bert.model.seq2seq import label_smoothed_loss
from nmt_bert.train.optim import lr_factor, make_optimizer, set_lr
from nmt_bert.train.progress import TrainProgress
from nmt_bert.train.run_dir import RunDir
from nmt_bert.train.run_log import RunLog
from nmt_bert.train.run_setup import RunSetup, count_parameters
from nmt_bert.train.validation import evaluate_dev


@dataclass
class TrainState:
    stage: int = 1
    step: int = 0  # optimizer steps done in the current stage
    global_step: int = 0
    epoch: int = 0
    position: int = 0  # batches of this epoch already consumed
    best_bleu: float = -1.0
    evals_without_gain: int = 0
    skipped_steps: int = 0  # NaN/inf losses skipped
    bad_in_a_row: int = 0  # consecutive skipped steps (max_bad_steps of them: roll back)
    rollbacks: int = 0
    # with a time budget (train.max_minutes, see budget.py):
    planned_steps: int = 0  # the current stage's planned steps (0: the configured ones)
    planned_warmup: int = -1  # its warmup, fixed by the first plan (-1: the configured one)
    anchor_step: int = 0  # where the linear decay was last re-planned (0: never)
    anchor_factor: float = 1.0  # its factor there
    evals_in_stage: int = 0
    stage_deadline: float = 0.0  # budget seconds by which the current stage ends
    seconds_spent: float = 0.0  # budget seconds spent when this state was saved
    saved_at: float = 0.0  # wall-clock time of that save


class Trainer:
    def __init__(self, setup: RunSetup, run: RunDir, device: torch.device, log: RunLog):
        self.setup, self.run_dir, self.device, self.log = setup, run, device, log
        self.cfg = setup.config.train
        self.model = setup.model.to(device)
        self.state = TrainState()
        self.optimizer: torch.optim.Optimizer | None = None
        self.cache: EncoderCache | None = None
        self.batches: list = []
        self.interrupts = Interrupts()  # signals wait for the step in progress to complete
        self.budget: TimeBudget | None = None  # set by `train` when train.max_minutes > 0
        self.step_seconds: list[float] = []
        self.eval_seconds: list[float] = []  # each evaluation's, as measured
        self.save_seconds = 1.0

    # --- stages -----------------------------------------------------------------------
    def configured_steps(self, stage: int) -> int:
        return self.cfg.stage1_steps if stage == 1 else self.cfg.stage2_steps

    def stage_steps(self, stage: int) -> int:
        """The stage's steps: configured, or as planned to fit the time budget."""
        if self.budget is not None and stage == self.state.stage and self.state.planned_steps:
            return self.state.planned_steps
        return self.configured_steps(stage)

    def begin_stage(self, stage: int) -> None:
        """Start `stage` from its first step: freezing, a fresh optimizer, the state cache."""
        self.state.stage, self.state.step = stage, 0
        self.state.planned_steps = self.state.anchor_step = self.state.evals_in_stage = 0
        self.state.planned_warmup = -1
        self.state.anchor_factor = 1.0
        self.enter_stage(stage)
        if self.budget is not None:  # measured after the cache: its build counts as spent
            self.state.stage_deadline = self.budget.seconds
            if stage == 1 and self.cfg.stage2_steps > 0:
                self.state.stage_deadline = dist.broadcast(self.budget.elapsed() + max(
                    0.0, self.budget.left()) * (1 - self.cfg.stage2_share))

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
        data = self.setup.train_data
        while True:
            if not self.batches:
                self.batches = dist.shard(token_batches(
                    data.src_lens, data.tgt_lens, self.cfg.batch_tokens, self.cfg.seed,
                    self.state.epoch))
            if self.state.position < len(self.batches):
                index = self.batches[self.state.position]
                self.state.position += 1
                return data.collate(index)
            self.state.epoch, self.state.position, self.batches = self.state.epoch + 1, 0, []

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
        set_lr(self.optimizer, self.schedule_factor(self.state.step + 1))
        self.optimizer.step()
        self.state.step += 1
        self.state.global_step += 1
        return {"loss": loss_sum / targets, "nll": nll_sum / targets, "tokens": tokens,
                "grad_norm": float(grad_norm), "lr": self.optimizer.param_groups[0]["lr"]}

    def warmup(self) -> int:
        if self.budget is not None and self.state.planned_warmup >= 0:
            return self.state.planned_warmup
        return self.cfg.warmup_steps if self.state.stage == 1 else self.cfg.stage2_warmup_steps

    def schedule_factor(self, step: int) -> float:
        """The learning-rate multiplier at `step` of the current stage."""
        total = self.stage_steps(self.state.stage)
        if self.state.anchor_step and step > self.state.anchor_step:
            return replanned_factor(step, total, self.state.anchor_step, self.state.anchor_factor)
        return lr_factor(step, self.warmup(), self.cfg.schedule, total)

    # --- the time budget ----------------------------------------------------------------
    def planned_evaluations(self) -> int:
        return max(1, round(self.configured_steps(self.state.stage) / self.cfg.eval_every))

    def eval_due(self) -> bool:
        step = self.state.step
        if self.budget is None:
            return step % self.cfg.eval_every == 0
        points = eval_points(self.stage_steps(self.state.stage), self.planned_evaluations())
        return self.state.evals_in_stage < len(points) and step >= points[self.state.evals_in_stage]

    def replan_due(self) -> bool:
        if self.budget is None or len(self.step_seconds) < min(MEASURE_STEPS, 3):
            return False
        every = max(MEASURE_STEPS, self.stage_steps(self.state.stage) // 20)
        late = self.budget.elapsed() > self.state.stage_deadline
        return late or self.state.step == MEASURE_STEPS or self.state.step % every == 0

    def replan(self) -> None:
        """Fit the stage's remaining steps to the time left, keeping the schedule continuous."""
        step = self.state.step
        step_s = step_estimate(self.step_seconds)
        eval_s = eval_estimate(self.eval_seconds, step_s)
        last_stage = self.state.stage == 2 or self.cfg.stage2_steps == 0
        # after the last step: the checkpoints, the averaged model's evaluation, and the
        # work the caller does next inside the same budget (the pipeline's test set)
        after = (1.0 if self.cfg.average_last > 0 else 0.0) + self.cfg.tail_evals
        reserve = 2 * self.save_seconds + after * eval_s
        left = self.state.stage_deadline - self.budget.elapsed() - (reserve if last_stage else 0.0)
        evals_left = max(0, self.planned_evaluations() - self.state.evals_in_stage)
        # Out of time, the stage ends with one more step, at the decay's end value, and never
        # gets another (fit_steps gives at least one more, which, re-planned every step once
        # late, would never end).
        more = fit_steps(left, step_s, evals_left, eval_s, 0.0) if left > 0 else \
            min(1, max(0, self.state.planned_steps - step))
        total = dist.broadcast(step + more)
        if self.state.planned_warmup < 0:  # the first plan: the warmup in proportion to it
            self.state.planned_warmup = scaled_warmup(
                self.warmup(), self.configured_steps(self.state.stage), total, step)
        if self.cfg.schedule == "linear" and step >= self.warmup():
            self.state.anchor_factor, self.state.anchor_step = self.schedule_factor(step), step
        if total != self.state.planned_steps:
            self.log.info(f"time budget: {self.budget.left() / 60:.1f} min left, {step_s:.2f} "
                          f"s/step, {eval_s:.1f} s/evaluation: stage {self.state.stage} "
                          f"planned for {total:,} steps")
        self.state.planned_steps = total

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
        self.save_seconds = max(self.save_seconds, time.perf_counter() - started)

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
        self.eval_seconds.append(time.perf_counter() - began)  # what the budget plans with
        self.log.record(kind="eval", stage=self.state.stage, step=self.state.global_step,
                        seconds=round(self.eval_seconds[-1], 2), **scores)
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
                self.step_seconds.append(time.perf_counter() - start)
                if self.replan_due():
                    self.replan()
                    progress.set_total(self.stage_steps(self.state.stage))
                last = self.state.step == self.stage_steps(self.state.stage)
                if self.eval_due() or last:
                    stop = self.evaluate()
                    if stop:
                        self.log.info("early stopping: no dev BLEU gain in "
                                      f"{self.cfg.patience} evaluations")
                        return True
                    if self.budget is not None and not last:  # with the measured evaluation
                        self.replan()
                        progress.set_total(self.stage_steps(self.state.stage))
        return False
