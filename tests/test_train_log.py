"""Training logs a CI job can read: a plain step line every train.log_every steps."""

from __future__ import annotations

import io
import re

from rich.console import Console
from typer.testing import CliRunner

from conftest import tiny_sets
from nmt_bert.cli import app
from nmt_bert.train.progress import TrainProgress
from nmt_bert.train.run_dir import RunDir
from nmt_bert.train.run_log import RunLog

STEP_LINE = re.compile(r"stage (\d) step +(\d+)/(\d+) loss \d+\.\d{3} [\d,]+ tok/s "
                       r"lr \d\.\d{2}e[-+]\d{2} elapsed \d+s ETA \d+s")


def steps_logged(text: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, m.groups())) for m in STEP_LINE.finditer(text)]


def test_train_prints_step_lines_at_log_every_where_stderr_is_not_a_terminal(
        tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    run = tmp_path / "run"
    sets = tiny_sets(tiny_encoder_dir, "train.stage1_steps=6", "train.stage2_steps=3",
                     "train.eval_every=6", "train.log_every=2", "train.stage2_warmup_steps=1")
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out",
                                      str(run), "--device", "cpu",
                                      *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    expected = [(1, 2, 6), (1, 4, 6), (1, 6, 6), (2, 2, 3)]
    assert steps_logged(result.stderr) == expected, result.stderr
    assert steps_logged(RunDir(run).log_file.read_text()) == expected
    assert "━" not in result.stderr  # no bar drawn where there is no terminal
    line = next(l for l in result.stderr.splitlines() if "stage 1 step 4/6" in l)
    assert STEP_LINE.fullmatch(line), line


def test_a_terminal_keeps_the_bar_and_train_log_still_gets_the_step_lines(tmp_path):
    run = RunDir(tmp_path)
    screen = io.StringIO()
    log = RunLog(run, console=Console(file=screen, force_terminal=True, width=100))
    with TrainProgress(1, 10, 0, log) as progress:
        for step in range(1, 5):
            out = {"loss": 2.0 / step, "lr": 1e-4 * step, "tokens": 500}
            progress.update(step, out, 0.01)
            if step % 2 == 0:
                progress.log_step(step, out)
    assert steps_logged(run.log_file.read_text()) == [(1, 2, 10), (1, 4, 10)]
    assert "stage 1 step" not in screen.getvalue() and "4/10" in screen.getvalue()
    assert "ETA" in run.log_file.read_text()
