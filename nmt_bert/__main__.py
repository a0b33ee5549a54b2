"""`python -m nmt_bert ...` (also the entry point for `torchrun -m nmt_bert train ...`)."""

import sys

from nmt_bert.cli import run

sys.exit(run())
