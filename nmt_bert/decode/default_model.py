"""Which model `translate` (or `load_translator`) uses when none is named.

In order: the model given; else $NMT_BERT_MODEL; else the newest finished run under
./runs/, looking at runs/*/ and runs/*/run/ (where `nmt-bert pipeline` and so `make
quickstart` put theirs). "Newest" is by the time the run finished (its finished marker).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nmt_bert.errors import UserError
from nmt_bert.train.run_dir import RunDir

ENV = "NMT_BERT_MODEL"
RUNS = "runs"
PLACES = ("*", "*/run")  # below RUNS


def choose_model(model: Path | str | None, environ: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> tuple[Path, str | None]:
    """(the model directory to open, why it was chosen: None when `model` was given).

    Raises UserError naming --model, $NMT_BERT_MODEL and the places looked in when there is
    no model to choose.
    """
    if model is not None:
        return Path(model), None
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "").strip():
        return Path(environ[ENV].strip()), f"from ${ENV}"
    cwd = Path.cwd() if cwd is None else Path(cwd)
    runs, unfinished = finished_runs(cwd / RUNS)
    if runs:
        newest = max(runs, key=lambda run: run.finished_file.stat().st_mtime)
        return _relative(newest.path, cwd), f"the newest finished run under {RUNS}/"
    looked = " and ".join(f"{RUNS}/{place}/" for place in PLACES)
    found = (f"found only unfinished runs: {', '.join(str(_relative(r.path, cwd)) for r in unfinished)}"
             if unfinished else "found no run")
    raise UserError(f"no model given: pass --model RUN_OR_CHECKPOINT_DIR or set {ENV} "
                    f"(looked for a finished run in {looked} under {cwd}: {found})")


def finished_runs(runs_dir: Path) -> tuple[list[RunDir], list[RunDir]]:
    """Runs in `runs_dir`'s PLACES: (finished with a checkpoint, the others), each sorted."""
    finished, others = [], []
    for place in PLACES:
        for path in sorted(runs_dir.glob(place)):
            if not path.is_dir() or not RunDir.is_run(path):
                continue
            run = RunDir(path)
            (finished if run.finished and run.best_or_last() is not None else others).append(run)
    return finished, others


def _relative(path: Path, cwd: Path) -> Path:
    try:
        return path.relative_to(cwd)
    except ValueError:
        return path
