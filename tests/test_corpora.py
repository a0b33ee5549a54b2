"""Corpus readers: aligned files, TSV, TMX, `datasets` datasets, the bundled corpus, bad inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from nmt_bert.data import corpora
from nmt_bert.data.corpora import CorpusSpec, lang_matches, open_corpus, read_tmx, read_tsv
from nmt_bert.errors import UserError


def pairs(stream) -> list[tuple]:
    return [tuple(p) for p in stream()]


def open_(tmp_path, **spec) -> corpora.Corpus:
    return open_corpus(CorpusSpec(**spec), "es", "en", tmp_path / "cache")


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- aligned plain files -------------------------------------------------------------------

def test_plain_pair_with_bom_and_crlf(tmp_path):
    src = write(tmp_path / "a.es", b"\xef\xbb\xbfhola\r\nadi\xc3\xb3s\r\n")
    tgt = write(tmp_path / "a.en", "hello\nbye")  # no final newline: still two lines
    corpus = open_(tmp_path, src=src, tgt=tgt)
    assert pairs(corpus.train) == [("hola", "hello", None), ("adiós", "bye", None)]
    assert corpus.dev is None and corpus.test is None
    assert [i["role"] for i in corpus.inputs] == ["corpus", "corpus"]
    assert len(corpus.inputs[0]["sha256"]) == 64


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "a.es", "uno\ndos\ntres\n")
    tgt = write(tmp_path / "a.en", "one\ntwo\n")
    with pytest.raises(UserError) as err:
        open_(tmp_path, src=src, tgt=tgt)
    assert str(err.value) == f"{src} has 3 lines but {tgt} has 2; " \
        "source and target files must be line-aligned"


@pytest.mark.parametrize("content, expected", [
    (b"ok\nbad \xff byte\n", "a.es:2: invalid UTF-8"),
    (b"ok\nok\nnul\x00byte\n", "a.es:3: contains a NUL byte"),
])
def test_bad_bytes_name_file_and_line(tmp_path, content, expected):
    src = write(tmp_path / "a.es", content)
    tgt = write(tmp_path / "a.en", "x\n" * content.count(b"\n"))
    corpus = open_(tmp_path, src=src, tgt=tgt)
    with pytest.raises(UserError, match=expected):
        pairs(corpus.train)


def test_missing_file_and_directory(tmp_path):
    tgt = write(tmp_path / "a.en", "x\n")
    with pytest.raises(UserError, match=r"nope\.es: source file not found"):
        open_(tmp_path, src=tmp_path / "nope.es", tgt=tgt)
    with pytest.raises(UserError, match="is a directory, expected a TSV file"):
        open_(tmp_path, tsv=tmp_path)


@pytest.mark.parametrize("spec, message", [
    (dict(src=Path("a"), tgt=Path("b"), tsv=Path("c")), "give one corpus, not --src/--tgt and --tsv"),
    (dict(tmx=Path("a"), dataset="x"), "give one corpus, not --tmx and --dataset"),
    (dict(src=Path("a")), "--src and --tgt go together"),
    (dict(dataset_config="de-en"), "--dataset-config needs --dataset"),
    (dict(tsv=Path("a"), dev=[Path("1"), Path("2"), Path("3")]), "--dev: give SRC and TGT"),
])
def test_spec_checks(spec, message):
    with pytest.raises(UserError, match=message):
        CorpusSpec(**spec).kind()


# --- TSV -----------------------------------------------------------------------------------

def test_tsv_blank_line_is_empty_pair(tmp_path):
    path = write(tmp_path / "c.tsv", "hola\thello\n\nadiós\tbye\n")
    assert [tuple(p) for p in read_tsv(path)] == [
        ("hola", "hello", None), ("", "", None), ("adiós", "bye", None)]


def test_tsv_line_without_tab(tmp_path):
    path = write(tmp_path / "c.tsv", "hola\thello\nno tab here\n")
    with pytest.raises(UserError) as err:
        list(read_tsv(path))
    assert str(err.value) == f"{path}:2: expected source<TAB>target, found no tab"


def test_explicit_dev_and_test(tmp_path):
    corpus_tsv = write(tmp_path / "c.tsv", "a\tb\n")
    dev_src, dev_tgt = write(tmp_path / "d.es", "uno\n"), write(tmp_path / "d.en", "one\n")
    test_tsv = write(tmp_path / "t.tsv", "dos\ttwo\n")
    corpus = open_(tmp_path, tsv=corpus_tsv, dev=[dev_src, dev_tgt], test=[test_tsv])
    assert pairs(corpus.dev) == [("uno", "one", None)]
    assert pairs(corpus.test) == [("dos", "two", None)]
    assert [(i["role"], i["kind"]) for i in corpus.inputs] == [
        ("corpus", "tsv"), ("dev", "text"), ("dev", "text"), ("test", "tsv")]


# --- TMX -----------------------------------------------------------------------------------

TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header srclang="es-ES" datatype="plaintext"/><body>
<tu><tuv xml:lang="es-ES"><seg>Hola <hi>mundo</hi></seg></tuv>
    <tuv xml:lang="EN-us"><seg>Hello <bpt i="1">&lt;b&gt;</bpt>world<ept i="1">&lt;/b&gt;</ept>!</seg></tuv></tu>
<tu><tuv lang="es"><seg>Adiós</seg></tuv><tuv lang="en"><seg>Bye</seg></tuv></tu>
<tu><tuv xml:lang="es"><seg>Solo</seg></tuv><tuv xml:lang="fr"><seg>Seul</seg></tuv></tu>
</body></tmx>
"""


def test_tmx_languages_by_prefix_and_inline_text(tmp_path):
    path = write(tmp_path / "m.tmx", TMX)
    assert [tuple(p) for p in read_tmx(path, "es", "en")] == [
        ("Hola mundo", "Hello world!", None), ("Adiós", "Bye", None), ("Solo", "", None)]


