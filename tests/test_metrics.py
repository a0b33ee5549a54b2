import json

import pytest
import sacrebleu
from typer.testing import CliRunner

from nmt_bert.cli import app
from nmt_bert.metrics import score_files

runner = CliRunner()
HYP = ["In the beginning God created the heavens and the earth.", "The earth was formless.",
       "", "And God said, let there be light."]
REF1 = ["In the beginning, God created the heavens and the earth.", "The earth was without form.",
        "Darkness was on the surface.", "God said, Let there be light, and there was light."]
REF2 = ["In the beginning God created the heaven and the earth.", "And the earth was without form.",
        "And darkness was upon the face of the deep.", "And God said, Let there be light."]


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, lines in (("hyp", HYP), ("ref1", REF1), ("ref2", REF2)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def test_scores_and_signatures_equal_sacrebleu_api(files):
    report = score_files(files["hyp"], [files["ref1"], files["ref2"]])
    refs = [REF1, REF2]
    expected = {
        "BLEU": sacrebleu.corpus_bleu(HYP, refs),
        "chrF2": sacrebleu.corpus_chrf(HYP, refs),
        "TER": sacrebleu.corpus_ter(HYP, refs),
    }
    for name, result in expected.items():
        assert report.get(name) == pytest.approx(result.score, abs=1e-9)
    signatures = {s.name: s.signature for s in report.scores}
    for metric in (sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF(), sacrebleu.metrics.TER()):
        result = metric.corpus_score(HYP, refs)
        assert signatures[result.name] == str(metric.get_signature())
    assert "nrefs:2" in signatures["BLEU"] and "version:" in signatures["TER"]


def test_cli_json_and_quality_gate(files):
    ok = runner.invoke(app, ["score", str(files["hyp"]), str(files["ref1"]), "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    bleu = next(s for s in data["scores"] if s["name"] == "BLEU")
    assert bleu["score"] == pytest.approx(sacrebleu.corpus_bleu(HYP, [REF1]).score)
    assert "version:" in bleu["signature"]
    failed = runner.invoke(app, ["score", str(files["hyp"]), str(files["ref1"]), "--min-bleu", "99"])
    assert failed.exit_code == 1 and "quality gate failed" in failed.output
    passed = runner.invoke(app, ["score", str(files["hyp"]), str(files["ref1"]), "--min-bleu", "1",
                                 "--min-chrf", "1"])
    assert passed.exit_code == 0


def test_mismatched_line_counts_is_one_clear_error(files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    result = runner.invoke(app, ["score", str(files["hyp"]), str(short)])
    assert result.exit_code == 1
    assert "short.txt: 1 lines, but" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [(b"ok\n\xff\xfe\n", ":2: invalid UTF-8"),
                                              (b"a\x00b\n", ":1: contains a NUL byte")])
def test_unreadable_hypothesis(files, tmp_path, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    result = runner.invoke(app, ["score", str(bad), str(files["ref1"])])
    assert result.exit_code == 1 and message in result.output


def test_missing_reference(files, tmp_path):
    result = runner.invoke(app, ["score", str(files["hyp"]), str(tmp_path / "nope.txt")])
    assert result.exit_code == 1 and "nope.txt: reference file not found" in result.output
