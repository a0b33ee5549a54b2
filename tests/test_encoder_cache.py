"""The frozen-encoder state cache: same loss as the live encoder, keyed against staleness."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from nmt_bert.train.batches import token_batches
from nmt_bert.train.encoder_cache import DamagedCache, build_or_load, cache_key
from nmt_bert.model.loss import label_smoothed_loss
from nmt_bert.train.run_log import RunLog
from nmt_bert.train.run_setup import build
from nmt_bert.train.run_dir import RunDir


@pytest.fixture
def setup(tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    config = tiny_config(tiny_encoder_dir)
    run = RunDir(tmp_path / "run")
    run.create(tiny_prepared_dir, config)
    s = build(run, tiny_prepared_dir, config, None, RunLog(run, enabled=False))
    s.model.freeze_encoder(True)
    s.model.eval()
    return s


def batch_losses(model, data, cache=None):
    losses = []
    for index in token_batches(data.src_lens, data.tgt_lens, 400, seed=3, epoch=0):
        batch = data.collate(index)
        states = None if cache is None else cache.gather(batch.index, batch.src_ids.size(1))
        with torch.no_grad():
            logits = model(batch.src_ids, batch.src_mask, batch.tgt_in, states)
        losses.append(label_smoothed_loss(logits, batch.labels, 0.1)[0].item())
    return np.array(losses)


def test_fp32_cache_gives_exactly_the_live_loss(tmp_path, setup):
    cache = build_or_load(tmp_path / "cache", setup.model, setup.train_data, setup.fingerprint,
                          "float32", torch.device("cpu"), log=lambda m: None)
    live = batch_losses(setup.model, setup.train_data)
    cached = batch_losses(setup.model, setup.train_data, cache)
    assert len(live) > 3
    np.testing.assert_allclose(cached, live, rtol=1e-6)


def test_fp16_cache_is_within_tolerance(tmp_path, setup):
    cache = build_or_load(tmp_path / "cache", setup.model, setup.train_data, setup.fingerprint,
                          "float16", torch.device("cpu"), log=lambda m: None)
    live = batch_losses(setup.model, setup.train_data)
    cached = batch_losses(setup.model, setup.train_data, cache)
    # Half-precision storage (and bf16 compute where the CPU has it): < 1% of the loss.
    np.testing.assert_allclose(cached, live, rtol=1e-2)


def test_cache_is_reused_and_keyed_on_encoder_and_corpus(tmp_path, setup):
    messages = []
    first = build_or_load(tmp_path / "cache", setup.model, setup.train_data, setup.fingerprint,
                          "float16", torch.device("cpu"), log=messages.append)
    again = build_or_load(tmp_path / "cache", setup.model, setup.train_data, setup.fingerprint,
                          "float16", torch.device("cpu"), log=messages.append)
    assert again.directory == first.directory and "reusing" in messages[-1]
    data = setup.train_data
    base = cache_key(setup.fingerprint, data, "float16")
    assert cache_key("another-encoder", data, "float16") != base
    assert cache_key(setup.fingerprint, data, "float32") != base
    changed = type(data)(data.src_flat.copy(), data.src_offsets, data.tgt_flat, data.tgt_offsets)
    changed.src_flat[5] += 1  # one source token differs
    assert cache_key(setup.fingerprint, changed, "float16") != base


def test_pruned_encoder_matches_full_encoder_inside_the_kept_vocabulary(setup, tiny_encoder_dir):
    from transformers import AutoModel

    from nmt_bert.model.encoders import load_local_tokenizer

    full = AutoModel.from_pretrained(tiny_encoder_dir).eval()
    tokenizer = load_local_tokenizer(setup.assets.tokenizer_dir)
    enc = tokenizer(["señor dijo luz agua", "dios vino"], padding=True, return_tensors="pt")
    lookup = torch.from_numpy(setup.source_vocab.lookup_table())
    assert setup.source_vocab.out_of_vocab(enc["input_ids"].flatten().tolist()) == 0
    with torch.no_grad():
        expected = full(**enc).last_hidden_state
        pruned = setup.model.encode_states(lookup[enc["input_ids"]], enc["attention_mask"].bool())
    assert setup.source_vocab.size < full.config.vocab_size
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(pruned[mask], expected[mask], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_states_are_read_not_mapped(tmp_path, setup):
    """Mapped pages would count as this process's memory for the whole run."""
    cache = build_or_load(tmp_path / "cache", setup.model, setup.train_data, setup.fingerprint,
                          "float16", torch.device("cpu"), log=lambda m: None)
    losses = batch_losses(setup.model, setup.train_data, cache)
    assert np.isfinite(losses).all()
    assert "states.bin" not in Path("/proc/self/maps").read_text()
    cache.close()


def test_a_file_cut_short_while_open_is_named(tmp_path, setup):
    cache = build_or_load(tmp_path / "cache", setup.model, setup.train_data, setup.fingerprint,
                          "float16", torch.device("cpu"), log=lambda m: None)
    path = cache.directory / "states.bin"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(DamagedCache, match="ended early"):
        batch_losses(setup.model, setup.train_data, cache)
