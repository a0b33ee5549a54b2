"""The `nmt-bert` command line: thin commands, each handing off to one library function.

This package is the only one that imports typer (commands.py: the commands; options.py:
the options several share; errors.py: how a failure reaches the user). Errors the user can
fix (UserError) print one line and exit 1; anything else prints one line too unless
--debug asks for the traceback. Usage errors are one line as well (exit 2), and SIGTERM
stops any command as Ctrl-C does: temporaries are removed and finished outputs stay as they
were.
"""

import os

from nmt_bert.cpu import share_cores_politely

# Library progress bars (weights loading, dataset maps) are not ours to show: our own bars
# and summaries say what happens. Set before transformers or datasets are imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
share_cores_politely()  # before torch is imported: see nmt_bert/cpu.py

from nmt_bert.cli.commands import app, run  # noqa: E402 - after the environment is set

__all__ = ["app", "run"]
