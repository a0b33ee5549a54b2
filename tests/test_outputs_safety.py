"""What nmt-bert writes and reads: nothing of the user's is replaced, nothing in a directory
of ours runs code, one writer per run, temporaries cleaned, errors in one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_model import build_tiny_checkpoint
from typer.testing import CliRunner

from conftest import tiny_sets, write_tiny_corpus
from nmt_bert.cli import app

runner = CliRunner()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt_bert", *args]


def sets(encoder_dir: Path, *extra: str) -> list[str]:
    return [a for s in tiny_sets(encoder_dir, *extra) for a in ("--set", s)]


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "╭" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_encoder_dir, tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tiny_encoder_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), pairs=120)


# --- never replace what is not ours ------------------------------------------------------
def test_prepare_refuses_a_directory_it_did_not_make(tmp_path, corpus, tiny_encoder_dir):
    user = tmp_path / "u"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work\n")
    src, tgt = corpus
    result = runner.invoke(app, ["prepare", "--src", str(src), "--tgt", str(tgt), "--out", str(user),
                                 *sets(tiny_encoder_dir)])
    assert result.exit_code == 1
    assert "is not a prepared data directory" in one_error_line(result.output)
    assert (user / "thesis.txt").read_text() == "years of work\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u"]  # no temporaries left


def test_prepare_refuses_a_file_and_the_current_directory(tmp_path, corpus, tiny_encoder_dir,
                                                          monkeypatch):
    src, tgt = corpus
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    result = runner.invoke(app, ["prepare", "--src", str(src), "--tgt", str(tgt), "--out",
                                 str(target), *sets(tiny_encoder_dir)])
    assert result.exit_code == 1 and "is a file" in one_error_line(result.output)
    assert target.read_text() == "mine\n"
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["prepare", "--src", str(src), "--tgt", str(tgt), "--out", ".",
                                 *sets(tiny_encoder_dir)])
    assert result.exit_code == 1 and "current directory" in one_error_line(result.output)


def test_prepare_replaces_its_own_output_but_never_an_input_inside_it(tmp_path, corpus,
                                                                     tiny_encoder_dir):
    src, tgt = corpus
    out = tmp_path / "data"
    args = ["prepare", "--src", str(src), "--tgt", str(tgt), "--out", str(out), *sets(tiny_encoder_dir)]
    assert runner.invoke(app, args).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())["created_at"]
    assert runner.invoke(app, args).exit_code == 0  # ours: replaced
    assert (out / "manifest.json").exists() and first
    assert oct((out / "spm.model").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    inside = out / "pairs.es"
    shutil.copy(src, inside)
    shutil.copy(tgt, out / "pairs.en")
    result = runner.invoke(app, ["prepare", "--src", str(inside), "--tgt", str(out / "pairs.en"),
                                 "--out", str(out), *sets(tiny_encoder_dir)])
    assert result.exit_code == 1 and "contains the input" in one_error_line(result.output)
    assert inside.exists()


def test_train_refuses_foreign_directories_and_its_own_data(tmp_path, tiny_prepared_dir,
                                                           tiny_encoder_dir):
    user = tmp_path / "u"
    user.mkdir()
    (user / "thesis.txt").write_text("mine\n")
    result = runner.invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out", str(user),
                                 "--device", "cpu", *sets(tiny_encoder_dir)])
    assert result.exit_code == 1 and "is not an nmt-bert run directory" in one_error_line(result.output)
    assert sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    before = (tiny_prepared_dir / "config.yaml").read_bytes()
    result = runner.invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out",
                                 str(tiny_prepared_dir), "--device", "cpu", *sets(tiny_encoder_dir)])
    assert result.exit_code == 1 and "overlaps the prepared data" in one_error_line(result.output)
    assert (tiny_prepared_dir / "config.yaml").read_bytes() == before
    assert not (tiny_prepared_dir / "train.log").exists()


def test_pipeline_refuses_a_directory_holding_other_files(tmp_path, tiny_encoder_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.txt").write_text("mine\n")
    result = runner.invoke(app, ["pipeline", "--out", str(out), *sets(tiny_encoder_dir)])
    assert result.exit_code == 1 and "a pipeline did not write" in one_error_line(result.output)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]


def test_a_run_stopped_before_its_first_checkpoint_starts_over(tmp_path, tiny_prepared_dir,
                                                              tiny_encoder_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data_dir": str(tiny_prepared_dir)}))
    (run / "config.yaml").write_text("train:\n  lr: 0.001\n")
    (run / "train.log").write_text("2026-01-01 disk full\n")
    (run / "checkpoints").mkdir()
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "no resumable checkpoint" in line and f"--out {run}" in line
    result = runner.invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out", str(run),
                                 "--device", "cpu", *sets(tiny_encoder_dir)])
    assert result.exit_code == 0, result.output
    assert "starting it again" in result.output
    assert "disk full" not in (run / "train.log").read_text()
    assert (run / "checkpoints" / "best" / "model.safetensors").exists()


# --- nothing in a directory of ours runs code ----------------------------------------------
EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def test_a_checkpoint_cannot_run_code(tmp_path, checkpoint_dir):
    crafted = tmp_path / "crafted"
    shutil.copytree(checkpoint_dir, crafted)
    marker = tmp_path / "code-ran"
    tok = crafted / "encoder_tokenizer"
    (tok / "evil.py").write_text(EVIL.format(marker=str(marker)) + (
        "from transformers import BertTokenizerFast\nclass Evil(BertTokenizerFast):\n    pass\n"))
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil.Evil"]}
    config["tokenizer_class"] = "Evil"
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "in.txt").write_text("dios dijo\n")
    result = subprocess.run(cli("translate", str(tmp_path / "in.txt"), "--model", str(crafted)),
                            input="y\ny\ny\n", capture_output=True, text=True, timeout=120)
    assert not marker.exists()
    assert "[y/N]" not in result.stdout + result.stderr
    assert result.returncode == 1
    assert "custom code" in one_error_line(result.stderr)


def test_an_encoder_config_naming_code_builds_the_plain_architecture(tmp_path, checkpoint_dir):
    crafted = tmp_path / "crafted"
    shutil.copytree(checkpoint_dir, crafted)
    marker = tmp_path / "code-ran"
    (crafted / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((crafted / "encoder_config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.Model", "AutoConfig": "evil.Config"}
    (crafted / "encoder_config.json").write_text(json.dumps(config))
    (tmp_path / "in.txt").write_text("dios dijo\n")
    result = subprocess.run(cli("translate", str(tmp_path / "in.txt"), "--model", str(crafted)),
                            input="y\n", capture_output=True, text=True, timeout=120)
    assert not marker.exists()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, content, named", [
    ("meta.json", "{not json", "meta.json"),
    ("encoder_tokenizer/tokenizer.json", "garbage", "encoder_tokenizer"),
    ("encoder_tokenizer/tokenizer_config.json", "[1, 2", "tokenizer_config.json"),
])
def test_a_garbage_file_in_a_checkpoint_is_one_line_naming_it(tmp_path, checkpoint_dir, name,
                                                              content, named):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint_dir, broken)
    (broken / name).write_text(content)
    (tmp_path / "in.txt").write_text("dios dijo\n")
    result = runner.invoke(app, ["translate", str(tmp_path / "in.txt"), "--model", str(broken)])
    assert result.exit_code == 1
    assert named in one_error_line(result.output)


def test_a_hostile_trainer_state_is_refused_in_one_line(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    ckpt = tmp_path / "last"
    ckpt.mkdir()
    (ckpt / "trainer_state.pt").write_bytes(pickle.dumps(Payload()))
    from nmt_bert.model.checkpoint import load_trainer_state
    from nmt_bert.errors import UserError

    with pytest.raises(UserError) as err:
        load_trainer_state(ckpt)
    assert "\n" not in str(err.value) and "trainer_state.pt" in str(err.value)


# --- one writer per run ---------------------------------------------------------------------
HOLD = """
import sys, time
from nmt_bert.locks import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_writer_per_run_and_a_killed_holder_blocks_nobody(tmp_path, tiny_prepared_dir,
                                                              tiny_encoder_dir):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = runner.invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out", str(run),
                                     "--device", "cpu", *sets(tiny_encoder_dir)])
        assert result.exit_code == 1
        assert f"in use by another nmt-bert process (pid {holder.pid}" in one_error_line(result.output)
        assert not (run / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = runner.invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out", str(run),
                                 "--device", "cpu", *sets(tiny_encoder_dir)])
    assert result.exit_code == 0, result.output


