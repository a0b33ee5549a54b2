"""The commands: each checks its options and hands off to one library function."""

from __future__ import annotations

import contextlib
import signal
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from nmt_bert import __version__
from nmt_bert.cli.errors import DEBUG, err_console, friendly_errors
from nmt_bert.cli.options import (BudgetOpt, DeviceOpt, ModelOpt, RecipeOpt, SeedOpt, SetOpt,
                                  config_from_options)
from nmt_bert.errors import UserError, first_line

try:  # recent typer releases carry their own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

app = typer.Typer(
    name="nmt-bert",
    help="Neural machine translation with a pretrained multilingual BERT encoder.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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
    DEBUG["on"] = debug
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
    run_prepare(spec, out, config_from_options(recipe, set_))


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
    config = None if resume is not None else config_from_options(recipe, set_, seed, time_budget)
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
    run_pipeline(out, config_from_options(recipe, set_), device=device, budget_minutes=minutes)


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

