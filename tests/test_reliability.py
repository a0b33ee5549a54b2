"""Interruptions and damaged files, exercised through real `nmt-bert` processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_sets
from nmt_bert.cli import app

RUN_SETS = ("train.stage1_steps=30", "train.stage2_steps=10", "train.eval_every=10",
            "model.dropout=0.1")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt_bert", *args]


def sets(encoder_dir: Path) -> list[str]:
    return [arg for s in tiny_sets(encoder_dir, *RUN_SETS) for arg in ("--set", s)]


def final_losses(run_dir: Path) -> dict[int, float]:
    """Train loss per step; a step replayed after a resume keeps its latest value."""
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and max(final_losses(run_dir), default=0) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


# `nmt-bert` with a pause before every optimizer step: a tiny run would otherwise finish
# between two polls of metrics.jsonl, and the signal would land after the end of training.
PACED_CLI = """
import sys, time
from nmt_bert.train import training
step = training.Trainer.train_step
def paced(self):
    time.sleep(%s)  # before the step: a signal here finds the last step logged
    return step(self)
training.Trainer.train_step = paced
from nmt_bert.cli import app
sys.argv[0] = "nmt-bert"
app()
"""


def start_training(run: Path, data: Path, encoder_dir: Path, pause: float = 0.15) -> subprocess.Popen:
    """A training process that takes at least `pause` seconds a step."""
    return subprocess.Popen([sys.executable, "-c", PACED_CLI % pause, "train", "--data", str(data),
                             "--out", str(run), "--device", "cpu", *sets(encoder_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_prepared_dir, tiny_encoder_dir) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(cli("train", "--data", str(tiny_prepared_dir), "--out", str(run), "--device", "cpu",
                       *sets(tiny_encoder_dir)), check=True, capture_output=True)
    return run


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, straight_run, tiny_prepared_dir,
                                                          tiny_encoder_dir):
    run = tmp_path / "run"
    proc = start_training(run, tiny_prepared_dir, tiny_encoder_dir)
    wait_for_step(run, 14, proc)  # past the step-10 checkpoint, before the next
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(cli("train", "--resume", str(run), "--device", "cpu"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at stage 1, step 10" in resumed.stderr
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == list(range(1, 41))  # the steps replayed after the checkpoint: once each
    a, b = final_losses(straight_run), final_losses(run)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6
    wa = load_file(str(straight_run / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path, straight_run, tiny_prepared_dir,
                                                     tiny_encoder_dir):
    run = tmp_path / "run"
    proc = start_training(run, tiny_prepared_dir, tiny_encoder_dir)
    wait_for_step(run, 23, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "checkpoint saved; continue with --resume" in stderr
    assert "Traceback" not in stderr
    state = json.loads((run / "checkpoints" / "last" / "meta.json").read_text())
    assert state.get("interrupted") is True and state["step"] >= 23
    resumed = subprocess.run(cli("train", "--resume", str(run), "--device", "cpu"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = final_losses(straight_run), final_losses(run)
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6


def test_truncated_checkpoint_is_one_clear_error(tmp_path, straight_run):
    import shutil

    broken = tmp_path / "ckpt"
    shutil.copytree(straight_run / "checkpoints" / "best", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp_path / "in.txt").write_text("dios dijo\n")
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "in.txt"), "--model", str(broken)])
    assert result.exit_code == 1
    assert "model.safetensors: unreadable weights" in result.output
    assert "Traceback" not in result.output


def test_checkpoint_from_a_different_model_is_rejected(tmp_path, straight_run):
    import shutil

    other = tmp_path / "ckpt"
    shutil.copytree(straight_run / "checkpoints" / "best", other)
    config = (other / "config.yaml").read_text().replace("decoder_layers: 2", "decoder_layers: 3")
    (other / "config.yaml").write_text(config)
    (tmp_path / "in.txt").write_text("dios dijo\n")
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "in.txt"), "--model", str(other)])
    assert result.exit_code == 1
    assert "weights do not match the checkpoint's config" in result.output


def test_resume_without_a_checkpoint_says_so(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"data_dir": str(tmp_path)}))
    (tmp_path / "config.yaml").write_text("train:\n  lr: 0.001\n")
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "no resumable checkpoint" in result.output


def test_a_one_megabyte_line_is_dropped_by_prepare_and_truncated_by_translate(
        tmp_path, straight_run, tiny_encoder_dir):
    from conftest import write_tiny_corpus

    src, tgt = write_tiny_corpus(tmp_path / "corpus", pairs=60)
    huge = ("dios dijo luz " * 80_000).strip()  # ~1.1 MB on one line
    with open(src, "a", encoding="utf-8") as f:
        f.write(huge + "\n")
    with open(tgt, "a", encoding="utf-8") as f:
        f.write("god said light\n")
    heldout = tmp_path / "heldout.tsv"
    heldout.write_text("dios dijo\tgod said\nluz\tlight\n", encoding="utf-8")
    sets = [a for s in tiny_sets(tiny_encoder_dir) for a in ("--set", s)]
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", "--src", str(src), "--tgt", str(tgt), "--dev",
                                 str(heldout), "--test", str(heldout),
                                 "--out", str(tmp_path / "data"), *sets])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    dropped = {k: v for split in manifest["splits"].values() for k, v in split["dropped"].items()}
    assert dropped.get("too_long_chars", 0) >= 1

    text = tmp_path / "in.txt"
    text.write_text(f"dios dijo\n{huge}\n\nluz\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    result = runner.invoke(app, ["translate", str(text), "--model", str(straight_run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[-1] == "" and lines[2] == ""  # 4 lines, order kept


def test_a_signal_during_a_held_step_waits_for_the_step_to_complete():
    from nmt_bert.train.interrupts import Interrupts

    interrupts, done = Interrupts(), []
    with interrupts.installed():
        with pytest.raises(KeyboardInterrupt):
            with interrupts.hold():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("update")  # still runs: the interrupt is held
                done.append("log line")
        assert done == ["update", "log line"]
        with pytest.raises(KeyboardInterrupt):  # outside a step: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            done.append("never")
    assert "never" not in done
    assert signal.getsignal(signal.SIGTERM) != interrupts.handle  # handlers restored
