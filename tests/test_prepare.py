"""`nmt-bert prepare` end to end with the tiny encoder: outputs, manifest, atomicity, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nmt_bert.data import corpora
from nmt_bert.cli import app
from nmt_bert.config import load_config
from nmt_bert.data.corpora import CorpusSpec
from nmt_bert.errors import UserError
from nmt_bert.data.prepare import prepare
from nmt_bert.data.prepared_dir import load_prepared

from test_corpora import make_bundled  # tests/ is on sys.path, as for helpers_model

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["data.tgt_vocab_size=60", "data.dev_fraction=0.05", "data.test_fraction=0.05"]


@pytest.fixture
def config(tiny_encoder_dir):
    return load_config(None, [f"model.encoder={tiny_encoder_dir}", *SETTINGS])


@pytest.fixture
def pair_files(tmp_path, tiny_parallel_lines):
    src, tgt = tiny_parallel_lines
    (tmp_path / "c.es").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "c.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return tmp_path / "c.es", tmp_path / "c.en"


def test_output_structure_and_manifest(tmp_path, pair_files, config, tiny_encoder_dir):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    manifest = prepare(CorpusSpec(src=pair_files[0], tgt=pair_files[1]), tmp_path / "out", config)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml", "dev.ref", "dev.src", "encoder_tokenizer", "manifest.json", "splits",
        "spm.model", "spm.vocab", "test.ref", "test.src"]
    assert not list(tmp_path.glob(".out.*"))  # no temporary sibling left behind
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "nmt-bert-prepared" and manifest["format_version"] == 1
    assert manifest["languages"] == {"src": "es", "tgt": "en"}
    assert manifest["encoder"]["name"] == str(tiny_encoder_dir)
    assert [i["path"] for i in manifest["inputs"]] == [str(p) for p in pair_files]
    assert manifest["splits"]["dev"]["carved"] and manifest["splits"]["test"]["carved"]
    counts = {s: manifest["splits"][s] for s in ("train", "dev", "test")}
    assert sum(c["read"] for c in counts.values()) == 200
    assert counts["train"]["dropped"]["duplicate"] > 0  # the fixture repeats short sentences
    assert set(manifest["coverage"]) == {"train", "dev", "test", "encoder_ids_used",
                                         "encoder_vocab_size"}
    assert manifest["coverage"]["train"]["unk_rate"] == 0.0

    data = load_prepared(out)
    assert data.config_dict["model"]["encoder"] == str(tiny_encoder_dir)
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    sp = spm.SentencePieceProcessor(model_file=str(data.spm_path))
    assert [sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()] == [0, 1, 2, 3]
    for name in ("train", "dev", "test"):
        split = data.split(name)
        assert len(split) == counts[name]["kept"] == data.count(name)
        assert split.features["src_ids"].feature.dtype == "int32"
        assert split.features["tgt_ids"].feature.dtype == "int32"
        row = split[0]
        assert row["src_ids"] == tokenizer(row["src"])["input_ids"]
        assert row["src_ids"][0] == tokenizer.cls_token_id and row["src_ids"][-1] == tokenizer.sep_token_id
        assert row["tgt_ids"] == sp.encode(row["tgt"]) and 2 not in row["tgt_ids"]
    for name in ("dev", "test"):
        split = data.split(name)
        assert data.source_file(name).read_text().splitlines() == split["src"]
        assert [p.name for p in data.references(name)] == [f"{name}.ref"]
        assert data.references(name)[0].read_text().splitlines() == split["tgt"]


def test_coverage_figures_match_a_plain_recount(tmp_path, config):
    from transformers import AutoTokenizer

    lines = [f"dios dijo ☃ {i}\tgod said snow {i}\n" for i in range(60)]  # ☃ is unknown
    (tmp_path / "c.tsv").write_text("".join(lines), encoding="utf-8")
    cover = prepare(CorpusSpec(tsv=tmp_path / "c.tsv"), tmp_path / "out", config)["coverage"]
    data = load_prepared(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    used = set()
    for name in ("train", "dev", "test"):
        rows = list(data.split(name))
        tokens = sum(len(r["src_ids"]) - 2 for r in rows)  # minus [CLS] and [SEP]
        unks = sum(r["src_ids"].count(tokenizer.unk_token_id) for r in rows)
        assert unks >= len(rows)
        assert cover[name]["unk_rate"] == round(unks / tokens, 6)
        words = sum(len(r["src"].split()) for r in rows)
        assert cover[name]["src_tokens_per_word"] == round(tokens / words, 4)
        pieces, tgt_words = sum(len(r["tgt_ids"]) for r in rows), sum(len(r["tgt"].split()) for r in rows)
        assert cover[name]["tgt_tokens_per_word"] == round(pieces / tgt_words, 4)
        if name != "test":
            used.update(i for r in rows for i in r["src_ids"])
    assert cover["encoder_ids_used"] == len(used)
    assert cover["encoder_vocab_size"] == len(tokenizer)


def test_same_input_gives_the_same_output(tmp_path, pair_files, config):
    spec = CorpusSpec(src=pair_files[0], tgt=pair_files[1])
    prepare(spec, tmp_path / "a", config)
    prepare(spec, tmp_path / "b", config)
    assert (tmp_path / "a/spm.model").read_bytes() == (tmp_path / "b/spm.model").read_bytes()
    a, b = load_prepared(tmp_path / "a"), load_prepared(tmp_path / "b")
    for name in ("train", "dev", "test"):
        assert a.split(name).to_dict() == b.split(name).to_dict()


@pytest.mark.parametrize("kind", ["tsv", "tmx", "dataset"])
def test_other_input_kinds(tmp_path, kind, config, tiny_parallel_lines):
    import datasets

    src, tgt = tiny_parallel_lines
    if kind == "tsv":
        path = tmp_path / "c.tsv"
        path.write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)), encoding="utf-8")
        spec = CorpusSpec(tsv=path)
    elif kind == "tmx":
        path = tmp_path / "c.tmx"
        tus = "".join(f'<tu><tuv xml:lang="es-ES"><seg>{s}</seg></tuv>'
                      f'<tuv xml:lang="en-GB"><seg>{t}</seg></tuv></tu>\n' for s, t in zip(src, tgt))
        path.write_text(f'<?xml version="1.0"?><tmx version="1.4"><header/><body>\n{tus}</body></tmx>',
                        encoding="utf-8")
        spec = CorpusSpec(tmx=path)
    else:
        translation = [{"es": s, "en": t} for s, t in zip(src, tgt)]
        datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"translation": translation[:180]}),
            "validation": datasets.Dataset.from_dict({"translation": translation[180:190]}),
            "test": datasets.Dataset.from_dict({"translation": translation[190:]}),
        }).save_to_disk(str(tmp_path / "ds"))
        spec = CorpusSpec(dataset=str(tmp_path / "ds"))
    manifest = prepare(spec, tmp_path / "out", config)
    splits = manifest["splits"]
    assert sum(s["read"] for s in splits.values()) == 200
    assert splits["train"]["kept"] > 100
    if kind == "dataset":  # its own splits, nothing carved
        assert (splits["dev"]["read"], splits["test"]["read"]) == (10, 10)
        assert not splits["dev"]["carved"] and not splits["test"]["carved"]


def test_explicit_dev_and_test_and_token_limits(tmp_path, pair_files, config):
    (tmp_path / "dev.tsv").write_text("dios dijo\tgod said\n\t\nrey\tking\n", encoding="utf-8")
    (tmp_path / "t.es").write_text("agua luz\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("water light\n", encoding="utf-8")
    config.data.max_src_tokens = 6  # [CLS] + 4 words + [SEP]: longer sources are dropped
    spec = CorpusSpec(src=pair_files[0], tgt=pair_files[1], dev=[tmp_path / "dev.tsv"],
                      test=[tmp_path / "t.es", tmp_path / "t.en"])
    manifest = prepare(spec, tmp_path / "out", config)
    splits = manifest["splits"]
    assert splits["dev"] == {"read": 3, "kept": 2, "carved": False, "dropped": {"empty": 1}}
    assert splits["test"] == {"read": 1, "kept": 1, "carved": False, "dropped": {}}
    assert splits["train"]["dropped"]["too_long_tokens"] > 0
    assert (tmp_path / "out/dev.src").read_text() == "dios dijo\nrey\n"
    assert (tmp_path / "out/test.ref").read_text() == "water light\n"
    assert all(len(ids) <= 6 for ids in load_prepared(tmp_path / "out").split("train")["src_ids"])


def test_dev_pairs_the_model_cannot_take_are_dropped_everywhere(tmp_path, pair_files, config):
    (tmp_path / "dev.tsv").write_text("dios dijo\tgod said\nrey\tking house land day son\n")
    config.model.max_target_positions, config.data.max_tgt_tokens = 5, 4
    spec = CorpusSpec(src=pair_files[0], tgt=pair_files[1], dev=[tmp_path / "dev.tsv"])
    manifest = prepare(spec, tmp_path / "out", config)
    assert manifest["splits"]["dev"]["dropped"] == {"exceeds_model_limits": 1}
    data = load_prepared(tmp_path / "out")
    assert data.split("dev")["src"] == ["dios dijo"]
    assert (tmp_path / "out/dev.src").read_text() == "dios dijo\n"
    assert (tmp_path / "out/dev.ref").read_text() == "god said\n"


def test_bundled_corpus_writes_second_references(tmp_path, monkeypatch, config):
    rows = [(f"r{i}", f"dios dijo {i}", f"god said {i}", f"god spake {i}") for i in range(40)]
    monkeypatch.setattr(corpora, "BUNDLED_CORPUS", make_bundled(
        tmp_path / "bible", {"train": rows[:30], "dev": rows[30:35], "test": rows[35:]}))
    manifest = prepare(CorpusSpec(), tmp_path / "out", config)
    assert [manifest["splits"][s]["kept"] for s in ("train", "dev", "test")] == [30, 5, 5]
    assert manifest["files"]["test"] == {"src": "test.src", "refs": ["test.ref", "test.ref2"]}
    assert (tmp_path / "out/dev.ref2").read_text().splitlines() == [r[3] for r in rows[30:35]]
    assert [i["role"] for i in manifest["inputs"]] == ["train", "dev", "test"]


def test_bom_and_crlf_are_cleaned(tmp_path, config):
    (tmp_path / "c.es").write_bytes(("\ufeffdios  dijo\r\n" + "rey\u00a0casa\r\n" * 1 +
                                     "".join(f"agua {i}\r\n" for i in range(30))).encode())
    (tmp_path / "c.en").write_bytes(("\ufeffgod said\r\nking\thouse\r\n" +
                                     "".join(f"water {i}\r\n" for i in range(30))).encode())
    prepare(CorpusSpec(src=tmp_path / "c.es", tgt=tmp_path / "c.en"), tmp_path / "out", config)
    data = load_prepared(tmp_path / "out")
    pairs = {(r["src"], r["tgt"]) for name in ("train", "dev", "test") for r in data.split(name)}
    assert ("dios dijo", "god said") in pairs and ("rey casa", "king house") in pairs
    assert not any("\r" in s or "\ufeff" in s or "\t" in t for s, t in pairs)


def test_failure_leaves_no_output_and_keeps_an_existing_one(tmp_path, config):
    (tmp_path / "c.tsv").write_text("\tx\n\t\n", encoding="utf-8")
    spec = CorpusSpec(tsv=tmp_path / "c.tsv")
    with pytest.raises(UserError, match=r"c\.tsv: no training pairs left after filtering \(2 dropped: empty 2\)"):
        prepare(spec, tmp_path / "out", config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out/keep.txt").write_text("mine")
    with pytest.raises(UserError):
        prepare(spec, tmp_path / "out", config)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tsv", "out"]


BAD_INPUTS = {  # name: (files to write, spec, expected message start)
    "missing file": ({}, dict(tsv="nope.tsv"), "nope.tsv: TSV file not found"),
    "directory": ({}, dict(tsv="."), ".: is a directory, expected a TSV file"),
    "line counts": ({"a.es": b"1\n2\n", "a.en": b"1\n"}, dict(src="a.es", tgt="a.en"),
                    "a.es has 2 lines but "),
    "invalid utf-8": ({"c.tsv": b"a\tb\n\xc3(\tx\n"}, dict(tsv="c.tsv"), "c.tsv:2: invalid UTF-8"),
    "nul byte": ({"c.tsv": b"a\tb\na\x00\tb\n"}, dict(tsv="c.tsv"), "c.tsv:2: contains a NUL byte"),
    "no tab": ({"c.tsv": b"a\tb\nab\n"}, dict(tsv="c.tsv"), "c.tsv:2: expected source<TAB>target"),
    "malformed tmx": ({"m.tmx": b"<tmx><body>\n<tu>\n</body></tmx>"}, dict(tmx="m.tmx"),
                      "m.tmx:3: malformed TMX"),
    "empty corpus": ({"c.tsv": b""}, dict(tsv="c.tsv"), "c.tsv: no training pairs left"),
    "bad dev file": ({"c.tsv": b"a\tb\n", "d.tsv": b"x\n"}, dict(tsv="c.tsv", dev=["d.tsv"]),
                     "d.tsv:1: expected source<TAB>target"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path, monkeypatch, config, case):
    files, spec, expected = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        Path(name).write_bytes(content)
    spec = {k: [Path(f) for f in v] if isinstance(v, list) else Path(v) for k, v in spec.items()}
    with pytest.raises(UserError) as err:
        prepare(CorpusSpec(**spec), Path("out"), config)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_everything_too_long_in_tokens_is_a_user_error(tmp_path, pair_files, config):
    config.data.max_tgt_tokens = 1
    with pytest.raises(UserError, match="no training pairs left after filtering .*too_long_tokens"):
        prepare(CorpusSpec(src=pair_files[0], tgt=pair_files[1]), tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_load_prepared_errors(tmp_path):
    with pytest.raises(UserError, match="prepared data directory not found"):
        load_prepared(tmp_path / "missing")
    with pytest.raises(UserError) as err:
        load_prepared(tmp_path)
    assert str(err.value) == (f"{tmp_path}: not a prepared data directory (no manifest.json); "
                              "run `nmt-bert prepare`")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(UserError, match="corrupt manifest"):
        load_prepared(tmp_path)


def test_cli_bad_input_is_one_line(tmp_path, tiny_encoder_dir):
    (tmp_path / "a.es").write_text("uno\ndos\n")
    (tmp_path / "a.en").write_text("one\n")
    result = CliRunner().invoke(app, [
        "prepare", "--out", str(tmp_path / "out"), "--src", str(tmp_path / "a.es"),
        "--tgt", str(tmp_path / "a.en"), "--set", f"model.encoder={tiny_encoder_dir}"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "has 2 lines but" in result.output and "has 1" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_prepares_a_tsv(tmp_path, tiny_encoder_dir, tiny_parallel_lines):
    src, tgt = tiny_parallel_lines
    (tmp_path / "c.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)))
    result = CliRunner().invoke(app, [
        "prepare", "--out", str(tmp_path / "out"), "--tsv", str(tmp_path / "c.tsv"),
        *[arg for s in [f"model.encoder={tiny_encoder_dir}", *SETTINGS] for arg in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "encoder ids used by train+dev" in result.output
    assert load_prepared(tmp_path / "out").count("train") > 100


@pytest.mark.skipif(not (REPO / "data/bible-es-en/train.tsv.gz").is_file(),
                    reason="the bundled corpus is not in this checkout")
def test_a_slice_of_the_real_bundled_corpus(tmp_path, config):
    config.data.limit_train, config.data.tgt_vocab_size = 300, 200  # the KJV has 67 characters
    manifest = prepare(CorpusSpec(), tmp_path / "out", config)
    splits = manifest["splits"]
    assert splits["train"]["kept"] <= 300 and splits["train"]["kept"] > 250
    assert splits["dev"]["kept"] > 0 and splits["test"]["kept"] > 0
    assert manifest["files"]["test"]["refs"] == ["test.ref", "test.ref2"]
    data = load_prepared(tmp_path / "out")
    lines = [len(p.read_text(encoding="utf-8").splitlines()) for p in
             (data.source_file("test"), *data.references("test"))]
    assert lines == [splits["test"]["kept"]] * 3
