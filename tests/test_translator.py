"""Translator and `translate` command on tiny checkpoints: batching, order, files, errors."""

from __future__ import annotations

import contextlib
import re
from dataclasses import replace

import pytest
import torch
from helpers_model import build_tiny_checkpoint, tiny_source_lines
from typer.testing import CliRunner

import nmt_bert.decode.translate_file as translate_file_module
from nmt_bert.model.checkpoint import load_checkpoint
from nmt_bert.cli import app
from nmt_bert.devices import autocast_context, resolve_device
from nmt_bert.errors import UserError
from nmt_bert.decode.translate_file import translate_file
from nmt_bert.decode.translator import Translator

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_encoder_dir, tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", tiny_encoder_dir)


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir):
    return load_checkpoint(checkpoint_dir)


def make_translator(checkpoint, **decode) -> Translator:
    config = replace(checkpoint.config.decode, **decode)
    return Translator(checkpoint.model, checkpoint.tokenizer, checkpoint.source_vocab,
                      checkpoint.target_vocab, config)


def token_lists(translations):
    return [[c.tokens for c in t.candidates] for t in translations]


@pytest.mark.parametrize("beam_size, nbest", [(1, 1), (4, 2)])
def test_batched_translation_equals_one_by_one(checkpoint, beam_size, nbest):
    lines = tiny_source_lines(10, seed=5)
    batched = make_translator(checkpoint, beam_size=beam_size, nbest=nbest, batch_size=4)
    single = make_translator(checkpoint, beam_size=beam_size, nbest=nbest, batch_size=1)
    together = batched.translate(lines)
    alone = [single.translate([line])[0] for line in lines]
    assert token_lists(together) == token_lists(alone)
    assert all(len(t.candidates) == nbest for t in together)
    assert max(len(t.candidates[0].tokens) for t in together) > 3
    assert len({t.text for t in together}) > 3


def test_order_is_kept_and_blank_lines_stay_empty(checkpoint):
    words = tiny_source_lines(6, seed=7)
    lines = [words[0], "", words[1] + " " + words[2], "   ", words[3], "\t", words[4][:4], ""]
    translator = make_translator(checkpoint, beam_size=2, batch_size=2)
    done = []
    translations = translator.translate(lines, progress=done.append)
    assert len(translations) == len(lines) and sum(done) == len(lines)
    for line, translation in zip(lines, translations):
        if line.strip():
            alone = translator.translate([line])[0].candidates[0]
            assert translation.candidates[0].tokens == alone.tokens
            assert translation.score == pytest.approx(alone.score, abs=1e-4)
        else:
            assert translation.text == "" and translation.candidates[0].tokens == []
    assert translator.stats.sentences == len(lines) + 4  # all lines, then the 4 non-blank alone
    assert translator.stats.target_tokens > 0 and translator.stats.oov_pieces == 0


def test_long_input_is_truncated_and_counted(checkpoint):
    translator = make_translator(checkpoint, beam_size=1, max_len_a=0.0, max_len_b=5)
    limit = checkpoint.model.encoder.config.max_position_embeddings  # 256
    long = " ".join(["dios"] * (limit + 40))
    translations = translator.translate([long, "dios rey"])
    assert translator.stats.truncated == 1
    assert translator.stats.source_tokens == limit + 4  # [CLS] dios rey [SEP]
    assert len(translations[0].candidates[0].tokens) <= 5


def test_pruned_source_vocabulary_reads_unknown_pieces_as_unk(tiny_encoder_dir, tmp_path):
    corpus = tiny_source_lines(40, seed=1)
    path = build_tiny_checkpoint(tmp_path / "pruned", tiny_encoder_dir, prune_to=corpus)
    ckpt = load_checkpoint(path)
    kept = set(ckpt.source_vocab.kept_ids)
    assert ckpt.model.encoder.get_input_embeddings().num_embeddings == len(kept)
    line = "dios house zzz rey"  # "house" and z/##z/##z are not in the Spanish corpus
    pieces = ckpt.tokenizer(line, add_special_tokens=False)["input_ids"]
    expected = sum(piece not in kept for piece in pieces)
    assert expected == 4
    translator = Translator(ckpt.model, ckpt.tokenizer, ckpt.source_vocab, ckpt.target_vocab,
                            ckpt.config.decode)
    translations = translator.translate([line, corpus[0]])
    assert translator.stats.oov_pieces == expected
    assert len(translations) == 2


def test_from_checkpoint_applies_decode_overrides_only(checkpoint_dir):
    translator = Translator.from_checkpoint(checkpoint_dir, overrides=["decode.beam_size=3"])
    assert translator.config.beam_size == 3
    with pytest.raises(UserError, match="decode"):
        Translator.from_checkpoint(checkpoint_dir, overrides=["train.lr=1"])
    with pytest.raises(UserError, match="nbest"):
        Translator.from_checkpoint(checkpoint_dir, overrides=["decode.beam_size=2", "decode.nbest=3"])


