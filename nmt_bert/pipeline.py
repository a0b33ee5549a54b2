"""The main job in one call: prepare the bundled corpus, train, translate the test set, score.

    OUT/data/          prepared corpus (reused when its config is unchanged)
    OUT/run/           the training run (resumed when interrupted, skipped when finished)
    OUT/test.hyp       test-set translations;  OUT/summary.json  timings and scores

OUT must be new, empty or an earlier pipeline's directory; one pipeline at a time writes it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nmt_bert.atomic import atomic_file, check_not_cwd
from nmt_bert.config import Config, config_to_dict
from nmt_bert.errors import UserError
from nmt_bert.locks import LOCK_FILE, exclusive
from nmt_bert.metrics import score_files
from nmt_bert.data.prepared_dir import load_prepared
from nmt_bert.train.run_dir import RunDir
from nmt_bert.textio import write_lines

ENTRIES = {"data", "run", "test.hyp", "summary.json", LOCK_FILE}


def check_pipeline_dir(out: Path) -> None:
    """OUT may be absent, empty, or hold only what a pipeline writes there (and its temporaries)."""
    check_not_cwd(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a directory name")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in ENTRIES and not _our_temporary(p.name))
    if foreign:
        raise UserError(f"--out {out}: holds files a pipeline did not write ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); nothing was changed. Choose "
                        "another directory")


def _our_temporary(name: str) -> bool:
    return any(name.startswith(f".{entry}.") for entry in ENTRIES)


def _prepared_matches(data_dir: Path, config: Config) -> bool:
    """Whether `data_dir` was prepared with the same data settings and encoder."""
    if not (data_dir / "manifest.json").exists():
        return False
    saved = load_prepared(data_dir).config_dict
    wanted = config_to_dict(config)
    return saved.get("data") == wanted["data"] and \
        saved.get("model", {}).get("encoder") == wanted["model"]["encoder"]


def run_pipeline(out: Path, config: Config, device: str = "auto",
                 console: Console | None = None, budget_minutes: float | None = None) -> dict:
    """Run every step not already done under `out`; returns the summary it also writes.

    A budget (`budget_minutes`, else the recipe's train.max_minutes) bounds the whole job:
    training gets what prepare leaves of it and keeps, at its end, the time translating and
    scoring the test set will take (measured as dev evaluations: `tail_evals`).
    """
    console = console or Console(stderr=True)
    out = Path(out)
    check_pipeline_dir(out)
    with exclusive(out):
        return _run_pipeline(out, config, device, console, budget_minutes)


# A beam-k test translation costs about 1 + BEAM_COST * (k - 1) greedy dev evaluations a line
# (an evaluation also scores the dev loss and saves checkpoints). Measured on the fast recipe,
# 2 cores: 488 test lines at beam 5 in 25.6 s against 519 dev lines in 20.4 s, 1.36 a line.
BEAM_COST = 0.1
# Scoring a test line against one reference costs about SCORE_COST of a dev evaluation's line
# (TER's shift search is most of it). Measured on the fast recipe, 2 cores: TER of 488 lines
# against one reference in 3.95 s, against dev evaluations of 519 lines in 24.6 and 34.4 s.
SCORE_COST = 0.15


def score_sets(references: list[Path]) -> dict[str, list[Path]]:
    """The test set's scorings: against the first reference and, with more, the others and all."""
    sets = {"reference": references[:1]}
    if len(references) > 1:
        sets["second reference"], sets["both references"] = references[1:], references
    return sets


def tail_evals(test_lines: int, dev_lines: int, scorings: list[list[Path]], beam_size: int) -> float:
    """Translating and scoring the test set, in dev evaluations (training's are greedy)."""
    per_line = 1 + BEAM_COST * (beam_size - 1) + SCORE_COST * sum(len(s) for s in scorings)
    return test_lines / max(dev_lines, 1) * per_line


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _run_pipeline(out: Path, config: Config, device: str, console: Console,
                  budget_minutes: float | None) -> dict:
    job_started = time.perf_counter()
    from nmt_bert.data.corpora import CorpusSpec
    from nmt_bert.data.prepare import prepare
    from nmt_bert.train.training import train
    from nmt_bert.decode.load import open_translator

    data_dir, run = out / "data", RunDir(out / "run")
    timings: dict[str, float] = {}

    start = time.perf_counter()
    if _prepared_matches(data_dir, config):
        console.print(f"[dim]prepare: reusing {data_dir}[/]")
    else:
        prepare(CorpusSpec(), data_dir, config)
    timings["prepare"] = time.perf_counter() - start
    prepared = load_prepared(data_dir)

    budget = budget_minutes if budget_minutes is not None else config.train.max_minutes
    if budget > 0:
        spent = (time.perf_counter() - job_started) / 60
        train_minutes = budget - spent
        if train_minutes <= 0:
            raise UserError(f"time budget {budget:g} min: prepare took {spent:.1f} min, "
                            "nothing is left for training")
        tail = tail_evals(count_lines(prepared.source_file("test")),
                          count_lines(prepared.source_file("dev")),
                          list(score_sets(prepared.references("test")).values()),
                          config.decode.beam_size)
        config = replace(config, train=replace(config.train, max_minutes=round(train_minutes, 3),
                                               tail_evals=round(tail, 3)))
        console.print(f"time budget: {train_minutes:.1f} of {budget:g} min for training, which "
                      "keeps the time translating and scoring the test set take")
    start = time.perf_counter()
    if run.resumable() is not None and not run.finished:
        train(None, run.path, None, device=device, resume=True)
    elif not run.finished:
        train(data_dir, run.path, config, device=device)
    timings["train"] = time.perf_counter() - start

    start = time.perf_counter()
    translator = open_translator(run.path, device=device)
    sources = prepared.source_file("test").read_text(encoding="utf-8").splitlines()
    hyps = [t.text for t in translator.translate(sources)]
    write_lines(out / "test.hyp", hyps)
    timings["translate"] = time.perf_counter() - start

    start = time.perf_counter()
    reports = {name: score_files(out / "test.hyp", refs)
               for name, refs in score_sets(prepared.references("test")).items()}
    timings["score"] = time.perf_counter() - start
    summary = {
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "scores": {name: {s.name: {"score": round(s.score, 2), "signature": s.signature}
                          for s in report.scores} for name, report in reports.items()},
        "test_sentences": len(sources),
        "decode": asdict(translator.config),
    }
    with atomic_file(out / "summary.json") as f:
        f.write(json.dumps(summary, indent=2, ensure_ascii=False))
    _print_summary(console, summary)
    return summary


def _print_summary(console: Console, summary: dict) -> None:
    table = Table(title="test set", show_header=True)
    for column in ("references", "BLEU", "chrF2", "TER"):
        table.add_column(column, justify="right" if column != "references" else "left")
    for name, scores in summary["scores"].items():
        table.add_row(name, *(f"{scores[m]['score']:.2f}" for m in ("BLEU", "chrF2", "TER")))
    console.print(table)
    console.print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items()))
    console.print(f"[dim]BLEU signature: {summary['scores']['reference']['BLEU']['signature']}[/]")
