"""The `translate` command: a text file (or stdin) in, one translation per line out, streamed.

The input is read lazily in chunks (decode.chunk_lines lines; from a pipe or terminal, also
whatever has arrived when the input pauses, see `input_chunks`). Each chunk is translated
(sorted by length inside the chunk, order restored) and its lines written and flushed before
the next chunk is read, so memory does not grow with the input and output appears as it is
made.

`translate_file` needs from the object `open_translator` returns only `translate(lines,
progress)`, `config` (a DecodeConfig) and `stats` (a TranslateStats).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from nmt_bert.atomic import atomic_file
from nmt_bert.decode.default_model import choose_model
from nmt_bert.decode.input_chunks import input_chunks
from nmt_bert.decode.load import open_translator
from nmt_bert.decode.translator import TranslateStats, Translation
from nmt_bert.decode.translator import Translator  # noqa: F401 - tests patch its loading here
from nmt_bert.errors import UserError
from nmt_bert.progress import progress_bar
from nmt_bert.textio import check_readable_file, count_lines


def translate_file(input: str, model: Path | None, output: Path | None, overrides: list[str],
                   device: str = "auto") -> TranslateStats:
    """Translate `input` ("-" for stdin) with the run or checkpoint at `model`, chunk by chunk.

    Without `model`: $NMT_BERT_MODEL, else the newest finished run under ./runs/
    (`default_model.choose_model`), said on stderr.

    Writes to stdout, flushed after each chunk, or to `output` atomically: its temporary
    sibling grows chunk by chunk and replaces `output` only at the end, so a failed or
    interrupted run leaves a previous `output` as it was. An interrupted run (Ctrl-C,
    SIGTERM) says on stderr how many lines were done, then re-raises KeyboardInterrupt. An
    unusable input or `output` fails before the model is loaded; missing parent directories
    of `output` are created (and reported) once the model has loaded, before translating.
    With decode.nbest > 1 each input gives Moses-style `i ||| hypothesis ||| score` lines
    (i counts input lines from 0, across chunks). A summary goes to stderr.
    """
    console = Console(stderr=True)
    source = None if input == "-" else check_readable_file(Path(input), "input file")
    if output is not None:
        check_output(Path(output), source)
    model, why = choose_model(model)
    if why is not None:
        console.print(f"model: {model} ({why})", highlight=False, soft_wrap=True)
    translator = open_translator(model, device=device, overrides=overrides)
    if output is not None:
        create_parent(Path(output), console)
    cfg = translator.config
    chunks = input_chunks(source, cfg.chunk_lines, cfg.buffer_lines)
    total = count_lines(source) if source is not None and source.is_file() else None
    # A bar only for a file, and not while translations appear on the same terminal.
    show = source is not None and not (output is None and is_terminal(sys.stdout))
    done = 0
    try:
        with progress(console, total, show) as advance, open_output(output) as write:
            for chunk in chunks:
                translations = translator.translate(chunk, progress=advance)
                write(output_lines(translations, cfg.nbest, done))
                done += len(chunk)
    except KeyboardInterrupt:
        where = f"{output} is unchanged" if output is not None else "written to stdout"
        console.print(f"stopped after {done:,} translated lines ({where})", highlight=False,
                      soft_wrap=True)
        raise
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        stop_writing_stdout()
        console.print(f"stdout was closed after {done:,} lines: stopped", highlight=False,
                      soft_wrap=True)
    print_summary(console, translator.stats)
    if cfg.strict_spans and translator.stats.span_problems:
        raise UserError(f"--strict: {translator.stats.span_problems} translated lines lost or "
                        "repeated a protected span (missing spans were appended to them)")
    return translator.stats


@contextlib.contextmanager
def open_output(output: Path | None) -> Iterator[Callable[[Iterator[str]], None]]:
    """A `write(lines)` that writes each line plus "\\n" and flushes: to stdout, or into the
    temporary file that `atomic_file` renames onto `output` when the block succeeds."""
    if output is not None:
        with atomic_file(Path(output)) as handle:
            def write_file(lines: Iterator[str]) -> None:
                handle.write("".join(line + "\n" for line in lines))
                handle.flush()

            yield write_file
        return
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)

    def write_stdout(lines: Iterator[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if binary is not None:
            binary.write(text.encode("utf-8"))
            binary.flush()
        else:  # a text-only stdout (embedding applications)
            sys.stdout.write(text)
            sys.stdout.flush()

    yield write_stdout


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def stop_writing_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush finds no closed pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def check_output(output: Path, input: Path | None) -> None:
    """Raise UserError if `output` cannot be written, before any model is loaded.

    Rejected: an existing directory, a path below something that is not a directory, a
    nearest existing directory that is not writable, and the input file itself.
    """
    if output.is_dir():
        raise UserError(f"{output}: is a directory, expected an output file")
    parent = nearest_existing(output.parent)
    if not parent.is_dir():
        raise UserError(f"{output}: parent {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{output}: directory {parent} is not writable")
    if input is None:
        return
    if output.resolve() == input.resolve() or (output.exists() and os.path.samefile(output, input)):
        raise UserError(f"{output}: output would overwrite the input file")


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (a dangling symlink counts as existing)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return path


def create_parent(output: Path, console: Console) -> None:
    """Create the missing directories above `output`, saying so on `console`."""
    if output.parent.is_dir():
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{output}: cannot create directory {output.parent} "
                        f"({err.strerror or err})") from None
    console.print(f"created directory {output.parent}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress(console: Console, total: int | None,
             show: bool) -> Iterator[Callable[[int], None]]:
    """An `advance(n)` for translated lines: a bar on a terminal (when `show`), plain lines
    every half minute where stderr is not a terminal (`nmt_bert.progress`)."""
    columns = (TextColumn("translating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with progress_bar(console, *columns, show=show, unit="lines") as bar:
        task = bar.add_task("translating", total=total)
        yield lambda n: bar.advance(task, n)


def output_lines(translations: list[Translation], nbest: int, first: int = 0) -> Iterator[str]:
    """The best translation per input line, or Moses n-best lines when `nbest` > 1, whose
    index counts input lines from `first` (the chunk's first line in the whole input)."""
    for index, translation in enumerate(translations, start=first):
        if nbest == 1:
            yield translation.text
            continue
        for candidate in translation.candidates[:nbest]:
            yield f"{index} ||| {candidate.text} ||| {candidate.score:.4f}"


def print_summary(console: Console, stats: TranslateStats) -> None:
    console.print(
        f"translated {stats.sentences} sentences in {stats.seconds:.1f} s: "
        f"{stats.sentences_per_second:.1f} sentences/s, "
        f"{stats.target_tokens_per_second:.0f} target tokens/s; "
        f"{stats.oov_pieces} source pieces outside the model's vocabulary"
        + (f"; {stats.truncated} sentences truncated" if stats.truncated else "")
        + (f"; protected spans: {stats.span_problems} of {stats.span_lines} lines with spans "
           "dropped, repeated or invented one" if stats.span_lines else ""),
        highlight=False, soft_wrap=True,
    )
