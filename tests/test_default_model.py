"""`translate` without --model: $NMT_BERT_MODEL, else the newest finished run under ./runs/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import nmt_bert.decode.translate_file as translate_file_module
from nmt_bert.cli import app
from nmt_bert.config import DecodeConfig
from nmt_bert.decode.default_model import choose_model
from nmt_bert.decode.translator import TranslateStats, empty_translation
from nmt_bert.errors import UserError
from nmt_bert.model.checkpoint import WEIGHTS
from nmt_bert.train.run_dir import RunDir


def fake_run(path: Path, finished_at: float | None) -> Path:
    """A run directory with a best checkpoint; finished (marker mtime `finished_at`) or not."""
    run = RunDir(path)
    run.checkpoint("best").mkdir(parents=True)
    (run.checkpoint("best") / WEIGHTS).write_bytes(b"")
    run.write_info({"data_dir": "/nowhere"})
    if finished_at is not None:
        run.finished_file.write_text(json.dumps({"steps": 1}))
        os.utime(run.finished_file, (finished_at, finished_at))
    return path


def test_a_given_model_wins_then_the_environment_variable(tmp_path):
    fake_run(tmp_path / "runs" / "a", finished_at=1e9)
    assert choose_model("m", {"NMT_BERT_MODEL": "x"}, tmp_path) == (Path("m"), None)
    assert choose_model(None, {"NMT_BERT_MODEL": "/models/x"}, tmp_path) == (
        Path("/models/x"), "from $NMT_BERT_MODEL")
    assert choose_model(None, {"NMT_BERT_MODEL": " "}, tmp_path)[0] == Path("runs/a")


def test_the_newest_finished_run_under_runs_is_chosen(tmp_path):
    fake_run(tmp_path / "runs" / "old", finished_at=1_000_000_000)
    fake_run(tmp_path / "runs" / "fast-cpu" / "run", finished_at=1_100_000_000)  # `make quickstart`
    fake_run(tmp_path / "runs" / "unfinished", finished_at=None)  # written to last, not done
    (tmp_path / "runs" / "notes.txt").write_text("not a run\n")
    path, why = choose_model(None, {}, tmp_path)
    assert path == Path("runs/fast-cpu/run") and "newest finished run" in why
    os.utime(RunDir(tmp_path / "runs" / "old").finished_file, (1_200_000_000,) * 2)
    assert choose_model(None, {}, tmp_path)[0] == Path("runs/old")


@pytest.mark.parametrize("unfinished", [False, True])
def test_no_model_anywhere_is_a_one_line_error_naming_what_to_do(tmp_path, unfinished):
    if unfinished:
        fake_run(tmp_path / "runs" / "half" / "run", finished_at=None)
    with pytest.raises(UserError) as err:
        choose_model(None, {}, tmp_path)
    message = str(err.value)
    assert "--model" in message and "NMT_BERT_MODEL" in message
    assert "runs/*/ and runs/*/run/" in message and str(tmp_path) in message
    assert ("found only unfinished runs: runs/half/run" in message) == unfinished
    assert "\n" not in message


class StubTranslator:
    """What translate_file needs of a translator, without a model."""

    def __init__(self):
        self.config, self.stats = DecodeConfig(), TranslateStats()

    def translate(self, lines, progress=None):
        self.stats.sentences += len(lines)
        return [empty_translation() for _ in lines]


def test_translate_without_model_says_which_run_it_used(tmp_path, monkeypatch):
    fake_run(tmp_path / "runs" / "fast-cpu" / "run", finished_at=1_100_000_000)
    opened = []

    def open_translator(path, device, overrides):
        opened.append(path)
        return StubTranslator()

    monkeypatch.setattr(translate_file_module, "open_translator", open_translator)
    monkeypatch.delenv("NMT_BERT_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["translate"], input="dios\n\n")
    assert result.exit_code == 0, result.output
    assert opened == [Path("runs/fast-cpu/run")]
    assert "model: runs/fast-cpu/run (the newest finished run under runs/)" in result.stderr
    assert result.stdout == "\n\n"
    monkeypatch.setenv("NMT_BERT_MODEL", str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(app, ["translate"], input="dios\n")
    assert opened[-1] == tmp_path / "elsewhere" and "from $NMT_BERT_MODEL" in result.stderr
    monkeypatch.delenv("NMT_BERT_MODEL")
    (tmp_path / "runs").rename(tmp_path / "old-runs")
    result = CliRunner().invoke(app, ["translate"], input="dios\n")
    assert result.exit_code == 1 and "no model given: pass --model" in result.output
    assert len(opened) == 2
