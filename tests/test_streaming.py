"""`translate` streams: bounded memory, order across chunks, a pipe held open answered line by
line, an interrupted `-o` leaves the previous file, progress lines where stderr is no terminal."""

from __future__ import annotations

import io
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers_model import TINY_SPANISH, build_tiny_checkpoint, tiny_source_lines
from rich.console import Console
from typer.testing import CliRunner

import nmt_bert.progress as progress_module
from nmt_bert.cli import app
from nmt_bert.decode.input_chunks import FdLines, stream_chunks
from nmt_bert.decode.translator import Translator

runner = CliRunner()
# Greedy, one or two target tokens per line and big batches: 250k lines in seconds.
FAST = ["--set", "decode.beam_size=1", "--set", "decode.max_len_a=0",
        "--set", "decode.max_len_b=1", "--set", "decode.batch_size=512"]
RSS_BOUND_MB = 60  # peak RSS at 200k lines may exceed that at 50k by at most this much


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt_bert", *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_encoder_dir, tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tiny_encoder_dir)


@pytest.fixture(scope="module")
def translator(checkpoint_dir):
    return Translator.from_checkpoint(checkpoint_dir, device="cpu",
                                      overrides=["decode.beam_size=1"])


def write_short_lines(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(count):
            f.write(" ".join(rng.choice(TINY_SPANISH) for _ in range(rng.randint(1, 3))) + "\n")


# Linux carries ru_maxrss across exec, so a command started straight from this (large) test
# process would report at least this process's peak. A small launcher forks it instead; its
# wait4 rusage then holds the command's own peak, which it prints.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def peak_rss_mb(commands: list[list[str]]) -> list[float]:
    """Run `commands` side by side; each one's own peak RSS in MB."""
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCHER, *cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=child_env(), text=True)
             for cmd in commands]
    peaks = []
    for proc in procs:
        out, _ = proc.communicate()
        assert proc.returncode == 0, proc.args
        maxrss_kib, code = out.split()[-2:]
        assert code == "0", proc.args
        peaks.append(int(maxrss_kib) / 1024)  # Linux reports KiB
    return peaks


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB, as on Linux")
def test_peak_memory_does_not_grow_with_the_input(checkpoint_dir, tmp_path):
    """Peak RSS at 200k lines is within RSS_BOUND_MB of that at 50k lines. Reading the whole
    input first (the old behaviour) cost about 300 MB more at 200k lines than at 50k."""
    counts, commands = (50_000, 200_000), []
    for count in counts:
        source, out = tmp_path / f"in{count}.txt", tmp_path / f"out{count}.txt"
        write_short_lines(source, count)  # the same seed: the 50k lines begin the 200k
        commands.append(cli("translate", str(source), "--model", str(checkpoint_dir), "-o",
                            str(out), "--device", "cpu", *FAST))
    small, large = peak_rss_mb(commands)
    print(f"peak RSS {small:.1f} MB at 50k lines, {large:.1f} MB at 200k")
    assert large - small < RSS_BOUND_MB, (small, large)
    for count in counts:
        with open(tmp_path / f"out{count}.txt", "rb") as f:
            assert sum(1 for _ in f) == count
    with open(tmp_path / "out200000.txt", encoding="utf-8") as f:
        head = [next(f) for _ in range(50_000)]
    assert head == (tmp_path / "out50000.txt").read_text(encoding="utf-8").splitlines(True)


# ---- order, empty lines and n-best numbering across chunk boundaries ----------------------


def lines_with_gaps() -> list[str]:
    words = tiny_source_lines(12, seed=3)
    # chunks of 3: [w0 w1 ""] ["" w2 w3] ["  " "" "\t"] [w4 w5 ""] [w6]
    return [words[0], words[1], "", "", words[2], words[3], "  ", "", "\t", words[4],
            words[5], "", words[6]]


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_order_and_empty_lines_are_kept_across_chunk_boundaries(checkpoint_dir, translator,
                                                                tmp_path, via):
    lines = lines_with_gaps()
    expected = [t.text for t in translator.translate(lines)]  # one call: no chunks
    assert all(expected[i] == "" for i in (2, 3, 6, 7, 8, 11))
    assert len({text for text in expected if text}) > 3
    args = ["translate", "-m", str(checkpoint_dir), "--beam", "1", "--device", "cpu",
            "--set", "decode.chunk_lines=3", "--set", "decode.batch_size=2"]
    if via == "file":
        source, out = tmp_path / "in.es", tmp_path / "out.en"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = runner.invoke(app, [*args, str(source), "-o", str(out)])
        written = out.read_text(encoding="utf-8")
    else:
        result = runner.invoke(app, args, input="\n".join(lines) + "\n")
        written = result.stdout
    assert result.exit_code == 0, result.output
    assert written.split("\n") == expected + [""]


