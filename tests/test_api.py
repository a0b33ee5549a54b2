"""The Python API: load a model once, translate a list or an iterator of strings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers_model import build_tiny_checkpoint, tiny_source_lines

from nmt_bert import load_translator
from nmt_bert.decode.translator import Translator
from nmt_bert.errors import UserError


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_encoder_dir, tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tiny_encoder_dir)


@pytest.fixture(scope="module")
def api(checkpoint_dir):
    return load_translator(checkpoint_dir, device="cpu", beam_size=2, nbest=2)


def test_a_list_gives_a_list_of_texts_and_scores(api, checkpoint_dir):
    lines = [*tiny_source_lines(4, seed=9), "", "  "]
    reference = Translator.from_checkpoint(checkpoint_dir, device="cpu",
                                           overrides=["decode.beam_size=2", "decode.nbest=2"])
    expected = reference.translate(lines)
    results = api.translate(lines)
    assert isinstance(results, list) and len(results) == len(lines)
    assert [r.text for r in results] == [t.text for t in expected]
    assert [r.score for r in results] == pytest.approx([t.score for t in expected], abs=1e-4)
    assert all(len(r.candidates) == 2 for r in results[:4]) and results[4].text == ""
    assert any(r.text for r in results) and api.config.beam_size == 2
    assert api.path == checkpoint_dir


def test_a_generator_is_translated_chunk_by_chunk_as_it_is_consumed(api):
    lines = tiny_source_lines(7, seed=4)
    pulled = []

    def source():
        for line in lines:
            pulled.append(line)
            yield line

    stream = api.stream(source(), chunk_lines=3)
    first = next(stream)
    assert len(pulled) == 3  # one chunk read, not the whole input
    rest = list(stream)
    assert [first.text, *[r.text for r in rest]] == [r.text for r in api.translate(lines)]
    assert len(pulled) == 7
    assert [r.text for r in api.translate(iter(lines))] == [r.text for r in api.translate(lines)]


def test_mistakes_are_named(api, checkpoint_dir, tmp_path):
    with pytest.raises(TypeError, match="for one sentence pass"):
        api.translate("dios rey")
    with pytest.raises(TypeError, match="line 1: expected a str, got int"):
        api.translate(["dios", 3])
    with pytest.raises(TypeError, match="unexpected keyword argument 'beam'"):
        load_translator(checkpoint_dir, beam=3)
    with pytest.raises(UserError, match="decode.nbest"):
        load_translator(checkpoint_dir, beam_size=1, nbest=2)
    with pytest.raises(UserError, match="model directory not found"):
        load_translator(tmp_path / "nope")


def test_importing_the_package_stays_light():
    code = ("import sys, nmt_bert; assert 'torch' not in sys.modules; "
            "assert callable(nmt_bert.load_translator); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # loaded on first use only