# --- temporaries, permissions, signals, write failures --------------------------------------
def _umask() -> int:
    from nmt_bert.atomic import umask

    return umask()


def test_atomic_outputs_respect_the_umask_and_keep_an_existing_mode(tmp_path):
    from nmt_bert.atomic import atomic_dir, atomic_file

    fresh, kept = tmp_path / "fresh.txt", tmp_path / "kept.txt"
    kept.write_text("old\n")
    os.chmod(kept, 0o640)
    for path in (fresh, kept):
        with atomic_file(path) as handle:
            handle.write("new\n")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "new\n"
    with atomic_dir(tmp_path / "tree") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("x")
        os.chmod(tmp / "sub" / "f", 0o600)  # as safetensors and mkstemp make them
    assert (tmp_path / "tree").stat().st_mode & 0o777 == 0o777 & ~_umask()
    assert (tmp_path / "tree" / "sub" / "f").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_temporaries_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    from nmt_bert.atomic import atomic_file

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    out = tmp_path / "out.txt"
    stale_file = tmp_path / f".out.txt.{dead}-abc123.tmp"
    stale_dir = tmp_path / f".out.txt.{dead}-def456.tmp"
    live = tmp_path / f".out.txt.{os.getppid()}-ghi789.tmp"  # our parent still runs
    stale_file.write_text("half")
    stale_dir.mkdir()
    live.write_text("in progress")
    other = tmp_path / f".other.txt.{dead}-abc123.tmp"
    other.write_text("not ours to touch")
    with atomic_file(out) as handle:
        handle.write("done\n")
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other.exists() and out.read_text() == "done\n"