def test_resolve_device_and_autocast():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="expected auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda:1")
    assert isinstance(autocast_context("cpu"), contextlib.nullcontext)
    with autocast_context("cpu", "bf16"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


# ---- the translate command --------------------------------------------------------------


def test_translate_file_to_output_file(checkpoint_dir, checkpoint, tmp_path):
    lines = tiny_source_lines(5, seed=2)
    lines.insert(2, "")
    source = tmp_path / "in.es"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "sub" / "out.en"
    result = runner.invoke(app, ["translate", str(source), "-m", str(checkpoint_dir),
                                 "-o", str(out), "--beam", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = [t.text for t in make_translator(checkpoint, beam_size=2).translate(lines)]
    assert out.read_text(encoding="utf-8").split("\n") == expected + [""]
    assert "sentences/s" in result.stderr and "target tokens/s" in result.stderr
    assert result.stdout == ""


def test_translate_stdin_to_stdout(checkpoint_dir, checkpoint):
    lines = ["dios rey", "", "agua luz cielo", "  "]
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "--beam", "1"],
                           input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    expected = [t.text for t in make_translator(checkpoint, beam_size=1).translate(lines)]
    assert result.stdout.split("\n") == expected + [""]
    assert expected[1] == expected[3] == "" and expected[0]


def test_nbest_output_is_moses_style(checkpoint_dir):
    result = runner.invoke(app, ["translate", "-m", str(checkpoint_dir), "--beam", "3",
                                 "--nbest", "2"], input="dios rey\n\nagua luz\n")
    assert result.exit_code == 0, result.output
    rows = [re.fullmatch(r"(\d+) \|\|\| (.*) \|\|\| (-?\d+\.\d{4})", line)
            for line in result.stdout.splitlines()]
    assert all(rows), result.stdout
    assert [int(row[1]) for row in rows] == [0, 0, 1, 2, 2]
    scores = [float(row[3]) for row in rows]
    assert scores[0] >= scores[1] and scores[3] >= scores[4] and rows[2][2] == ""


def test_failed_write_leaves_no_output_file(checkpoint_dir, tmp_path, monkeypatch):
    source = tmp_path / "in.es"
    source.write_text("dios rey\nagua\nluz\n", encoding="utf-8")
    out = tmp_path / "out.en"
    out.write_text("previous\n", encoding="utf-8")
    real = translate_file_module.output_lines

    def failing(translations, nbest, first=0):
        yield from list(real(translations, nbest, first))[:1]
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(translate_file_module, "output_lines", failing)
    with pytest.raises(RuntimeError, match="half-way"):
        translate_file(str(source), checkpoint_dir, out, overrides=[], device="cpu")
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.es", "out.en"]


def test_invalid_utf8_is_a_one_line_error(checkpoint_dir, tmp_path):
    source = tmp_path / "bad.es"
    source.write_bytes(b"dios rey\nagua \xff luz\n")
    result = runner.invoke(app, ["translate", str(source), "-m", str(checkpoint_dir)])
    assert result.exit_code == 1
    assert f"{source}:2: invalid UTF-8" in result.output
    assert "Traceback" not in result.output
    stdin = runner.invoke(app, ["translate", "-m", str(checkpoint_dir)], input=b"ok\n\xfe\n")
    assert stdin.exit_code == 1 and "<stdin>:2: invalid UTF-8" in stdin.output


@pytest.mark.parametrize("case", ["missing", "directory", "same-as-output", "nul"])
def test_unusable_input_or_output_is_a_user_error(checkpoint_dir, tmp_path, case):
    source = tmp_path / "in.es"
    source.write_text("dios\n", encoding="utf-8")
    args, message = {
        "missing": ([str(tmp_path / "nope.es")], "not found"),
        "directory": ([str(tmp_path)], "is a directory"),
        "same-as-output": ([str(source), "-o", str(tmp_path / "." / "in.es")], "overwrite"),
        "nul": ([str(source)], "NUL byte"),
    }[case]
    if case == "nul":
        source.write_bytes(b"dios\x00\n")
    result = runner.invoke(app, ["translate", *args, "-m", str(checkpoint_dir)])
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output
    assert source.exists()


def test_lines_read_once_translate_without_the_tokenizer(checkpoint):
    """translate(lines) == translate_sources(read(lines)), the second by a translator made
    without a tokenizer (a training run's dev evaluations), protected spans included."""
    from nmt_bert.data.protected_spans import Protector

    words = tiny_source_lines(6, seed=11)
    lines = [words[0], "", f"{words[1]} %s {words[2]}", words[3] + " {0}", words[4]]
    protector = Protector.from_config(checkpoint.config.data)
    full = make_translator(checkpoint, beam_size=2)
    full.protect_spans(protector)
    sources = full.read(lines)
    assert [len(s) for s in sources.spans] == [0, 0, 1, 1, 0]
    bare = Translator(checkpoint.model, None, checkpoint.source_vocab, checkpoint.target_vocab,
                      replace(checkpoint.config.decode, beam_size=2))
    bare.protect_spans(protector)
    assert ([t.text for t in bare.translate_sources(sources)]
            == [t.text for t in full.translate(lines)])
    assert bare.stats.sentences == len(lines)
    with pytest.raises(ValueError, match="without a tokenizer"):
        bare.translate(lines)
