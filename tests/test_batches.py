"""Token-budget batches: every example once an epoch, within budget, reproducible, and sorted by
the side a stage pays most for."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nmt_bert.train.batches import BatchPlan, round_up, stage_plan, stage_sort, token_batches


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
    plans = {stage: stage_plan(t, stage) for stage in (1, 2)}
    assert [plans[s].sort_by for s in (1, 2)] == ["target", "source"]
    epoch = {stage: token_batches(data.src_lens, data.tgt_lens, t.batch_tokens, t.seed, 0,
                                  sort_by=p.sort_by, multiples=p.multiples)
             for stage, p in plans.items()}
    assert len(epoch[1]) > 6  # the switch below falls inside the epoch
    trainer.begin_stage(1)
    for position in range(3):
        batch = trainer.next_batch()
        assert np.array_equal(batch.index.numpy(), epoch[1][position])
        index = batch.index.numpy()
        assert batch.labels.size(1) == round_up(data.tgt_lens[index].max(), plans[1].multiples[1],
                                                data.tgt_lens.max())
    trainer.begin_stage(2)
    assert np.array_equal(trainer.next_batch().index.numpy(), epoch[2][3])
    assert trainer.state.epoch == 0 and trainer.state.position == 4


def test_round_up_stops_at_the_longest_example():
    assert round_up(17, 16, 100) == 32 and round_up(32, 16, 100) == 32
    assert round_up(97, 16, 100) == 100  # the cap: positions are sized for the longest
    assert round_up(5, 1, 100) == 5
    assert round_up(np.array([1, 9, 15]), 8, 12).tolist() == [8, 12, 15]


def test_rounded_lengths_give_few_shapes_each_within_the_budget():
    """Batches of one rounded (source, target) length have one shape; the budget counts the
    padded lengths the collation will produce."""
    src, tgt = lengths()
    multiples = (32, 4)
    exact = token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by="target")
    rounded = token_batches(src, tgt, 1000, seed=1, epoch=0, sort_by="target",
                            multiples=multiples)
    assert sorted(np.concatenate(rounded).tolist()) == list(range(len(src)))

    def shape(b):
        return (len(b), round_up(src[b].max(), 32, src.max()), round_up(tgt[b].max(), 4, tgt.max()))

    for b in rounded:
        n, s, t = shape(b)
        assert n * (s + t) <= 1000 or n == 1
    exact_shapes = {(len(b), src[b].max(), tgt[b].max()) for b in exact}
    assert len({shape(b) for b in rounded}) < len(exact_shapes) / 2


def test_the_stage_plan_rounds_stage_1_only():
    from nmt_bert.config import TrainConfig

    t = TrainConfig()
    multiples = (t.stage1_source_multiple, t.stage1_target_multiple)
    assert multiples != (1, 1)
    assert stage_plan(t, 1) == BatchPlan("target", multiples)
    assert stage_plan(t, 2) == BatchPlan("source", (1, 1))  # stage 2: exact lengths
    t.batch_order, t.stage1_source_multiple, t.stage1_target_multiple = "source", 1, 1
    assert stage_plan(t, 1) == BatchPlan("source", (1, 1))  # earlier trees' batches


def test_collate_pads_to_the_plan_s_multiples():
    from nmt_bert.model.special_tokens import PAD
    from nmt_bert.train.batches import TokenData

    lens_src, lens_tgt = np.array([3, 5, 20]), np.array([4, 2, 9])
    src_off = np.concatenate([[0], np.cumsum(lens_src)])
    tgt_off = np.concatenate([[0], np.cumsum(lens_tgt)])
    data = TokenData(np.arange(1, src_off[-1] + 1), src_off, np.arange(5, tgt_off[-1] + 5),
                     tgt_off)
    batch = data.collate(np.array([0, 1]), (8, 4))
    assert batch.src_ids.shape == (2, 8) and batch.labels.shape == (2, 8)  # 5 -> 8, 4 + EOS -> 8
    assert batch.src_mask.sum().item() == 8 and batch.tokens == 8 + 4 + 2 + 2
    assert (batch.labels[0, 5:] == PAD).all() and (batch.src_ids[0, 3:] == 0).all()
    assert data.collate(np.array([2]), (16, 16)).src_ids.shape == (1, 20)  # the cap: longest