PACED_TRANSLATE = """
import os, sys, time, pathlib
from nmt_bert.decode import translator
batch = translator.Translator.translate_batch
def paced(self, sources):
    pathlib.Path(os.environ["STARTED"]).touch()
    time.sleep(0.5)
    return batch(self, sources)
translator.Translator.translate_batch = paced
from nmt_bert.cli import run
sys.argv[0] = "nmt-bert"
sys.exit(run())
"""


def test_sigterm_during_translate_leaves_the_previous_output_and_no_temporary(tmp_path,
                                                                              checkpoint_dir):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"dios dijo luz {i}\n" for i in range(400)))
    out = tmp_path / "out.txt"
    out.write_text("previous\n")
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", PACED_TRANSLATE, "translate", str(source),
                             "--model", str(checkpoint_dir), "-o", str(out), "--set",
                             "decode.batch_size=8"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "STARTED": str(started)})
    deadline = time.time() + 60
    while time.time() < deadline and not started.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert out.read_text() == "previous\n"
    assert not list(tmp_path.glob(".out.txt.*"))
    assert "interrupted" in stderr


PACED_PREPARE = """
import sys, time, pathlib
from nmt_bert.data import prepare
train_sp = prepare.train_sentencepiece
def paced(*args, **kwargs):
    pathlib.Path(sys.argv[-1] + ".started").write_text("")
    time.sleep(30)
    return train_sp(*args, **kwargs)
prepare.train_sentencepiece = paced
from nmt_bert.cli import run
sys.argv[0] = "nmt-bert"
sys.exit(run(sys.argv[1:-1]))
"""