def test_nbest_numbering_counts_input_lines_across_chunks(checkpoint_dir):
    lines = ["dios rey", "", "agua luz", "cielo", "", "padre hijo"]
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "--beam", "2",
                                 "--nbest", "2", "--set", "decode.chunk_lines=2"],
                           input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    rows = [re.fullmatch(r"(\d+) \|\|\| (.*) \|\|\| (-?\d+\.\d{4})", line)
            for line in result.stdout.splitlines()]
    assert all(rows), result.stdout
    assert [int(row[1]) for row in rows] == [0, 0, 1, 2, 2, 3, 3, 4, 5, 5]


# ---- reading a pipe as lines arrive --------------------------------------------------------


def test_stream_chunks_hand_over_what_has_arrived_when_the_pipe_pauses():
    read_end, write_end = os.pipe()
    try:
        chunks = stream_chunks(FdLines(read_end), chunk_lines=3, buffer_lines=1, pause=0.05)
        os.write(write_end, b"uno\ndo")  # a line and a half
        assert next(chunks) == ["uno"]  # the pipe is still open
        os.write(write_end, "s\n\ntrés\ncuatro\n".encode())
        time.sleep(0.2)  # all of it has arrived: a full chunk, then the rest at the pause
        assert next(chunks) == ["dos", "", "trés"]
        assert next(chunks) == ["cuatro"]
        os.write(write_end, b"cinco")
        os.close(write_end)
        write_end = None
        assert list(chunks) == [["cinco"]]  # the last line needs no newline
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


def test_buffer_lines_waits_for_that_many_lines():
    read_end, write_end = os.pipe()
    chunks = stream_chunks(FdLines(read_end), chunk_lines=100, buffer_lines=2, pause=0.05)
    got = []
    reader = threading.Thread(target=lambda: got.append(next(chunks)))
    reader.start()
    os.write(write_end, b"uno\n")
    time.sleep(0.3)
    assert got == []  # one line waits, however long the pause
    os.write(write_end, b"dos\n")
    reader.join(timeout=10)
    assert got == [["uno", "dos"]]
    os.close(write_end)
    assert list(chunks) == []
    os.close(read_end)


def test_buffer_lines_option_sets_decode_buffer_lines(checkpoint_dir):
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "--buffer-lines", "0"],
                           input="dios\n")
    assert result.exit_code == 1
    assert "decode.buffer_lines must be positive, got 0" in result.output


def read_line(stream, timeout: float) -> bytes:
    """One line from a child's stdout, failing the test after `timeout` seconds."""
    fd, data, deadline = stream.fileno(), b"", time.time() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.time()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no line after {timeout} s"
        chunk = os.read(fd, 4096)
        assert chunk, f"stdout closed after {data!r}"
        data += chunk
    return data


