"""Progress on stderr: a live rich bar on a terminal, plain periodic lines anywhere else.

Where stderr is not a terminal (a CI job, `2> log`), rich draws no live bar at all, so a
long step would print nothing. `progress_bar` then returns a `LineProgress`: the same rich
`Progress` interface (add_task, advance, update, tasks) drawing nothing live, printing one
plain line per task every `EVERY_SECONDS` of progress instead.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TaskID

# Often enough that a CI log shows a long job alive (CI services stop jobs silent for ten
# minutes), rarely enough that a log of an hour-long job stays readable.
EVERY_SECONDS = 30.0


def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m05s, 2h07m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LineProgress(Progress):
    """A rich Progress that draws nothing live and prints plain progress lines instead.

    A task's line (`description: done/total (pct%) unit, elapsed, ETA`) is printed when at
    least `every` seconds have passed since its last line (or its start) and it advances;
    with `announce`, a line also says when each task starts. Nothing is printed at the end:
    the caller's summary says how it went.
    """

    def __init__(self, console: Console, unit: str = "", every: float | None = None,
                 announce: bool = False):
        super().__init__(console=console, disable=True)
        self.unit, self.announce = unit, announce
        self.every = EVERY_SECONDS if every is None else every
        self.last_line: dict[TaskID, float] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self.last_line[task_id] = self.get_time()
        if self.announce:
            self.say(f"{description} ...")
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.maybe_line(task_id)

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self.maybe_line(task_id)

    def maybe_line(self, task_id: TaskID) -> None:
        now = self.get_time()
        if now - self.last_line.get(task_id, now) < self.every:
            return
        self.last_line[task_id] = now
        self.say(self.line(self._tasks[task_id]))

    def line(self, task: Task) -> str:
        elapsed = task.elapsed or 0.0
        unit = f" {self.unit}" if self.unit else ""
        if not task.total:
            return f"{task.description}: {task.completed:,.0f}{unit}, {duration(elapsed)}"
        done = min(task.completed / task.total, 1.0)
        text = (f"{task.description}: {task.completed:,.0f}/{task.total:,.0f}{unit} "
                f"({100 * done:.0f}%), {duration(elapsed)}")
        if 0 < done < 1:
            text += f", ETA {duration(elapsed * (1 - done) / done)}"
        return text

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)


def progress_bar(console: Console, *columns: str | ProgressColumn, transient: bool = True,
                 show: bool = True, unit: str = "", announce: bool = False) -> Progress:
    """A rich bar with `columns` where `console` is a terminal (none when not `show`), else
    a LineProgress printing plain lines with `unit` (and, with `announce`, task starts)."""
    if console.is_terminal:  # stdout is the program's output: never redirected to the bar
        return Progress(*columns, console=console, transient=transient, disable=not show,
                        redirect_stdout=False)
    return LineProgress(console, unit=unit, announce=announce)