def test_sigterm_during_prepare_leaves_no_temporary(tmp_path, corpus, tiny_encoder_dir):
    src, tgt = corpus
    out = tmp_path / "data"
    started = tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", PACED_PREPARE, "prepare", "--src", str(src),
                             "--tgt", str(tgt), "--out", str(out), *sets(tiny_encoder_dir),
                             str(started)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not Path(str(started) + ".started").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert not out.exists() and not list(tmp_path.glob(".data.*"))


def test_a_failed_write_names_the_file_and_leaves_no_partial_output(tmp_path, checkpoint_dir):
    import resource

    source = tmp_path / "in.txt"
    source.write_text("".join(f"dios dijo luz {i}\n" for i in range(50)))
    out = tmp_path / "out.txt"

    def small_files():  # writes past 64 bytes fail as on a full disk (EFBIG instead of ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    result = subprocess.run(cli("translate", str(source), "--model", str(checkpoint_dir),
                                "-o", str(out)), capture_output=True, text=True,
                            preexec_fn=small_files, timeout=120)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert f"{out}: cannot write (File too large)" in line
    assert not out.exists() and not list(tmp_path.glob(".out.txt.*"))


def test_a_checkpoint_that_cannot_be_written_says_how_to_go_on(tmp_path, tiny_prepared_dir,
                                                              tiny_encoder_dir, monkeypatch):
    import safetensors.torch  # read by save_checkpoint when it writes the weights

    def disk_full(state, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(tiny_prepared_dir), "--out", str(run),
                                 "--device", "cpu", *sets(tiny_encoder_dir)])
    assert result.exit_code == 1
    line = one_error_line(result.output.splitlines()[-1])
    assert "model.safetensors: cannot write the checkpoint (No space left on device)" in line
    assert f"start again with --out {run}" in line
    assert not list((run / "checkpoints").glob(".*"))


# --- one line, no noise -------------------------------------------------------------------
def test_usage_errors_are_one_line_and_translate_stderr_has_no_library_noise(tmp_path,
                                                                           checkpoint_dir):
    result = subprocess.run(cli("train", "--bogus"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "No such option: --bogus" in one_error_line(result.stderr)
    (tmp_path / "in.txt").write_text("dios dijo\n")
    result = subprocess.run(cli("translate", str(tmp_path / "in.txt"), "--model",
                                str(checkpoint_dir)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert one_error_line(result.stderr).startswith("translated 1 sentences")


def test_a_truncated_encoder_cache_is_rebuilt(tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    import numpy as np

    from conftest import tiny_config
    from nmt_bert.train.encoder_cache import build_or_load
    from nmt_bert.train.run_log import RunLog
    from nmt_bert.train.run_setup import build
    from nmt_bert.train.run_dir import RunDir

    config = tiny_config(tiny_encoder_dir)
    run = RunDir(tmp_path / "run")
    run.create(tiny_prepared_dir, config)
    setup = build(run, tiny_prepared_dir, config, None, RunLog(run, enabled=False))
    setup.model.freeze_encoder(True)
    args = (setup.model, setup.train_data, setup.fingerprint, "float32", __import__("torch").device("cpu"))
    first = build_or_load(tmp_path / "cache", *args, log=lambda m: None)
    states = first.directory / "states.bin"
    expected = states.read_bytes()
    first.close()
    states.write_bytes(expected[: len(expected) // 3])
    messages = []
    again = build_or_load(tmp_path / "cache", *args, log=messages.append)
    assert any("damaged" in m and "rebuilding" in m for m in messages)
    assert (again.directory / "states.bin").read_bytes() == expected
    index = __import__("torch").arange(len(setup.train_data))
    assert np.isfinite(again.gather(index, int(setup.train_data.src_lens.max())).numpy()).all()
