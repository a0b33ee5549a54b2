"""One end-to-end run through the CLI: prepare -> train -> translate -> score."""

import json

from typer.testing import CliRunner

from conftest import tiny_sets, write_tiny_corpus
from nmt_bert.cli import app


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_prepare_train_translate_score(tmp_path, tiny_encoder_dir):
    src, tgt = write_tiny_corpus(tmp_path / "corpus")
    sets = [a for s in tiny_sets(tiny_encoder_dir, "train.stage1_steps=60", "train.stage2_steps=20",
                                 "train.eval_every=40", "model.d_model=64", "model.ffn_dim=128")
            for a in ("--set", s)]
    data, run = tmp_path / "data", tmp_path / "run"
    invoke("prepare", "--src", str(src), "--tgt", str(tgt), "--out", str(data), *sets)
    invoke("train", "--data", str(data), "--out", str(run), "--device", "cpu", *sets)

    for name in ("config.yaml", "train.log", "metrics.jsonl", "finished.json", "source_vocab.json"):
        assert (run / name).exists(), name
    best = run / "checkpoints" / "best"
    meta = json.loads((best / "meta.json").read_text())
    assert meta["format"] == 1 and meta["stage"] in (1, 2)

    hyp = tmp_path / "test.hyp"
    invoke("translate", str(data / "test.src"), "--model", str(run), "-o", str(hyp), "--beam", "3")
    sources = (data / "test.src").read_text().splitlines()
    outputs = hyp.read_text().splitlines()
    assert len(outputs) == len(sources) > 0
    assert any(line.strip() for line in outputs)

    scored = invoke("score", str(hyp), str(data / "test.ref"), "--json")
    report = json.loads(scored.output)
    assert report["sentences"] == len(sources)
    assert {s["name"] for s in report["scores"]} == {"BLEU", "chrF2", "TER"}
    assert all("version:" in s["signature"] for s in report["scores"])
