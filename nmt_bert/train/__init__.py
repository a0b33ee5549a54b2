"""Training: the run directory, the two-stage trainer and what it needs."""