def test_tmx_without_the_languages(tmp_path):
    path = write(tmp_path / "m.tmx", TMX)
    with pytest.raises(UserError, match=r"no <tu> has both 'de' and 'en' \(languages: EN-us, en, es, es-ES, fr\)"):
        list(read_tmx(path, "de", "en"))


def test_malformed_tmx_names_file_and_line(tmp_path):
    path = write(tmp_path / "m.tmx", "<tmx>\n<body>\n<tu><tuv xml:lang='es'><seg>x</tuv>\n</body></tmx>")
    with pytest.raises(UserError) as err:
        list(read_tmx(path, "es", "en"))
    assert str(err.value) == f"{path}:3: malformed TMX (mismatched tag)"


@pytest.mark.parametrize("code, want, ok", [
    ("es-ES", "es", True), ("ES_es", "es", True), ("es", "es", True), ("est", "es", False),
    ("es", "es-ES", False), ("en-US", "es", False),
])
def test_lang_matches(code, want, ok):
    assert lang_matches(code, want) is ok


# --- datasets ------------------------------------------------------------------------------

def test_saved_dataset_with_translation_column_and_splits(tmp_path):
    import datasets

    rows = lambda n, p: {"translation": [{"es": f"{p} {i}", "en": f"{p}-en {i}"} for i in range(n)]}  # noqa: E731
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows(3, "t")),
                               "validation": datasets.Dataset.from_dict(rows(2, "v"))})
    dd.save_to_disk(str(tmp_path / "ds"))
    corpus = open_(tmp_path, dataset=str(tmp_path / "ds"))
    assert pairs(corpus.train) == [(f"t {i}", f"t-en {i}", None) for i in range(3)]
    assert pairs(corpus.dev) == [("v 0", "v-en 0", None), ("v 1", "v-en 1", None)]
    assert corpus.test is None
    assert corpus.inputs[0]["kind"] == "dataset" and len(corpus.inputs[0]["sha256"]) == 64


def test_translation_column_languages_match_by_prefix(tmp_path):
    import datasets

    features = datasets.Features({"translation": datasets.Translation(languages=["en_US", "es_ES"])})
    ds = datasets.Dataset.from_dict({"translation": [{"es_ES": "hola", "en_US": "hello"}]},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    assert pairs(open_(tmp_path, dataset=str(tmp_path / "ds")).train) == [("hola", "hello", None)]
    with pytest.raises(UserError, match=r"the translation column has no 'de' \(languages: en_US, es_ES\)"):
        open_corpus(CorpusSpec(dataset=str(tmp_path / "ds")), "de", "en", tmp_path / "cache")


def test_jsonl_file_with_language_columns(tmp_path):
    path = write(tmp_path / "c.jsonl", '{"es": "hola", "en": "hello"}\n{"es": null, "en": "x"}\n')
    corpus = open_(tmp_path, dataset=str(path))
    assert pairs(corpus.train) == [("hola", "hello", None), ("", "x", None)]


def test_dataset_without_usable_columns(tmp_path):
    path = write(tmp_path / "c.csv", "de,fr\na,b\n")
    with pytest.raises(UserError, match="expected a 'translation' column .* found de, fr"):
        open_(tmp_path, dataset=str(path))


def test_hub_name_offline_suggests_local_files(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as err:
        open_(tmp_path, dataset="someone/corpus")
    assert str(err.value).startswith("someone/corpus: cannot load dataset (Couldn't reach")
    assert "save_to_disk" in str(err.value)


# --- the bundled corpus --------------------------------------------------------------------

def make_bundled(directory: Path, rows: dict[str, list[tuple[str, str, str, str]]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        text = "ref\tes\ten\tkjv\n" + "".join("\t".join(r) + "\n" for r in lines)
        with gzip.open(directory / f"{split}.tsv.gz", "wt", encoding="utf-8") as handle:
            handle.write(text)
    return directory


def test_bundled_corpus_uses_its_splits_and_second_reference(tmp_path, monkeypatch):
    row = lambda i: (f"Gen.1.{i}", f"es {i}", f"en {i}", f"kjv {i}")  # noqa: E731
    monkeypatch.setattr(corpora, "BUNDLED_CORPUS", make_bundled(
        tmp_path / "bible", {"train": [row(1), row(2)], "dev": [row(3)], "test": [row(4)]}))
    corpus = open_(tmp_path)
    assert pairs(corpus.train) == [("es 1", "en 1", None), ("es 2", "en 2", None)]
    assert pairs(corpus.dev) == [("es 3", "en 3", "kjv 3")]
    assert pairs(corpus.test) == [("es 4", "en 4", "kjv 4")]
    reverse = open_corpus(CorpusSpec(), "en", "es", tmp_path / "cache")
    assert pairs(reverse.dev) == [("en 3", "es 3", None)]  # no second Spanish reference


def test_missing_bundled_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "BUNDLED_CORPUS", tmp_path / "nothing")
    with pytest.raises(UserError, match="bundled corpus not found; it ships with the source checkout"):
        open_(tmp_path)


def test_corrupt_gzip(tmp_path, monkeypatch):
    bible = make_bundled(tmp_path / "bible", {s: [("r", "a", "b", "c")] for s in ("train", "dev", "test")})
    write(bible / "dev.tsv.gz", gzip.compress(b"ref\tes\ten\tkjv\n" * 1000)[:-40])
    monkeypatch.setattr(corpora, "BUNDLED_CORPUS", bible)
    with pytest.raises(UserError, match=r"dev\.tsv\.gz:\d+: corrupt gzip data"):
        pairs(open_(tmp_path).dev)
