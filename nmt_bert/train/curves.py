"""Training curves from metrics.jsonl as a PNG (needs the optional matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics_path: Path, out_path: Path) -> bool:
    """Train loss and dev loss/BLEU against the global step; False when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (smoothed CE)")
    ax_loss.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="dev NLL")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss per token")
    ax_loss.legend()
    ax_bleu.plot([r["step"] for r in evals], [r["bleu"] for r in evals], "o-", color="tab:green")
    ax_bleu.set_xlabel("step")
    ax_bleu.set_ylabel("dev BLEU")
    for r in evals[1:]:
        if r["stage"] == 2 and evals[evals.index(r) - 1]["stage"] == 1:
            for ax in (ax_loss, ax_bleu):
                ax.axvline(r["step"], color="grey", linestyle=":", label="stage 2")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return True
