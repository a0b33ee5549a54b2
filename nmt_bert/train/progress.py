"""Training progress: a rich bar on a terminal, and a plain step line every train.log_every.

The step line (stage, step/total, loss, tokens/s, learning rate, elapsed and ETA) always
goes to train.log. On the console it is printed only where stderr is not a terminal (a CI
job, `2> log`), which shows no live bar; a terminal keeps the bar, which shows the same.
"""

from __future__ import annotations

import time

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nmt_bert.progress import duration
from nmt_bert.train import distributed as dist


class TrainProgress:
    def __init__(self, stage: int, total: int, done: int, log):
        self.stage, self.total, self.log = stage, total, log
        self.tokens = 0
        self.seconds = 0.0
        self.terminal = log.console.is_terminal
        self.started, self.first_step = time.perf_counter(), done  # for elapsed and ETA
        self.progress = Progress(
            TextColumn(f"stage {stage}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=log.console, disable=not (dist.is_rank0() and self.terminal),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def set_total(self, total: int) -> None:
        """A re-planned stage (time budget) has a new number of steps."""
        self.total = total
        self.progress.update(self.task, total=total)

    def update(self, step: int, out: dict, seconds: float) -> None:
        self.tokens += out.get("tokens", 0)
        self.seconds += seconds
        info = f"{self.rates()['tokens_per_s']:,.0f} tok/s"
        if "loss" in out:
            info += f"  loss {out['loss']:.3f}  lr {out['lr']:.2e}"
        self.progress.update(self.task, completed=step, info=info)

    def rates(self) -> dict:
        return {"tokens_per_s": self.tokens * dist.world_size() / max(self.seconds, 1e-9)}

    def log_step(self, step: int, out: dict) -> None:
        """Record the step line of `step` (a completed, not skipped, step) in train.log,
        and on the console where there is no bar."""
        self.log.info(self.step_line(step, out), echo=not self.terminal)

    def step_line(self, step: int, out: dict) -> str:
        """`stage 1 step 50/1800 loss 5.123 12,345 tok/s lr 3.50e-04 elapsed 1m02s ETA 21m10s`.

        Elapsed counts wall time since this stage started in this process (evaluations
        included); ETA extrapolates it over the steps still to go.
        """
        elapsed = time.perf_counter() - self.started
        steps = step - self.first_step
        eta = elapsed / steps * (self.total - step) if steps > 0 else 0.0
        width = len(str(self.total))
        return (f"stage {self.stage} step {step:>{width}}/{self.total} loss {out['loss']:.3f} "
                f"{self.rates()['tokens_per_s']:,.0f} tok/s lr {out['lr']:.2e} "
                f"elapsed {duration(elapsed)} ETA {duration(eta)}")
