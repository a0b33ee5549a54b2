"""Data-parallel training: two CPU processes under torchrun (gloo) keep identical replicas."""

import json
import subprocess
import sys

import pytest

from conftest import tiny_sets


@pytest.mark.slow
def test_two_process_ddp_keeps_replicas_identical(tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    run = tmp_path / "run"
    sets = [a for s in tiny_sets(tiny_encoder_dir, "train.stage1_steps=6", "train.stage2_steps=4",
                                 "train.eval_every=3", "model.dropout=0.1")
            for a in ("--set", s)]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         "29517", "-m", "nmt_bert", "train", "--data", str(tiny_prepared_dir), "--out", str(run),
         "--device", "cpu", *sets],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run / "train.log").read_text()
    # Checked at every evaluation, in both stages (steps 3, 6, 9, 10).
    assert log.count("2 replicas identical") == 4, log
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows if r["kind"] == "train"} == set(range(1, 11))
    assert (run / "checkpoints" / "best" / "model.safetensors").exists()
