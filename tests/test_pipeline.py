"""The main job (`nmt-bert pipeline`) on a stand-in for the bundled corpus."""

import gzip
import json

import pytest

from conftest import tiny_config, write_tiny_corpus
from nmt_bert.data import corpora
from nmt_bert.data.prepared_dir import load_prepared
from nmt_bert.pipeline import count_lines, run_pipeline, score_sets, tail_evals


def write_fake_bundled(directory, src_lines, tgt_lines):
    directory.mkdir(parents=True)
    rows = list(zip(src_lines, tgt_lines))
    splits = {"train": rows[:-40], "dev": rows[-40:-20], "test": rows[-20:]}
    for name, pairs in splits.items():
        with gzip.open(directory / f"{name}.tsv.gz", "wt", encoding="utf-8") as f:
            f.write("ref\tes\ten\tkjv\n")
            for i, (s, t) in enumerate(pairs):
                f.write(f"Gen.1.{i}\t{s}\t{t}\t{t.upper()}\n")


def test_pipeline_runs_every_step_then_reuses_them(tmp_path, tiny_encoder_dir, monkeypatch):
    src, tgt = write_tiny_corpus(tmp_path / "corpus", pairs=300)
    bundled = tmp_path / "bundled"
    write_fake_bundled(bundled, src.read_text().splitlines(), tgt.read_text().splitlines())
    monkeypatch.setattr(corpora, "BUNDLED_CORPUS", bundled)
    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=30", "train.eval_every=30")

    summary = run_pipeline(tmp_path / "out", config, device="cpu")
    out = tmp_path / "out"
    assert len((out / "test.hyp").read_text().splitlines()) == 20
    assert set(summary["scores"]) == {"reference", "second reference", "both references"}
    assert "nrefs:2" in summary["scores"]["both references"]["BLEU"]["signature"]
    assert json.loads((out / "summary.json").read_text()) == summary

    stamp = (out / "data" / "manifest.json").stat().st_mtime_ns
    weights = (out / "run" / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    again = run_pipeline(out, config, device="cpu")
    assert (out / "data" / "manifest.json").stat().st_mtime_ns == stamp  # prepare reused
    assert (out / "run" / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns == weights
    assert again["scores"] == summary["scores"]


def test_a_recipe_budget_bounds_the_whole_job(tmp_path, tiny_encoder_dir, monkeypatch):
    """train.max_minutes under `pipeline` is the job's: training gets what prepare leaves and
    keeps the test translation's time (in dev evaluations) at its end."""
    from nmt_bert.config import load_config

    src, tgt = write_tiny_corpus(tmp_path / "corpus", pairs=300)
    bundled = tmp_path / "bundled"
    write_fake_bundled(bundled, src.read_text().splitlines(), tgt.read_text().splitlines())
    monkeypatch.setattr(corpora, "BUNDLED_CORPUS", bundled)
    config = tiny_config(tiny_encoder_dir, "train.max_minutes=0.3", "train.stage1_steps=100000",
                         "train.eval_every=50000", "train.schedule=linear")

    summary = run_pipeline(tmp_path / "out", config, device="cpu")
    saved = load_config(tmp_path / "out" / "run" / "config.yaml").train
    assert 0 < saved.max_minutes < 0.3  # prepare's time came off the budget
    prepared = load_prepared(tmp_path / "out" / "data")
    expected = tail_evals(count_lines(prepared.source_file("test")),
                          count_lines(prepared.source_file("dev")),
                          list(score_sets(prepared.references("test")).values()),
                          config.decode.beam_size)
    assert saved.tail_evals == pytest.approx(expected, abs=1e-3)
    assert saved.tail_evals > 1  # 20 test lines at beam 5 against 20 dev lines greedy
    assert "score" in summary["timings_s"]
    assert sum(summary["timings_s"].values()) <= 18 + 5


def test_the_kept_time_counts_translating_and_scoring_each_reference(tmp_path):
    """TER against each reference and against both is part of the job the budget bounds."""
    from nmt_bert.pipeline import BEAM_COST

    one_ref = list(score_sets([tmp_path / "test.ref"]).values())
    two_refs = list(score_sets([tmp_path / "test.ref", tmp_path / "test.ref2"]).values())
    assert [len(s) for s in two_refs] == [1, 1, 2]  # each reference alone, then both
    one = tail_evals(20, 40, one_ref, beam_size=5)
    two = tail_evals(20, 40, two_refs, beam_size=5)
    translating = 20 / 40 * (1 + BEAM_COST * 4)
    assert translating < one < two  # scoring costs, and three scorings cost more than one
    assert tail_evals(20, 40, two_refs, beam_size=1) < two  # a greedy test translation costs less
