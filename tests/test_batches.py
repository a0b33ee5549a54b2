"""Token-budget batches: every example once an epoch, within budget, reproducible, and sorted by
the side a stage pays most for."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nmt_bert.train.batches import stage_sort, token_batches


def lengths(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, 80, n)
    tgt = np.maximum(2, (src * rng.uniform(0.6, 1.6, n)).astype(np.int64))
    return src, tgt


def efficiency(lens, batches):
    """Real / padded positions of one side over all batches."""
    real = sum(int(lens[b].sum()) for b in batches)
    padded = sum(len(b) * int(lens[b].max()) for b in batches)
    return real / padded


@pytest.mark.parametrize("sort_by", ["source", "target"])
def test_an_epoch_holds_every_example_once_within_the_budget(sort_by):
    src, tgt = lengths()
    batches = token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by=sort_by)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(src)))
    for b in batches:
        assert len(b) * (src[b].max() + tgt[b].max()) <= 1000 or len(b) == 1
    again = token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by=sort_by)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    other_epoch = token_batches(src, tgt, 1000, seed=1, epoch=1, sort_by=sort_by)
    assert not all(np.array_equal(x, y) for x, y in zip(batches, other_epoch))


def test_the_first_side_is_padded_least():
    src, tgt = lengths()
    by_source = token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by="source")
    by_target = token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by="target")
    assert efficiency(tgt, by_target) > 0.97 > efficiency(tgt, by_source)
    assert efficiency(src, by_source) > 0.97 > efficiency(src, by_target)
    with pytest.raises(ValueError, match="sort_by"):
        token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by="longest")


def test_auto_sorts_stage_1_by_target_and_stage_2_by_source():
    assert [stage_sort("auto", s) for s in (1, 2)] == ["target", "source"]
    assert [stage_sort("source", s) for s in (1, 2)] == ["source", "source"]
    assert [stage_sort("target", s) for s in (1, 2)] == ["target", "target"]


def test_the_trainer_reads_each_stage_in_its_own_order(tmp_path, tiny_prepared_dir,
                                                       tiny_encoder_dir):
    """Mid-epoch at the stage switch, stage 2 goes on at the same position of the epoch's
    source-sorted batches: what a run resumed there rebuilds."""
    from nmt_bert.train.run_dir import RunDir
    from nmt_bert.train.run_log import RunLog
    from nmt_bert.train.run_setup import build
    from nmt_bert.train.training import Trainer

    config = tiny_config(tiny_encoder_dir, "train.batch_tokens=300", "train.cache_encoder=false")
    run = RunDir(tmp_path / "run")
    run.create(tiny_prepared_dir, config)
    log = RunLog(run, enabled=False)
    trainer = Trainer(build(run, tiny_prepared_dir, config, None, log), run, torch.device("cpu"), log)
    data, t = trainer.setup.train_data, config.train
    epoch = {side: token_batches(data.src_lens, data.tgt_lens, t.batch_tokens, t.seed, 0,
                                 sort_by=side) for side in ("source", "target")}
    assert len(epoch["target"]) > 6  # the switch below falls inside the epoch
    trainer.begin_stage(1)
    for position in range(3):
        assert np.array_equal(trainer.next_batch().index.numpy(), epoch["target"][position])
    trainer.begin_stage(2)
    assert np.array_equal(trainer.next_batch().index.numpy(), epoch["source"][3])
    assert trainer.state.epoch == 0 and trainer.state.position == 4
