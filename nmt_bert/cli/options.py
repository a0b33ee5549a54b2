"""Options several commands share, declared once so their names never drift apart, and
the config they build (defaults, then the recipe, then each `--set`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from nmt_bert.config import Config

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


def config_from_options(recipe: Optional[str], overrides: Optional[list[str]],
                        seed: Optional[int] = None, budget: Optional[str] = None) -> Config:
    """The config a command runs with: --seed and --time-budget become `--set`s."""
    from nmt_bert.config import load_config

    sets = list(overrides or [])
    if seed is not None:
        sets.append(f"train.seed={seed}")
    if budget is not None:
        from nmt_bert.train.budget import parse_minutes

        sets.append(f"train.max_minutes={parse_minutes(budget)}")
    return load_config(recipe, sets)
