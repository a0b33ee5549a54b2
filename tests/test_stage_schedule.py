"""The stage schedule under a time budget, driven by a simulated clock: the plan that the
trainer follows, checked over whole runs in milliseconds (test_budget.py runs real ones)."""

from __future__ import annotations

import pytest

from nmt_bert.config import TrainConfig
from nmt_bert.train.budget import EVAL_MARGIN, FIRST_EVAL_STEPS_PER_BATCH, MEASURE_STEPS, TimeBudget
from nmt_bert.train.stage_schedule import StageSchedule
from nmt_bert.train.train_state import TrainState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_stage(cfg: TrainConfig, minutes: float, step_seconds, eval_seconds: float,
              setup_seconds: float = 0.0, stage: int = 1, clock: Clock | None = None,
              budget: TimeBudget | None = None, dev_batches: float = 0.0):
    """The schedule as Trainer.run_stage drives it (step_done, then evaluated after each
    evaluation), with simulated time: each step takes step_seconds(step) and each
    evaluation eval_seconds. Returns the schedule, the state, the learning-rate factor of
    every step and the clock; `schedule.plans` holds the planned steps after each step."""
    clock = clock or Clock()
    budget = budget or TimeBudget(minutes, clock=clock)
    schedule = StageSchedule(cfg, info=lambda message: None, budget=budget)
    schedule.dev_batches, schedule.plans = dev_batches, []
    state = TrainState()
    clock.now += setup_seconds
    state.stage = stage
    schedule.begin(state)
    schedule.set_deadline(state, stage)
    factors = []
    while state.step < schedule.steps(state, stage):
        factors.append(schedule.factor(state, state.step + 1))
        state.step += 1
        clock.now += step_seconds(state.step)
        due = schedule.step_done(state, step_seconds(state.step))
        schedule.plans.append(state.planned_steps)
        if due:
            clock.now += eval_seconds  # what Trainer.evaluate records
            schedule.eval_seconds.append(eval_seconds)
            state.evals_in_stage += 1
            schedule.evaluated(state)
    return schedule, state, factors, clock


def fast_cpu(**changes) -> TrainConfig:
    """The fast recipe's schedule: 1,800 linear-decay steps, 2 evaluations, one stage."""
    values = dict(stage1_steps=1800, stage2_steps=0, warmup_steps=200, schedule="linear",
                  eval_every=900, max_minutes=15)
    return TrainConfig(**{**values, **changes})


@pytest.mark.parametrize("step_s", [0.2, 0.45, 1.3])  # a fast machine, ours, a loaded one
def test_the_stage_ends_inside_the_budget_with_its_decay_completed(step_s):
    schedule, state, factors, clock = run_stage(fast_cpu(), 15, lambda step: step_s, 20.0,
                                                setup_seconds=90.0)
    assert clock.now <= 15 * 60
    assert clock.now >= 15 * 60 - 0.1 * 15 * 60  # and it used the time it had
    assert factors[-1] == 0.0 and max(factors) == pytest.approx(1.0, abs=0.02)
    assert state.evals_in_stage == 2
    assert state.step == state.planned_steps != 1800


