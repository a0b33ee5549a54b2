"""Inputs that used to crash or slip through: config ranges, score gates, TSV columns,
empty translation inputs and unusable `-o` paths."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path

import pytest
from helpers_model import build_tiny_checkpoint
from typer.testing import CliRunner

import nmt_bert.config_rules as config_rules
import nmt_bert.metrics as metrics
from conftest import tiny_sets
from nmt_bert.cli import app
from nmt_bert.config import Config, load_config
from nmt_bert.config_fields import without_none
from nmt_bert.data.corpora import read_tsv
from nmt_bert.errors import UserError
from nmt_bert.decode.translator import Translator

runner = CliRunner()

# ---- config ranges ----------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("decode.max_len_a=-1", "decode.max_len_a must be >= 0, got -1.0"),
    ("decode.max_len_b=-3", "decode.max_len_b must be >= 0, got -3"),
    ("decode.length_penalty=-0.5", "decode.length_penalty must be >= 0, got -0.5"),
    ("train.lr=nan", "train.lr must be a finite number, got nan"),
    ("train.lr=-1e-3", "train.lr must be positive, got -0.001"),
    ("train.lr=0", "train.lr must be positive, got 0.0"),
    ("train.stage2_lr=-1", "train.stage2_lr must be >= 0, got -1.0"),
    ("train.encoder_lr=.nan", "train.encoder_lr must be a finite number, got nan"),
    ("train.clip_norm=-1", "train.clip_norm must be positive, got -1.0"),
    ("train.clip_norm=0", "train.clip_norm must be positive, got 0.0"),
    ("data.dev_fraction=2", "data.dev_fraction must be in [0, 1), got 2.0"),
    ("data.test_fraction=-0.1", "data.test_fraction must be in [0, 1), got -0.1"),
    ("model.dropout=5", "model.dropout must be in [0, 1), got 5.0"),
    ("model.dropout=1", "model.dropout must be in [0, 1), got 1.0"),
    ("train.weight_decay=-0.01", "train.weight_decay must be >= 0, got -0.01"),
    ("train.adam_beta2=1", "train.adam_beta2 must be in [0, 1), got 1.0"),
    ("train.warmup_steps=-1", "train.warmup_steps must be >= 0, got -1"),
    ("data.max_length_ratio=0.5", "data.max_length_ratio must be >= 1, got 0.5"),
    ("data.min_chars=0", "data.min_chars must be positive, got 0"),
    ("data.max_src_tokens=0", "data.max_src_tokens must be positive, got 0"),
    ("data.sp_character_coverage=0", "data.sp_character_coverage must be in (0, 1], got 0.0"),
    ("data.sp_character_coverage=1.5", "data.sp_character_coverage must be in (0, 1], got 1.5"),
    ("model.max_target_positions=0", "model.max_target_positions must be positive, got 0"),
    ("model.encoder_layers=-1", "model.encoder_layers must be >= 0, got -1"),
    ("model.adapter_hidden=0", "model.adapter_hidden must be positive, got 0"),
    ("train.patience=-1", "train.patience must be >= 0, got -1"),
    ("train.average_last=-2", "train.average_last must be >= 0, got -2"),
    ("train.log_every=0", "train.log_every must be positive, got 0"),
    ("train.max_bad_steps=0", "train.max_bad_steps must be positive, got 0"),
    ("train.threads=-1", "train.threads must be >= 0, got -1"),
    ("train.seed=-1", "train.seed must be in [0, 2**32), got -1"),
    ("train.stage1_steps=-5", "train.stage1_steps must be >= 0, got -5"),
])
def test_out_of_range_value_is_one_line_naming_key_and_range(override, message):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def keys_of_type(*types: type) -> list[str]:
    """Every `section.key` of the config whose declared type is one of `types` (or one of
    them or None)."""
    config = Config()
    keys = []
    for section in dataclasses.fields(config):
        hints = typing.get_type_hints(type(getattr(config, section.name)))
        keys += [f"{section.name}.{name}" for name, hint in hints.items()
                 if without_none(hint) in types]
    return keys


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf"])
def test_every_float_field_rejects_non_finite_values(value):
    floats = keys_of_type(float)
    assert len(floats) >= 14
    for key in floats:
        with pytest.raises(UserError, match=rf"^{key} must be a finite number, got -?(nan|inf)$"):
            load_config(None, [f"{key}={value}"])


def test_every_numeric_field_has_a_range():
    assert set(keys_of_type(int, float)) == set(config_rules.FIELD_RANGES)


def test_dev_and_test_fractions_must_leave_training_data():
    with pytest.raises(UserError, match=r"^data\.dev_fraction \+ data\.test_fraction must be < 1 "
                                        r"to leave training data, got 0\.6 \+ 0\.4$"):
        load_config(None, ["data.dev_fraction=0.6", "data.test_fraction=0.4"])
    assert load_config(None, ["data.dev_fraction=0.6", "data.test_fraction=0.3"])


def test_boundary_values_that_mean_something_still_validate(tiny_encoder_dir):
    config = load_config(None, [
        "decode.max_len_a=0", "decode.max_len_b=0", "decode.length_penalty=0",
        "train.stage2_lr=0", "train.encoder_lr=0", "train.weight_decay=0", "train.warmup_steps=0",
        "model.dropout=0", "data.dev_fraction=0", "data.test_fraction=0",
        "data.max_length_ratio=1", "data.sp_character_coverage=1", "train.adam_beta1=0",
    ])
    assert config.train.encoder_lr == 0.0 and config.decode.max_len_a == 0.0
    assert load_config(None, tiny_sets(tiny_encoder_dir)).model.d_model == 32


def test_max_chars_below_min_chars_is_rejected():
    with pytest.raises(UserError, match=r"data\.max_chars \(5\) must be >= data\.min_chars \(10\)"):
        load_config(None, ["data.min_chars=10", "data.max_chars=5"])


# ---- score quality gate -----------------------------------------------------------------


@pytest.fixture
def scored_files(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("the house of god\nthe king said\n", encoding="utf-8")
    ref.write_text("the house of the lord\nthe king said\n", encoding="utf-8")
    return hyp, ref


@pytest.mark.parametrize("option, value", [("--min-bleu", "nan"), ("--min-bleu", "inf"),
                                           ("--min-chrf", "-inf"), ("--min-chrf", "nan")])
def test_non_finite_gate_threshold_is_an_error(scored_files, option, value):
    result = runner.invoke(app, ["score", *map(str, scored_files), option, value])
    assert result.exit_code == 1, result.output
    assert f"{option} {value}: expected a finite number" in result.output
    assert "Traceback" not in result.output


def test_gate_values_are_checked_without_a_report():
    metrics.check_gate_values(min_bleu=20.0, min_chrf=None)
    with pytest.raises(UserError, match=r"^--min-chrf nan: expected a finite number$"):
        metrics.check_gate_values(min_bleu=1.0, min_chrf=float("nan"))


def test_nan_score_never_passes_the_gate():
    report = metrics.ScoreReport("hyp", ["ref"], 1, [
        metrics.MetricScore("BLEU", float("nan"), "sig", ""),
        metrics.MetricScore("chrF2", float("nan"), "sig", ""),
    ])
    failures = metrics.check_thresholds(report, min_bleu=0.0, min_chrf=-1.0)
    assert failures == ["BLEU is not a number (nan), required 0.00",
                        "chrF2 is not a number (nan), required -1.00"]
    assert metrics.check_thresholds(report) == []


# ---- TSV corpora ------------------------------------------------------------------------


@pytest.mark.parametrize("line, fields", [("hola\tmundo\thello world", 3),
                                          ("hola\thello\t", 3), ("a\tb\tc\td", 4)])
def test_tsv_line_with_more_than_two_fields_is_an_error(tmp_path, line, fields):
    path = tmp_path / "c.tsv"
    path.write_text(f"uno\tone\n{line}\ndos\ttwo\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        list(read_tsv(path))
    assert str(err.value) == (f"{path}:2: expected source<TAB>target, "
                              f"found {fields} tab-separated fields")


def test_dev_tsv_with_a_tab_inside_the_source_stops_prepare(tmp_path, tiny_encoder_dir):
    corpus, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    corpus.write_text("".join(f"dios rey {i}\tgod king {i}\n" for i in range(30)), encoding="utf-8")
    dev.write_text("agua\twater\nluz\tdel cielo\tlight of heaven\n", encoding="utf-8")
    sets = [arg for s in tiny_sets(tiny_encoder_dir) for arg in ("--set", s)]
    result = runner.invoke(app, ["prepare", "--tsv", str(corpus), "--dev", str(dev),
                                 "--out", str(tmp_path / "data"), *sets])
    assert result.exit_code == 1, result.output
    assert f"{dev}:2: expected source<TAB>target, found 3 tab-separated fields" in result.output
    assert not (tmp_path / "data").exists()


# ---- translate: empty inputs ------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_encoder_dir, tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tiny_encoder_dir)


SUMMARY = re.compile(r"translated 0 sentences in \d+\.\d s")


def test_translator_translates_no_lines(checkpoint_dir):
    translator = Translator.from_checkpoint(checkpoint_dir)
    done = []
    assert translator.translate([], progress=done.append) == []
    assert translator.stats.sentences == 0 and translator.stats.target_tokens == 0
    assert sum(done) == 0


def test_translate_rejects_an_out_of_range_decode_override(checkpoint_dir):
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "--set",
                                 "decode.max_len_a=-1"], input="dios rey\n")
    assert result.exit_code == 1, result.output
    assert "decode.max_len_a must be >= 0, got -1.0" in result.output and result.stdout == ""


@pytest.mark.parametrize("nbest", ["1", "2"])
def test_empty_stdin_gives_empty_stdout(checkpoint_dir, nbest):
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "--beam", "2",
                                 "--nbest", nbest, "--device", "cpu"], input="")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert SUMMARY.search(result.stderr), result.stderr


@pytest.mark.parametrize("nbest", ["1", "2"])
def test_empty_file_gives_empty_output_file(checkpoint_dir, tmp_path, nbest):
    source, out = tmp_path / "empty.es", tmp_path / "out.en"
    source.write_bytes(b"")
    out.write_text("previous\n", encoding="utf-8")
    result = runner.invoke(app, ["translate", str(source), "-m", str(checkpoint_dir),
                                 "-o", str(out), "--beam", "2", "--nbest", nbest,
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"" and result.stdout == ""
    assert SUMMARY.search(result.stderr), result.stderr


# ---- translate -o: unusable and missing directories --------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any attempt to load a model fails the test: output checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    from nmt_bert.decode.translator import Translator

    monkeypatch.setattr(Translator, "from_checkpoint", refuse)


@pytest.mark.parametrize("below", ["out.en", "a/b/out.en"])
def test_output_below_a_file_fails_before_loading_the_model(checkpoint_dir, tmp_path,
                                                            no_model_loading, below):
    source, blocker = tmp_path / "in.es", tmp_path / "file.txt"
    source.write_text("dios rey\n", encoding="utf-8")
    blocker.write_text("not a directory\n", encoding="utf-8")
    out = blocker / below
    result = runner.invoke(app, ["translate", str(source), "-m", str(checkpoint_dir),
                                 "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"{out}: parent {blocker} is not a directory" in result.output
    assert "Traceback" not in result.output and blocker.read_text() == "not a directory\n"


def test_output_that_is_a_directory_fails_before_loading_the_model(checkpoint_dir, tmp_path,
                                                                   no_model_loading):
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "-o", str(tmp_path)],
                           input="dios\n")
    assert result.exit_code == 1
    assert f"{tmp_path}: is a directory, expected an output file" in result.output


def test_output_in_an_unwritable_directory_fails_before_loading_the_model(
        checkpoint_dir, tmp_path, no_model_loading, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # root may write anywhere: pretend it may not
        if Path(path) == locked and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    for out in (locked / "out.en", locked / "new" / "out.en"):
        result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "-o", str(out)],
                               input="dios\n")
        assert result.exit_code == 1, result.output
        assert f"{out}: directory {locked} is not writable" in result.output
    assert list(locked.iterdir()) == []


def test_missing_output_directory_is_created_and_reported(checkpoint_dir, tmp_path):
    out = tmp_path / "new" / "sub" / "out.en"
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "-o", str(out),
                                 "--beam", "1", "--device", "cpu"], input="dios rey\n")
    assert result.exit_code == 0, result.output
    assert f"created directory {out.parent}" in result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1
    again = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "-o", str(out),
                                "--beam", "1", "--device", "cpu"], input="dios rey\n")
    assert again.exit_code == 0 and "created directory" not in again.stderr


def test_output_directory_is_not_created_when_the_model_fails_to_load(tmp_path):
    out = tmp_path / "new" / "out.en"
    result = runner.invoke(app, ["translate", "-m", str(tmp_path / "no-model"), "-o", str(out)],
                           input="dios\n")
    assert result.exit_code == 1
    assert not (tmp_path / "new").exists()
