"""A wall-clock budget for `train`: the schedule is fitted to the time there is.

The budget counts the whole `train` command (encoder load, cache build, steps, evaluations,
the final checkpoint) and, after a resume, the time the run had already spent. The trainer
measures its step and evaluation times as it goes and re-plans the stage's number of steps
(`fit_steps`) after a few steps and after each evaluation, so the run ends inside the budget
with its schedule completed: a linear decay re-planned at step t0 continues from its current
factor straight down to zero at the new end (`replanned_factor`), never cut off mid-way. The
first plan also fixes the warmup: shortened in proportion where fewer steps fit than were
configured (`scaled_warmup`).
"""

from __future__ import annotations

import math
import re
import time

from nmt_bert.errors import UserError

MEASURE_STEPS = 10  # steps timed before the first plan
# Until one is measured, an evaluation is taken to cost this many training steps for each
# training batch's worth of dev tokens (source + target, at train.batch_tokens a batch),
# times the validation beam: decoding the dev set runs a token at a time. On an Intel Xeon
# with AMX (2 vCPUs; the bundled dev set, 36,026 tokens, 4,000 a batch) the fast recipe's
# first evaluation took 15.3 s at 0.20 s a step and, another day, 40 s at 0.25 s; the full
# recipe's 18.1 s at 0.34 s: 6-18 steps a batch, 10-31 once counted with EVAL_MARGIN as a
# measured one is. The fixed guess this replaces (20 steps, whatever the dev set's size)
# was 2.7-8x below what they took.
FIRST_EVAL_STEPS_PER_BATCH = 20.0
FIRST_EVAL_GUESS = 20.0  # steps, when the dev set's size is not known
# An evaluation decodes the dev set: it slows as the model's hypotheses lengthen and as the
# machine's load grows, so the plan counts the slowest one measured, with this margin. The
# fast recipe's last evaluation took 1.40 and 1.75 times its first on a quiet 2-core machine
# (the second as the machine slowed), 1.8 times beside another job.
EVAL_MARGIN = 1.75
RECENT_STEPS = 50  # the steps whose times predict the next ones
_UNITS = {"s": 1 / 60, "m": 1.0, "h": 60.0, "": 1.0}


def parse_minutes(text: str) -> float:
    """'15m', '90s', '1.5h' or a plain number of minutes -> minutes (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|min)?\s*", str(text).lower())
    if not match:
        raise UserError(f"--time-budget {text!r}: expected a duration such as 15m, 90s or 1.5h")
    minutes = float(match.group(1)) * _UNITS[(match.group(2) or "")[:1]]
    if not minutes > 0:
        raise UserError(f"--time-budget {text!r}: must be more than zero")
    return minutes


class TimeBudget:
    """Seconds left of `minutes`, counted from construction plus time spent before."""

    def __init__(self, minutes: float, spent_before: float = 0.0, clock=time.perf_counter):
        self.seconds = minutes * 60.0
        self.spent_before = spent_before
        self.clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        return self.spent_before + (self.clock() - self.started)

    def left(self) -> float:
        return self.seconds - self.elapsed()


def fit_steps(seconds_left: float, step_seconds: float, evals_left: int, eval_seconds: float,
              reserve_seconds: float) -> int:
    """How many more steps fit: N * step + evals * eval + reserve <= seconds left (N >= 1)."""
    usable = seconds_left - evals_left * eval_seconds - reserve_seconds
    return max(1, int(usable / max(step_seconds, 1e-6)))


def step_estimate(step_seconds: list[float]) -> float:
    """Seconds a step will take: the mean of the recent ones. The budget is their sum, so the
    slow steps of a machine another job shares count in full (a median would hide them)."""
    recent = step_seconds[-RECENT_STEPS:]
    return sum(recent) / max(len(recent), 1)


def eval_estimate(eval_seconds: list[float], step_seconds: float,
                  dev_batches: float = 0.0) -> float:
    """Seconds an evaluation will take: the slowest measured, with EVAL_MARGIN. Before the
    first: FIRST_EVAL_STEPS_PER_BATCH steps for each of the `dev_batches` training batches'
    worth of dev tokens (beam included), or FIRST_EVAL_GUESS steps when that is unknown."""
    if eval_seconds:
        return EVAL_MARGIN * max(eval_seconds)
    if dev_batches > 0:
        return FIRST_EVAL_STEPS_PER_BATCH * dev_batches * step_seconds
    return FIRST_EVAL_GUESS * step_seconds


def scaled_warmup(warmup: int, configured: int, planned: int, step: int) -> int:
    """The stage's warmup under its first plan: shortened in proportion when the budget buys
    fewer steps than configured (a 200-step warmup must not fill a 204-step stage on a loaded
    machine), never past the step already reached, never longer than configured."""
    if warmup <= 0 or planned >= configured:
        return warmup
    return min(warmup, max(step, 1, round(warmup * planned / max(configured, 1))))


def eval_points(total: int, evaluations: int) -> list[int]:
    """The steps of a stage of `total` steps at which its `evaluations` evaluations fall,
    evenly spread and ending at the last step."""
    evaluations = max(1, min(evaluations, total))
    return sorted({math.ceil(total * (k + 1) / evaluations) for k in range(evaluations)})


def replanned_factor(step: int, total: int, anchor_step: int, anchor_factor: float) -> float:
    """A linear decay re-planned at `anchor_step` (where its factor was `anchor_factor`):
    straight down from there to zero at `total`."""
    if total <= anchor_step:
        return 0.0
    return max(0.0, anchor_factor * (total - step) / (total - anchor_step))