@pytest.mark.parametrize("before, after", [(0.4, 1.2), (1.2, 0.4)])
def test_a_machine_whose_speed_changes_midway_ends_in_time_on_a_continuous_decay(before,
                                                                                 after):
    """Another job starts (or stops) at step 400: the plan follows the steps' new speed,
    and the decay goes on from where it is, without a jump, to zero at the new end."""
    schedule, state, factors, clock = run_stage(
        fast_cpu(), 15, lambda step: before if step < 400 else after, 20.0, setup_seconds=60.0)
    assert 15 * 60 - 60 <= clock.now <= 15 * 60
    assert factors[-1] == 0.0
    decay = factors[200:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # never rises
    assert max(a - b for a, b in zip(decay, decay[1:])) < 0.01  # never drops at once


@pytest.mark.parametrize("dev_batches", [9.0, 40.0])  # the bundled dev set; a larger one
def test_the_first_plan_prices_evaluations_by_the_dev_sets_size(dev_batches):
    """Before an evaluation is measured, the plan prices one by the dev set's size. When
    evaluations cost what that guess assumes, no later plan cuts the first one short (the
    margin kept for evaluations only gives steps back as they come in under it). A guess
    blind to the dev set's size plans steps it has to take back."""
    step_s = 0.2
    eval_s = FIRST_EVAL_STEPS_PER_BATCH / EVAL_MARGIN * dev_batches * step_s
    schedule, state, factors, clock = run_stage(fast_cpu(tail_evals=1.5), 15, lambda step: step_s,
                                                eval_s, setup_seconds=60.0,
                                                dev_batches=dev_batches)
    first = schedule.plans[MEASURE_STEPS - 1]
    assert min(schedule.plans[MEASURE_STEPS - 1:]) >= first * 0.995
    assert state.step >= first
    assert clock.now <= 15 * 60 and factors[-1] == 0.0
    blind, blind_state, _, _ = run_stage(fast_cpu(tail_evals=1.5), 15, lambda step: step_s,
                                         eval_s, setup_seconds=60.0)
    assert blind.plans[MEASURE_STEPS - 1] > 1.05 * blind_state.step


def test_the_time_for_what_follows_training_is_kept():
    """train.tail_evals (the pipeline's test translation) is kept at the budget's end."""
    tail, eval_s = 3.0, 20.0
    schedule, state, factors, clock = run_stage(fast_cpu(tail_evals=tail), 15,
                                                lambda step: 0.45, eval_s, setup_seconds=60.0)
    kept = tail * EVAL_MARGIN * eval_s
    assert clock.now + kept <= 15 * 60
    assert clock.now + kept >= 15 * 60 - 60  # and no more than that is left unused
    assert factors[-1] == 0.0


def test_a_short_budget_scales_the_warmup_and_reaches_the_peak():
    """Far fewer steps fit than configured: the rate climbs to its peak and decays to zero
    inside the stage instead of warming up throughout."""
    cfg = fast_cpu(stage1_steps=100_000, warmup_steps=50_000, eval_every=100_000)
    schedule, state, factors, clock = run_stage(cfg, 2, lambda step: 0.5, 5.0)
    assert len(factors) < 50_000 and factors[-1] == 0.0
    assert max(factors) >= 0.9


def test_stage_one_leaves_stage_two_its_share():
    cfg = fast_cpu(stage2_steps=500, stage2_share=0.25)
    schedule, state, factors, clock = run_stage(cfg, 20, lambda step: 0.5, 10.0,
                                                setup_seconds=120.0)
    left_after_setup = 20 * 60 - 120.0
    assert state.stage_deadline == pytest.approx(120.0 + 0.75 * left_after_setup)
    assert clock.now <= state.stage_deadline and factors[-1] == 0.0


def test_a_resumed_budget_counts_the_time_spent_before():
    clock = Clock()
    spent = 10 * 60.0
    budget = TimeBudget(15, spent_before=spent, clock=clock)
    schedule, state, factors, clock = run_stage(fast_cpu(), 15, lambda step: 0.45, 20.0,
                                                clock=clock, budget=budget)
    assert budget.elapsed() <= 15 * 60
    assert clock.now <= 5 * 60  # only the five minutes left were used
    assert factors[-1] == 0.0


def test_without_a_budget_the_configured_schedule_runs():
    cfg = fast_cpu(max_minutes=0)
    schedule = StageSchedule(cfg, info=lambda message: None)
    state = TrainState()
    assert schedule.steps(state, 1) == 1800
    state.step = 900
    assert schedule.eval_due(state) and not schedule.replan_due(state)
    assert schedule.factor(state, 1800) == 0.0
    assert schedule.factor(state, 1000) == pytest.approx(800 / 1600)
