"""`python -m nmt_bert ...` (also the entry point for `torchrun -m nmt_bert train ...`)."""

from nmt_bert.cli import app

app()
