"""Training progress: a rich bar with stage, step, tokens/s, loss, lr and ETA."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nmt_bert.train import distributed as dist


class TrainProgress:
    def __init__(self, stage: int, total: int, done: int, log):
        self.stage, self.total, self.log = stage, total, log
        self.tokens = 0
        self.seconds = 0.0
        self.progress = Progress(
            TextColumn(f"stage {stage}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=log.console, disable=not dist.is_rank0(), transient=False,
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
