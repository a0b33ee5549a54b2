"""The time budget: a run fits its schedule to the time there is, and a resume counts the
time already spent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_config, tiny_sets
from nmt_bert.errors import UserError
from nmt_bert.train.budget import (EVAL_MARGIN, FIRST_EVAL_GUESS, FIRST_EVAL_STEPS_PER_BATCH,
                                   eval_estimate, eval_points,
                                   fit_steps, parse_minutes, replanned_factor, scaled_warmup,
                                   step_estimate)

BUDGET = ("train.max_minutes=0.4", "train.schedule=linear", "train.stage1_steps=40",
          "train.eval_every=10", "train.warmup_steps=5", "train.log_every=1")
SLACK_S = 20  # interpreter start-up and the last checkpoint on a busy 2-core machine


@pytest.mark.parametrize("text, minutes", [("15m", 15), ("90s", 1.5), ("1.5h", 90), ("2", 2),
                                           ("10min", 10)])
def test_durations_parse(text, minutes):
    assert parse_minutes(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["", "0", "fast", "-3m", "1d"])
def test_bad_durations_are_one_line(text):
    with pytest.raises(UserError, match="--time-budget"):
        parse_minutes(text)


def test_the_plan_fits_steps_evaluations_and_reserve():
    assert fit_steps(100.0, 0.5, 2, 10.0, 5.0) == 150  # (100 - 20 - 5) / 0.5
    assert fit_steps(1.0, 0.5, 2, 10.0, 5.0) == 1  # overrun: finish with one more step
    assert eval_points(1800, 2) == [900, 1800]
    assert eval_points(7, 3) == [3, 5, 7]


def test_the_plan_counts_slow_steps_and_the_slowest_evaluation():
    """A machine another job shares has slow steps among fast ones: the time ahead is their
    mean, not their median; evaluations grow as hypotheses lengthen: the slowest counts."""
    steps = [0.5] * 7 + [3.0] * 3  # three steps in ten slowed by the other job
    assert step_estimate(steps) == pytest.approx(1.25)
    assert step_estimate([9.0] * 100 + [1.0] * 50) == pytest.approx(1.0)  # the recent ones
    assert eval_estimate([], 0.5) == pytest.approx(FIRST_EVAL_GUESS * 0.5)
    # before the first: by the dev set's size, in training batches' worth of tokens
    assert eval_estimate([], 0.5, 9.0) == pytest.approx(FIRST_EVAL_STEPS_PER_BATCH * 9.0 * 0.5)
    assert eval_estimate([], 0.5, 36.0) == pytest.approx(4 * eval_estimate([], 0.5, 9.0))
    assert eval_estimate([78.0, 40.0], 0.5) == pytest.approx(EVAL_MARGIN * 78.0)
    assert eval_estimate([78.0, 40.0], 0.5, 9.0) == pytest.approx(EVAL_MARGIN * 78.0)


def test_a_replanned_decay_is_continuous_and_ends_at_zero():
    from nmt_bert.train.optim import lr_factor

    old_total, new_total, anchor = 1000, 600, 300
    at_anchor = lr_factor(anchor, 50, "linear", old_total)
    assert replanned_factor(anchor, new_total, anchor, at_anchor) == pytest.approx(at_anchor)
    assert replanned_factor(new_total, new_total, anchor, at_anchor) == 0.0
    values = [replanned_factor(s, new_total, anchor, at_anchor) for s in range(anchor, new_total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def train_records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


@pytest.mark.slow
def test_a_budgeted_run_ends_inside_its_budget_with_the_schedule_completed(
        tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    from nmt_bert.train.training import train

    run = tmp_path / "run"
    started = time.perf_counter()
    train(tiny_prepared_dir, run, tiny_config(tiny_encoder_dir, *BUDGET), device="cpu")
    wall = time.perf_counter() - started
    finished = json.loads((run / "finished.json").read_text())
    assert wall <= 24 + SLACK_S and finished["seconds_in_budget"] <= 24 + 5
    records = train_records(run)
    assert records[-1]["lr"] == 0.0  # the linear decay reached its end value
    assert finished["steps"] == records[-1]["step"] != 40  # the plan, not the configured steps
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["kind"] == "eval"]
    assert 1 <= len(evals) <= 5 and evals[-1]["step"] == finished["steps"]
    assert "planned for" in (run / "train.log").read_text()


@pytest.mark.slow
def test_a_budget_keeps_the_time_for_what_follows_training(tmp_path, tiny_prepared_dir,
                                                            tiny_encoder_dir, monkeypatch):
    """train.tail_evals (the pipeline's test translation) is kept at the budget's end."""
    from nmt_bert.train import trainer
    from nmt_bert.train.training import train

    evaluate_dev = trainer.evaluate_dev

    def slow_evaluation(*args, **kwargs):  # a dev set whose decode takes a while
        time.sleep(0.4)
        return evaluate_dev(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_dev", slow_evaluation)
    run, tail = tmp_path / "run", 25
    train(tiny_prepared_dir, run, tiny_config(tiny_encoder_dir, *BUDGET, "train.max_minutes=0.6",
                                              f"train.tail_evals={tail}"), device="cpu")
    finished = json.loads((run / "finished.json").read_text())
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "eval"]
    kept = tail * max(r["seconds"] for r in evals)  # >= 10 s
    assert finished["seconds_in_budget"] + kept <= 36 + 2
    assert train_records(run)[-1]["lr"] == 0.0  # the schedule completed all the same


@pytest.mark.parametrize("beam", [1, 3])
def test_the_trainer_prices_a_first_evaluation_by_its_dev_set(tmp_path, tiny_prepared_dir,
                                                               tiny_encoder_dir, beam):
    """The schedule is told the dev set's size in training batches' worth of tokens (source
    and target, as train.batch_tokens counts them), times the validation beam."""
    import torch

    from nmt_bert.train.run_dir import RunDir
    from nmt_bert.train.run_log import RunLog
    from nmt_bert.train.run_setup import build
    from nmt_bert.train.training import Trainer

    config = tiny_config(tiny_encoder_dir, "train.batch_tokens=300", f"train.valid_beam={beam}")
    run = RunDir(tmp_path / "run")
    run.create(tiny_prepared_dir, config)
    log = RunLog(run, enabled=False)
    trainer = Trainer(build(run, tiny_prepared_dir, config, None, log), run, torch.device("cpu"), log)
    dev = trainer.setup.dev_data
    tokens = len(dev.src_flat) + len(dev.tgt_flat) + len(dev)  # each target with its EOS
    assert len(dev) > 0 and tokens > 0
    assert trainer.schedule.dev_batches == pytest.approx(tokens * beam / 300)


@pytest.mark.parametrize("warmup, configured, planned, step, expected", [
    (200, 1800, 1800, 10, 200),  # the plan buys what was configured: unchanged
    (200, 1800, 3600, 10, 200),  # a faster machine: never longer
    (200, 1800, 204, 10, 23),  # a loaded one: in proportion
    (200, 1800, 20, 10, 10),  # never behind the step already reached
    (0, 1800, 204, 10, 0),  # no warmup stays none
])
def test_the_first_plan_scales_the_warmup(warmup, configured, planned, step, expected):
    assert scaled_warmup(warmup, configured, planned, step) == expected


def test_a_budget_spent_before_the_plan_ends_the_stage_at_once(tmp_path, tiny_prepared_dir,
                                                               tiny_encoder_dir):
    """Once past its deadline the stage ends: re-planning must not add a step every step."""
    from nmt_bert.train.training import train

    run = tmp_path / "run"
    config = tiny_config(tiny_encoder_dir, "train.max_minutes=0.001", "train.stage1_steps=500",
                         "train.eval_every=500", "train.log_every=1")
    train(tiny_prepared_dir, run, config, device="cpu")
    finished = json.loads((run / "finished.json").read_text())
    assert finished["steps"] <= 12  # the first plan, after the measured steps


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt_bert", *args]


@pytest.mark.slow
def test_a_resumed_budgeted_run_counts_the_time_already_spent(tmp_path, tiny_prepared_dir,
                                                              tiny_encoder_dir):
    run = tmp_path / "run"
    sets = [a for s in tiny_sets(tiny_encoder_dir, *BUDGET) for a in ("--set", s)]
    started = time.perf_counter()
    first = subprocess.Popen(cli("train", "--data", str(tiny_prepared_dir), "--out", str(run),
                                 "--device", "cpu", *sets),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "checkpoints" / "last").exists():
        assert first.poll() is None, first.communicate()[1]
        time.sleep(0.1)
    time.sleep(2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    spent = time.perf_counter() - started
    began = time.perf_counter()
    resumed = subprocess.run(cli("train", "--resume", str(run), "--device", "cpu"),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    second = time.perf_counter() - began
    assert spent + second <= 24 + 2 * SLACK_S
    finished = json.loads((run / "finished.json").read_text())
    assert finished["seconds_in_budget"] <= 24 + 5
    assert finished["seconds_this_session"] < 24 - 2  # the first session's time was counted
    assert train_records(run)[-1]["lr"] == 0.0
