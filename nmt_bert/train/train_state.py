"""What a run's training has reached: saved with every resumable checkpoint, restored on resume."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainState:
    stage: int = 1
    step: int = 0  # optimizer steps done in the current stage
    global_step: int = 0
    epoch: int = 0
    position: int = 0  # batches of this epoch already consumed
    best_bleu: float = -1.0
    evals_without_gain: int = 0
    skipped_steps: int = 0  # NaN/inf losses skipped
    bad_in_a_row: int = 0  # consecutive skipped steps (max_bad_steps of them: roll back)
    rollbacks: int = 0
    # with a time budget (train.max_minutes, see budget.py):
    planned_steps: int = 0  # the current stage's planned steps (0: the configured ones)
    planned_warmup: int = -1  # its warmup, fixed by the first plan (-1: the configured one)
    anchor_step: int = 0  # where the linear decay was last re-planned (0: never)
    anchor_factor: float = 1.0  # its factor there
    evals_in_stage: int = 0
    stage_deadline: float = 0.0  # budget seconds by which the current stage ends
    seconds_spent: float = 0.0  # budget seconds spent when this state was saved
    saved_at: float = 0.0  # wall-clock time of that save
