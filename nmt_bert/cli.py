"""The `nmt-bert` command line: thin commands, each handing off to one library function.

This is the only module that imports typer. Errors the user can fix (UserError) print one
line and exit 1; anything else prints one line too unless --debug asks for the traceback.
Usage errors are one line as well (exit 2), and SIGTERM stops any command as Ctrl-C does:
temporaries are removed and finished outputs stay as they were.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer
from rich.console import Console

from nmt_bert import __version__
from nmt_bert.cpu import share_cores_politely
from nmt_bert.errors import UserError, first_line

try:  # recent typer releases carry their own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

# Library progress bars (weights loading, dataset maps) are not ours to show: our own bars
# and summaries say what happens. Set before transformers or datasets are imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
share_cores_politely()  # before torch is imported: see nmt_bert/cpu.py

app = typer.Typer(
    name="nmt-bert",
    help="Neural machine translation with a pretrained multilingual BERT encoder.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}

# Options shared by several commands: declared once so their names never drift apart.
RecipeOpt = Annotated[
    Optional[str], typer.Option("--recipe", "-r", help="YAML recipe overriding the defaults: "
                                "a file, or a bundled name (fast-cpu, bible-es-en, bible-es-en-gpu).")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override one config value: [bold]section.key=value[/].",
                 metavar="KEY=VALUE"),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="cpu, cuda, cuda:1, ... or auto (cuda when available).")
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (train.seed).")]
BudgetOpt = Annotated[
    Optional[str], typer.Option("--time-budget", help="Wall-clock budget such as 15m, 90s or "
                                "1.5h: the schedule is fitted to it (train.max_minutes).")
]
ModelOpt = Annotated[
    Optional[Path], typer.Option("--model", "-m", help="Run directory or checkpoint directory "
                                 "(default: $NMT_BERT_MODEL, else the newest finished run "
                                 "under ./runs/).")
]

F = TypeVar("F", bound=Callable)


def friendly_errors(fn: F) -> F:
    """Turn exceptions into one line on stderr and a non-zero exit (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except OSError as err:  # disk full, permissions, a vanished file: name the file
            if _state["debug"]:
                raise
            where = f"{err.filename}: " if err.filename else ""
            reason = err.strerror or first_line(err)
            err_console.print(f"[bold red]error:[/] {where}{reason}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as err:  # noqa: BLE001 - the user gets one line, --debug the rest
            if _state["debug"]:
                raise
            err_console.print(
                f"[bold red]error:[/] {type(err).__name__}: {first_line(err)} "
                "(rerun with --debug for details)", highlight=False, soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nmt-bert {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Prepare corpora, train a BERT-encoder translation model, translate and score."""
    _state["debug"] = debug
    if not debug:  # library warnings are for developers; --debug shows them
        for category in (UserWarning, FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
    _stop_on_sigterm()


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `kill`) ends a command as Ctrl-C does (train installs its own)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, interrupt)


def _config(recipe: Optional[str], overrides: Optional[list[str]], seed: Optional[int] = None,
            budget: Optional[str] = None):
    from nmt_bert.config import load_config

    sets = list(overrides or [])
    if seed is not None:
        sets.append(f"train.seed={seed}")
    if budget is not None:
        from nmt_bert.train.budget import parse_minutes

        sets.append(f"train.max_minutes={parse_minutes(budget)}")
    return load_config(recipe, sets)


@app.command()
@friendly_errors
def prepare(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output data directory.")],
    src: Annotated[Optional[Path], typer.Option(help="Source-side text file, one sentence a line.")] = None,
    tgt: Annotated[Optional[Path], typer.Option(help="Target-side text file, aligned with --src.")] = None,
    tsv: Annotated[Optional[Path], typer.Option(help="Tab-separated file: source<TAB>target.")] = None,
    tmx: Annotated[Optional[Path], typer.Option(help="TMX translation memory.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="`datasets` dataset: saved directory, data file or hub name.")] = None,
    dataset_config: Annotated[Optional[str], typer.Option(help="Hub dataset config, e.g. de-en.")] = None,
    dev: Annotated[Optional[list[Path]], typer.Option(help="Dev set: SRC TGT files (give twice) or one TSV.")] = None,
    test: Annotated[Optional[list[Path]], typer.Option(help="Test set: SRC TGT files (give twice) or one TSV.")] = None,
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
) -> None:
    """Clean and tokenize a parallel corpus (the bundled Spanish-English Bible by default)."""
    from nmt_bert.data.corpora import CorpusSpec
    from nmt_bert.data.prepare import prepare as run_prepare

    spec = CorpusSpec(src=src, tgt=tgt, tsv=tsv, tmx=tmx, dataset=dataset,
                      dataset_config=dataset_config, dev=dev or [], test=test or [])
    run_prepare(spec, out, _config(recipe, set_))


@app.command()
@friendly_errors
def train(
    data: Annotated[Optional[Path], typer.Option(help="Prepared data directory (from `prepare`).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory.")] = None,
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    time_budget: BudgetOpt = None,
) -> None:
    """Train: stage 1 with the encoder frozen, stage 2 with it unfrozen."""
    if resume is None and (data is None or out is None):
        raise UserError("give --data and --out for a new run, or --resume RUN_DIR")
    config = None if resume is not None else _config(recipe, set_, seed, time_budget)
    if resume is not None and (recipe or set_ or seed is not None or time_budget):
        raise UserError("--resume continues with the run's own config (and time budget); "
                        "drop --recipe/--set/--seed/--time-budget")
    from nmt_bert.train.training import train as run_train

    run_train(data_dir=data, run_dir=resume or out, config=config, device=device,
              resume=resume is not None)


@app.command()
@friendly_errors
def translate(
    input: Annotated[str, typer.Argument(help="Text file to translate, one sentence a line; - for stdin.")] = "-",
    model: ModelOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    beam: Annotated[Optional[int], typer.Option(help="Beam size (1 = greedy); decode.beam_size.")] = None,
    nbest: Annotated[Optional[int], typer.Option(help="Hypotheses per sentence, as Moses n-best lines: i ||| text ||| score.")] = None,
    buffer_lines: Annotated[Optional[int], typer.Option(help="From a pipe or terminal: translate once this many lines wait and input pauses; decode.buffer_lines.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Append protected spans a translation dropped and exit 1 at the end if any line lost or repeated one; decode.strict_spans.")] = False,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Translate a file or stdin line by line, streaming: each chunk of lines is written as
    soon as it is translated (empty lines stay empty, order is kept)."""
    from nmt_bert.decode.translate_file import translate_file

    overrides = list(set_ or [])
    for key, value in (("beam_size", beam), ("nbest", nbest), ("buffer_lines", buffer_lines)):
        if value is not None:
            overrides.append(f"decode.{key}={value}")
    if strict:
        overrides.append("decode.strict_spans=true")
    translate_file(input, model, output, overrides=overrides, device=device)


@app.command()
@friendly_errors
def score(
    hypothesis: Annotated[Path, typer.Argument(help="System output, one sentence a line.")],
    references: Annotated[list[Path], typer.Argument(help="One or more reference files.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    source: Annotated[Optional[Path], typer.Option("--source", help="Source file: adds the share of lines with protected spans (placeholders, markup, ...) whose hypothesis carries exactly those spans.")] = None,
    min_bleu: Annotated[Optional[float], typer.Option(help="Exit 1 if BLEU is below this.")] = None,
    min_chrf: Annotated[Optional[float], typer.Option(help="Exit 1 if chrF is below this.")] = None,
) -> None:
    """BLEU, chrF and TER through sacreBLEU, with signatures; a CI quality gate. With
    --source, also the agreement of protected spans between source and hypothesis."""
    from nmt_bert.metrics import check_gate_values, check_thresholds, format_report, score_files

    check_gate_values(min_bleu=min_bleu, min_chrf=min_chrf)  # before any work: nan never passes
    report = score_files(hypothesis, references, source)
    typer.echo(report.to_json() if json_ else format_report(report))
    failures = check_thresholds(report, min_bleu=min_bleu, min_chrf=min_chrf)
    if failures:
        for failure in failures:
            err_console.print(f"[bold red]quality gate failed:[/] {failure}", highlight=False)
        raise typer.Exit(1)


@app.command()
@friendly_errors
def pipeline(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for data, run and outputs.")] = Path("runs/fast-cpu"),
    recipe: RecipeOpt = "fast-cpu",
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    time_budget: Annotated[Optional[str], typer.Option(
        "--time-budget", help="Wall-clock budget for the whole job (15m, 1h; default: the "
        "recipe's train.max_minutes): training gets what prepare leaves and keeps the time "
        "translating the test set takes.")] = None,
) -> None:
    """The main job: prepare the bundled corpus, train, translate its test set, score it
    (the fast-cpu recipe unless --recipe names another)."""
    from nmt_bert.pipeline import run_pipeline
    from nmt_bert.train.budget import parse_minutes

    minutes = parse_minutes(time_budget) if time_budget is not None else None
    run_pipeline(out, _config(recipe, set_), device=device, budget_minutes=minutes)


@app.command()
@friendly_errors
def export(
    model: Annotated[Path, typer.Argument(help="Run directory or checkpoint directory.", metavar="RUN_OR_CHECKPOINT")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export directory to create.")],
    quantization: Annotated[str, typer.Option(help="Weight type: int8, int8_float32, int8_float16, int8_bfloat16, int16, float16, bfloat16 or float32 (exact).")] = "float32",
) -> None:
    """Export a model to CTranslate2 for fast serving; `translate --model DIR` reads it."""
    from nmt_bert.export.exporter import export_model

    export_model(model, out, quantization)


def run(argv: list[str] | None = None) -> int:
    """The `nmt-bert` entry point: the app, with usage errors as one line and exit 2."""
    try:
        result = app(args=argv, prog_name="nmt-bert", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as err:  # rich has printed the help already
        if err.format_message().strip():
            typer.echo(err.format_message())
        return 0
    except click_errors.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "nmt-bert"
        err_console.print(f"[bold red]error:[/] {first_line(err.format_message())} "
                          f"(see {command} --help)", highlight=False, soft_wrap=True)
        return 2
    except click_errors.ClickException as err:
        err_console.print(f"[bold red]error:[/] {first_line(err.format_message())}",
                          highlight=False, soft_wrap=True)
        return err.exit_code
    except typer.Abort:
        err_console.print("[yellow]aborted[/]")
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
