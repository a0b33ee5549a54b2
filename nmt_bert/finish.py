"""The end of a training run: optional checkpoint averaging, the curves PNG, `finished.json`."""

from __future__ import annotations

import json

from nmt_bert.averaging import average_checkpoints
from nmt_bert.curves import plot_curves
from nmt_bert.run_dir import RunDir
from nmt_bert.validation import validate


def finish(run: RunDir, trainer, seconds: float) -> None:
    """Optional checkpoint averaging, the curves PNG and the `finished.json` marker."""
    k = trainer.cfg.average_last
    if k > 0:
        averaged = average_checkpoints(run, k)
        if averaged is not None:
            trainer.model.load_state_dict(averaged)
            scores = validate(trainer.model, trainer.setup, trainer.device, trainer.cfg.valid_beam)
            trainer.save("averaged", {"dev": scores, "averaged_last": k}, resumable=False)
            trainer.log.info(f"average of last {k} checkpoints: dev BLEU {scores['bleu']:.2f}")
            if scores["bleu"] > trainer.state.best_bleu:
                trainer.state.best_bleu = scores["bleu"]
                trainer.save("best", {"dev": scores, "averaged_last": k}, resumable=False)
    if plot_curves(run.metrics, run.curves):
        trainer.log.info(f"curves: {run.curves}")
    run.finished_file.write_text(json.dumps({
        "best_dev_bleu": trainer.state.best_bleu, "steps": trainer.state.global_step,
        "skipped_steps": trainer.state.skipped_steps, "seconds_this_session": round(seconds, 1),
    }, indent=2))
