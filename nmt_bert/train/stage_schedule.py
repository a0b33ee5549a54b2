"""A stage's schedule: its steps, learning-rate factor and evaluation points.

Without a time budget these are the configured ones (`train.stage1_steps`, `eval_every`,
the warmup and decay of `train.schedule`). With one (`train.max_minutes`), the schedule
measures the steps and evaluations as training goes and re-plans the stage to the time
left (budget.py has the arithmetic): the stage's steps, its warmup (fixed by the first
plan), the linear decay's end and the evaluation points all follow the plan. What a resumed
run needs of the plan lives in the TrainState it is given, so a checkpoint carries it.
"""

from __future__ import annotations

from collections.abc import Callable

from nmt_bert.config import TrainConfig
from nmt_bert.train import distributed as dist
from nmt_bert.train.budget import (MEASURE_STEPS, TimeBudget, eval_estimate, eval_points,
                                   fit_steps, replanned_factor, scaled_warmup, step_estimate)
from nmt_bert.train.optim import lr_factor
from nmt_bert.train.train_state import TrainState


class StageSchedule:
    def __init__(self, cfg: TrainConfig, info: Callable[[str], None],
                 budget: TimeBudget | None = None):
        self.cfg, self.info = cfg, info
        self.budget = budget  # set by `train` when train.max_minutes > 0
        self.step_seconds: list[float] = []  # each completed step's, as measured
        self.eval_seconds: list[float] = []  # each evaluation's, as measured
        self.save_seconds = 1.0  # the slowest checkpoint write measured
        # the dev set's source + target tokens over train.batch_tokens, times the validation
        # beam: what the first plan scales an evaluation's cost by (set by the trainer)
        self.dev_batches = 0.0

    def configured_steps(self, stage: int) -> int:
        return self.cfg.stage1_steps if stage == 1 else self.cfg.stage2_steps

    def steps(self, state: TrainState, stage: int) -> int:
        """The stage's steps: configured, or as planned to fit the time budget."""
        if self.budget is not None and stage == state.stage and state.planned_steps:
            return state.planned_steps
        return self.configured_steps(stage)

    def begin(self, state: TrainState) -> None:
        """Forget the previous stage's plan: the stage in `state` starts from its first step."""
        state.planned_steps = state.anchor_step = state.evals_in_stage = 0
        state.planned_warmup = -1
        state.anchor_factor = 1.0

    def set_deadline(self, state: TrainState, stage: int) -> None:
        """With a budget: the time by which `stage` must end (stage 1 leaves stage 2 its
        share of what is left). Called once the stage is set up, so that its cache build
        counts as spent."""
        if self.budget is None:
            return
        state.stage_deadline = self.budget.seconds
        if stage == 1 and self.cfg.stage2_steps > 0:
            state.stage_deadline = dist.broadcast(self.budget.elapsed() + max(
                0.0, self.budget.left()) * (1 - self.cfg.stage2_share))

    def warmup(self, state: TrainState) -> int:
        if self.budget is not None and state.planned_warmup >= 0:
            return state.planned_warmup
        return self.cfg.warmup_steps if state.stage == 1 else self.cfg.stage2_warmup_steps

    def factor(self, state: TrainState, step: int) -> float:
        """The learning-rate multiplier at `step` of the current stage."""
        total = self.steps(state, state.stage)
        # from the anchor on (the anchor's own step included: a second plan at the same
        # step, after an evaluation, must start from the same factor as the first)
        if state.anchor_step and step >= state.anchor_step:
            return replanned_factor(step, total, state.anchor_step, state.anchor_factor)
        return lr_factor(step, self.warmup(state), self.cfg.schedule, total)

    def planned_evaluations(self, state: TrainState) -> int:
        return max(1, round(self.configured_steps(state.stage) / self.cfg.eval_every))

    def eval_due(self, state: TrainState) -> bool:
        if self.budget is None:
            return state.step % self.cfg.eval_every == 0
        points = eval_points(self.steps(state, state.stage), self.planned_evaluations(state))
        return state.evals_in_stage < len(points) and state.step >= points[state.evals_in_stage]

    def step_done(self, state: TrainState, seconds: float) -> bool:
        """A step completed in `seconds`: re-plan when due. True when an evaluation is due
        now (the stage's last step always has one)."""
        self.step_seconds.append(seconds)
        if self.replan_due(state):
            self.replan(state)
        return self.eval_due(state) or state.step == self.steps(state, state.stage)

    def evaluated(self, state: TrainState) -> None:
        """After an evaluation (its time in eval_seconds): with a budget, re-plan the rest of
        the stage with it, unless the stage has just ended."""
        if self.budget is not None and state.step < self.steps(state, state.stage):
            self.replan(state)

    def replan_due(self, state: TrainState) -> bool:
        if self.budget is None or len(self.step_seconds) < min(MEASURE_STEPS, 3):
            return False
        every = max(MEASURE_STEPS, self.steps(state, state.stage) // 20)
        late = self.budget.elapsed() > state.stage_deadline
        return late or state.step == MEASURE_STEPS or state.step % every == 0

    def replan(self, state: TrainState) -> None:
        """Fit the stage's remaining steps to the time left, keeping the schedule continuous."""
        step = state.step
        step_s = step_estimate(self.step_seconds)
        eval_s = eval_estimate(self.eval_seconds, step_s, self.dev_batches)
        last_stage = state.stage == 2 or self.cfg.stage2_steps == 0
        # after the last step: the checkpoints, the averaged model's evaluation, and the
        # work the caller does next inside the same budget (the pipeline's test set)
        after = (1.0 if self.cfg.average_last > 0 else 0.0) + self.cfg.tail_evals
        reserve = 2 * self.save_seconds + after * eval_s
        left = state.stage_deadline - self.budget.elapsed() - (reserve if last_stage else 0.0)
        evals_left = max(0, self.planned_evaluations(state) - state.evals_in_stage)
        # Out of time, the stage ends with one more step, at the decay's end value, and never
        # gets another (fit_steps gives at least one more, which, re-planned every step once
        # late, would never end).
        more = fit_steps(left, step_s, evals_left, eval_s, 0.0) if left > 0 else \
            min(1, max(0, state.planned_steps - step))
        total = dist.broadcast(step + more)
        if state.planned_warmup < 0:  # the first plan: the warmup in proportion to it
            state.planned_warmup = scaled_warmup(
                self.warmup(state), self.configured_steps(state.stage), total, step)
        if self.cfg.schedule == "linear" and step >= self.warmup(state):
            state.anchor_factor, state.anchor_step = self.factor(state, step), step
        if total != state.planned_steps:
            self.info(f"time budget: {self.budget.left() / 60:.1f} min left, {step_s:.2f} "
                      f"s/step, {eval_s:.1f} s/evaluation: stage {state.stage} "
                      f"planned for {total:,} steps")
        state.planned_steps = total
