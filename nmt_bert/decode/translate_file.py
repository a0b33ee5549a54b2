"""The `translate` command: a text file (or stdin) in, one translation per line out."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nmt_bert.atomic import atomic_file
from nmt_bert.errors import UserError
from nmt_bert.textio import decode_line, read_lines
from nmt_bert.decode.load import open_translator
from nmt_bert.decode.translator import TranslateStats, Translation, Translator


def translate_file(input: str, model: Path, output: Path | None, overrides: list[str],
                   device: str = "auto") -> TranslateStats:
    """Translate `input` ("-" for stdin) with the checkpoint at `model`.

    Writes to stdout, or to `output` atomically (a failed run leaves no partial file). An
    unusable `output` fails before the model is loaded; its missing parent directories are
    created (and reported) once the model has loaded, before translating.
    With decode.nbest > 1 each input gives Moses-style `i ||| hypothesis ||| score` lines
    (i counts input lines from 0). A summary goes to stderr.
    """
    console = Console(stderr=True)
    if output is not None:
        check_output(Path(output), None if input == "-" else Path(input))
    lines = read_stdin() if input == "-" else read_lines(Path(input), "input file")
    translator = open_translator(model, device=device, overrides=overrides)
    if output is not None:
        create_parent(Path(output), console)
    translations = run_with_progress(translator, lines, console, show=input != "-")
    nbest = translator.config.nbest
    if output is None:
        sys.stdout.flush()
        out = getattr(sys.stdout, "buffer", None)
        for line in output_lines(translations, nbest):
            if out is not None:
                out.write((line + "\n").encode("utf-8"))
            else:
                sys.stdout.write(line + "\n")
        sys.stdout.flush()
    else:
        with atomic_file(Path(output)) as handle:
            for line in output_lines(translations, nbest):
                handle.write(line + "\n")
    print_summary(console, translator.stats)
    return translator.stats


def read_stdin() -> list[str]:
    """All of stdin, decoded as strictly as files are; errors name `<stdin>:LINE`."""
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    lines = []
    for number, raw in enumerate(stream, start=1):
        if isinstance(raw, str):  # a text-only stdin (embedding applications)
            raw = raw.encode("utf-8", errors="surrogateescape")
        lines.append(decode_line(raw, "<stdin>", number))
    return lines


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


def run_with_progress(translator: Translator, lines: list[str], console: Console,
                      show: bool) -> list[Translation]:
    """Translate with a progress bar on stderr, drawn only where stderr is a terminal."""
    columns = (TextColumn("translating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    disable = not (show and console.is_terminal)
    with Progress(*columns, console=console, transient=True, disable=disable) as bar:
        task = bar.add_task("translate", total=len(lines))
        return translator.translate(lines, progress=lambda n: bar.advance(task, n))


def output_lines(translations: list[Translation], nbest: int) -> Iterator[str]:
    """The best translation per input line, or Moses n-best lines when `nbest` > 1."""
    for index, translation in enumerate(translations):
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
        + (f"; {stats.truncated} sentences truncated" if stats.truncated else ""),
        highlight=False, soft_wrap=True,
    )