def test_a_pipe_held_open_gets_each_translation_before_the_next_line(checkpoint_dir,
                                                                     translator):
    lines = ["dios dijo luz", "agua cielo tierra padre"]
    expected = [t.text for t in translator.translate(lines)]
    proc = subprocess.Popen(cli("translate", "--model", str(checkpoint_dir), "--beam", "1",
                                "--device", "cpu"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    try:
        answers = []
        for line in lines:  # the next line is written only once the last one is answered
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            answers.append(read_line(proc.stdout, timeout=120).decode().rstrip("\n"))
        rest, stderr = proc.communicate(timeout=60)  # closes stdin: the end of input
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert answers == expected and rest == b""
    assert "translated 2 sentences" in stderr.decode()


def test_translate_stops_quietly_when_stdout_is_closed(checkpoint_dir, tmp_path):
    source = tmp_path / "in.es"
    write_short_lines(source, 3000)
    proc = subprocess.Popen(cli("translate", str(source), "--model", str(checkpoint_dir),
                                "--device", "cpu", *FAST, "--set", "decode.chunk_lines=100"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    read_line(proc.stdout, timeout=120)
    proc.stdout.close()  # as `| head -n 1` does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    assert "stdout was closed after" in stderr.decode()
    assert "Traceback" not in stderr.decode() and "Exception ignored" not in stderr.decode()


# ---- -o interrupted ---------------------------------------------------------------------

PACED = """
import sys, time
from nmt_bert.decode import translator
batch = translator.Translator.translate_batch
def paced(self, sources):
    time.sleep(0.2)
    return batch(self, sources)
translator.Translator.translate_batch = paced
from nmt_bert.cli import run
sys.exit(run(sys.argv[1:]))
"""


def start_paced(checkpoint_dir: Path, source: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PACED, "translate", str(source), "--model", str(checkpoint_dir),
         "-o", str(out), "--device", "cpu", "--beam", "1", "--set", "decode.chunk_lines=4",
         "--set", "decode.batch_size=2"], stderr=subprocess.PIPE, text=True, env=child_env())


def wait_for_partial_output(out: Path, proc: subprocess.Popen) -> Path:
    """The temporary sibling of `out`, once it holds translated lines (written progressively)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        temps = list(out.parent.glob(f".{out.name}.*.tmp"))
        if temps and temps[0].stat().st_size > 0:
            return temps[0]
        time.sleep(0.05)
    raise AssertionError(f"no partial output (exit {proc.poll()})")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_o_killed_mid_run_leaves_the_previous_file_intact(checkpoint_dir, tmp_path, how):
    source, out = tmp_path / "in.es", tmp_path / "out.en"
    write_short_lines(source, 400)
    out.write_text("previous\n", encoding="utf-8")
    proc = start_paced(checkpoint_dir, source, out)
    try:
        temp = wait_for_partial_output(out, proc)
        assert out.read_text(encoding="utf-8") == "previous\n"  # nothing renamed yet
        proc.send_signal(how)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.read_text(encoding="utf-8") == "previous\n"
    if how == signal.SIGTERM:
        assert proc.returncode == 130, stderr
        done = re.search(r"stopped after ([\d,]+) translated lines \((.*) is unchanged\)", stderr)
        assert done and done[2] == str(out), stderr
        lines = int(done[1].replace(",", ""))
        assert 4 <= lines < 400 and lines % 4 == 0
        assert "Traceback" not in stderr and not temp.exists()
    else:  # no chance to clean up: the next writer of out removes the dead one's temporary
        assert proc.returncode == -signal.SIGKILL and temp.exists()


# ---- progress lines where stderr is not a terminal ----------------------------------------


def test_translate_prints_progress_lines_where_stderr_is_not_a_terminal(checkpoint_dir,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "EVERY_SECONDS", 0.0)
    source = tmp_path / "in.es"
    write_short_lines(source, 6)
    result = runner.invoke(app, ["translate", str(source), "-m", str(checkpoint_dir),
                                 "--device", "cpu", "--beam", "1", "-o", str(tmp_path / "o"),
                                 "--set", "decode.chunk_lines=2", "--set", "decode.batch_size=2"])
    assert result.exit_code == 0, result.output
    assert "translating: 2/6 lines (33%)" in result.stderr
    assert "translating: 6/6 lines (100%)" in result.stderr
    assert "\x1b[" not in result.stderr  # plain text, no live bar


def test_line_progress_announces_tasks_and_prints_counts():
    out = io.StringIO()
    console = Console(file=out, width=40)
    assert not console.is_terminal
    bar = progress_module.progress_bar(console, unit="pairs", announce=True)
    assert isinstance(bar, progress_module.LineProgress)
    bar.every = 0.0
    with bar:
        task = bar.add_task("tokenizing train with a long description", total=4000)
        bar.advance(task, 1000)
        bar.add_task("training SentencePiece", total=None)
    lines = out.getvalue().splitlines()
    assert lines[0] == "tokenizing train with a long description ..."
    assert re.fullmatch(r"tokenizing train with a long description: 1,000/4,000 pairs \(25%\), "
                        r"\d+s, ETA \d+s", lines[1]), lines
    assert lines[2:] == ["training SentencePiece ..."]
    assert progress_module.duration(3725) == "1h02m" and progress_module.duration(65) == "1m05s"
