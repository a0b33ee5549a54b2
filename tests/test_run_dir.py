"""RunDir owns the run directory: create/read round trip, its state, and training never
writes into the prepared data it reads."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_config
from nmt_bert.config import config_to_dict
from nmt_bert.train.run_dir import RunDir


def test_create_then_read_round_trips_config_and_data_dir(tmp_path, tiny_prepared_dir,
                                                         tiny_encoder_dir):
    config = tiny_config(tiny_encoder_dir, "train.lr=0.0042")
    run = RunDir(tmp_path / "run")
    with run.lock():
        run.create(tiny_prepared_dir, config)
    again, data_dir, info = RunDir(tmp_path / "run").read()
    assert config_to_dict(again) == config_to_dict(config)
    assert data_dir == Path(tiny_prepared_dir).resolve() and info["data_dir"] == str(data_dir)
    assert RunDir.is_run(run.path) and not run.finished and run.resumable() is None
    assert run.best_or_last() is None and run.snapshots() == []
    assert run.checkpoint("best") == run.path / "checkpoints" / "best"


def test_training_never_writes_into_its_data_and_the_cache_goes_where_configured(
        tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    from nmt_bert.train.training import train

    before = sorted((p.relative_to(tiny_prepared_dir), p.stat().st_mtime_ns)
                    for p in Path(tiny_prepared_dir).rglob("*"))
    cache = tmp_path / "states"
    config = tiny_config(tiny_encoder_dir, "train.cache_encoder=true", f"train.cache_dir={cache}")
    train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    after = sorted((p.relative_to(tiny_prepared_dir), p.stat().st_mtime_ns)
                   for p in Path(tiny_prepared_dir).rglob("*"))
    assert after == before
    assert len(list(cache.glob("encoder-*/meta.json"))) == 1
    run = RunDir(tmp_path / "run")
    assert run.finished and run.best_or_last() == run.checkpoint("best")
