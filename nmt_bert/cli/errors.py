"""How a failure reaches the user: one line on stderr and an exit status, not a traceback.

UserError (something the user can fix) exits 1, an OSError names its file and exits 1,
Ctrl-C exits 130 and anything else exits 2; `--debug` re-raises instead (`DEBUG`).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.console import Console

from nmt_bert.errors import UserError, first_line

err_console = Console(stderr=True)
DEBUG = {"on": False}  # set by the app's --debug option

F = TypeVar("F", bound=Callable)


def friendly_errors(fn: F) -> F:
    """Turn exceptions into one line on stderr and a non-zero exit (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            if DEBUG["on"]:
                raise
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except OSError as err:  # disk full, permissions, a vanished file: name the file
            if DEBUG["on"]:
                raise
            where = f"{err.filename}: " if err.filename else ""
            reason = err.strerror or first_line(err)
            err_console.print(f"[bold red]error:[/] {where}{reason}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as err:  # noqa: BLE001 - the user gets one line, --debug the rest
            if DEBUG["on"]:
                raise
            err_console.print(
                f"[bold red]error:[/] {type(err).__name__}: {first_line(err)} "
                "(rerun with --debug for details)", highlight=False, soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
