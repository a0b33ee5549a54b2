"""Parallel corpus readers: aligned files, TSV, TMX, the bundled Bible (datasets: dataset_corpora).

`open_corpus` checks a CorpusSpec and returns a Corpus: one re-startable stream of raw Pairs
per split it provides (a split it lacks is carved later by hashing). Readers are generators,
so a corpus is never held in memory; every error names the file and, where one applies, the
1-based line.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from nmt_bert.errors import UserError
from nmt_bert.hashing import file_sha256
from nmt_bert.textio import check_readable_file, count_lines, iter_lines

# Overridable (tests monkeypatch it): the corpus `prepare` uses when given no inputs.
BUNDLED_CORPUS = Path(__file__).resolve().parent / "bible-es-en"  # package data
# A second English reference shipped with the bundled corpus (King James Version).
BUNDLED_SECOND_REFERENCE = {"en": "kjv"}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# TMX inline elements holding native markup codes (e.g. "<b>"), not text; their tails are text.
TMX_CODE_ELEMENTS = {"bpt", "ept", "it", "ph", "ut"}


class Pair(NamedTuple):
    src: str
    tgt: str
    ref2: str | None = None  # a second reference translation, where the corpus has one


@dataclass
class CorpusSpec:
    """The inputs as the user gave them (see `nmt-bert prepare --help`)."""

    src: Path | None = None
    tgt: Path | None = None
    tsv: Path | None = None
    tmx: Path | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    dev: list[Path] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)

    def kind(self) -> str:
        """"pair", "tsv", "tmx", "dataset" or "bundled" (no inputs); mixed inputs are an error."""
        given = [opt for opt, on in (("--src/--tgt", self.src or self.tgt), ("--tsv", self.tsv),
                                     ("--tmx", self.tmx), ("--dataset", self.dataset)) if on]
        if len(given) > 1:
            raise UserError(f"give one corpus, not {' and '.join(given)}")
        if (self.src is None) != (self.tgt is None):
            raise UserError("--src and --tgt go together: give both aligned files")
        if self.dataset_config and not self.dataset:
            raise UserError("--dataset-config needs --dataset")
        for opt, files in (("--dev", self.dev), ("--test", self.test)):
            if len(files) > 2:
                raise UserError(f"{opt}: give SRC and TGT files or one TSV, not {len(files)} files")
        if not given:
            return "bundled"
        return {"--src/--tgt": "pair", "--tsv": "tsv", "--tmx": "tmx"}.get(given[0], "dataset")


Stream = Callable[[], Iterator[Pair]]


@dataclass
class Corpus:
    """Readers per split; a split that is None is carved from train by `cleaning`."""

    train: Stream
    dev: Stream | None
    test: Stream | None
    inputs: list[dict[str, Any]]  # role, kind, path or name, sha256: recorded in the manifest


def open_corpus(spec: CorpusSpec, src_lang: str, tgt_lang: str, cache_dir: Path) -> Corpus:
    """Check every input exists and is readable, and return readers for its splits.

    `cache_dir` receives the Arrow cache of data files loaded through `datasets`.
    """
    kind = spec.kind()
    if kind == "pair":
        corpus = Corpus(_pair_stream(spec.src, spec.tgt), None, None,
                        [record("corpus", "text", spec.src), record("corpus", "text", spec.tgt)])
    elif kind == "tsv":
        corpus = Corpus(_tsv_stream(spec.tsv), None, None, [record("corpus", "tsv", spec.tsv)])
    elif kind == "tmx":
        check_readable_file(spec.tmx, "TMX file")
        corpus = Corpus(lambda: read_tmx(spec.tmx, src_lang, tgt_lang), None, None,
                        [record("corpus", "tmx", spec.tmx)])
    elif kind == "dataset":
        from nmt_bert.data.dataset_corpora import open_dataset

        corpus = open_dataset(spec.dataset, spec.dataset_config, src_lang, tgt_lang, cache_dir)
    else:
        corpus = _open_bundled(src_lang, tgt_lang)
    for role, files in (("dev", spec.dev), ("test", spec.test)):
        if files:
            setattr(corpus, role, _pair_stream(*files) if len(files) == 2 else _tsv_stream(files[0]))
            corpus.inputs = [i for i in corpus.inputs if i["role"] != role]
            corpus.inputs += [record(role, "text" if len(files) == 2 else "tsv", f) for f in files]
    return corpus


def read_parallel(src: Path, tgt: Path) -> Iterator[Pair]:
    """Line i of `src` with line i of `tgt` (`_pair_stream` checks the counts first)."""
    for s, t in zip(iter_lines(src, "source file"), iter_lines(tgt, "target file"), strict=True):
        yield Pair(s, t)


def read_tsv(path: Path) -> Iterator[Pair]:
    """`source<TAB>target` per line; a blank line is an empty pair.

    A line with no tab or more than one (a tab inside a sentence, a third column) is a
    UserError naming the file and line: the pair cannot be split safely.
    """
    for number, line in enumerate(iter_lines(path, "TSV file"), start=1):
        cols = line.split("\t")
        if len(cols) == 2:
            yield Pair(cols[0], cols[1])
        elif not line.strip():
            yield Pair("", "")
        elif len(cols) == 1:
            raise UserError(f"{path}:{number}: expected source<TAB>target, found no tab")
        else:
            raise UserError(f"{path}:{number}: expected source<TAB>target, "
                            f"found {len(cols)} tab-separated fields")


def read_tmx(path: Path, src_lang: str, tgt_lang: str) -> Iterator[Pair]:
    """One Pair per <tu>, from the <tuv>s whose xml:lang matches each language by prefix.

    A <tu> lacking one of the languages yields an empty side (dropped later as `empty`).
    ElementTree never fetches external entities, so a hostile TMX cannot read local files.
    """
    seen: set[str] = set()
    matched = 0
    body = None
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                body = elem if elem.tag == "body" else body
                continue
            if elem.tag != "tu":
                continue
            segs: dict[str, str] = {}
            for tuv in elem.iter("tuv"):
                lang = tuv.get(XML_LANG) or tuv.get("lang") or ""
                seen.add(lang)
                seg = tuv.find("seg")
                for side, want in (("src", src_lang), ("tgt", tgt_lang)):
                    if seg is not None and side not in segs and lang_matches(lang, want):
                        segs[side] = _seg_text(seg)
            matched += len(segs) == 2
            yield Pair(segs.get("src", ""), segs.get("tgt", ""))
            elem.clear()
            if body is not None:
                body.clear()  # keeps memory flat on large memories
    except ET.ParseError as err:
        raise UserError(f"{path}:{err.position[0]}: malformed TMX ({_parse_reason(err)})") from None
    if not matched:
        langs = ", ".join(sorted(seen)) or "none"
        raise UserError(f"{path}: no <tu> has both '{src_lang}' and '{tgt_lang}' "
                        f"(languages: {langs})")


def lang_matches(code: str, want: str) -> bool:
    """"es-ES" and "es_es" match "es"; "es" matches "es-ES" only when asked for exactly that."""
    code, want = code.lower().replace("_", "-"), want.lower().replace("_", "-")
    return code == want or code.startswith(want + "-")


def _pair_stream(src: Path, tgt: Path) -> Stream:
    check_readable_file(src, "source file")
    check_readable_file(tgt, "target file")
    n_src, n_tgt = count_lines(src), count_lines(tgt)
    if n_src != n_tgt:
        raise UserError(f"{src} has {n_src} lines but {tgt} has {n_tgt}; "
                        "source and target files must be line-aligned")
    return lambda: read_parallel(src, tgt)


def _tsv_stream(path: Path) -> Stream:
    check_readable_file(path, "TSV file")
    return lambda: read_tsv(path)


def record(role: str, kind: str, path: Path | str, sha: bool = True) -> dict[str, Any]:
    record = {"role": role, "kind": kind, "path": str(path)}
    if sha:
        record["sha256"] = file_sha256(Path(path))
    return record


def _seg_text(seg: ET.Element) -> str:
    """A <seg>'s text including inline elements such as <hi>, minus native markup codes."""
    parts = [seg.text or ""]
    for child in seg:
        if child.tag not in TMX_CODE_ELEMENTS:
            parts.append(_seg_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _parse_reason(err: ET.ParseError) -> str:
    return str(err).split(":")[0]  # expat appends ": line L, column C", already in the prefix


def _open_bundled(src_lang: str, tgt_lang: str) -> Corpus:
    ref2 = BUNDLED_SECOND_REFERENCE.get(tgt_lang)
    files = {split: BUNDLED_CORPUS / f"{split}.tsv.gz" for split in ("train", "dev", "test")}
    for path in files.values():
        if not path.is_file():
            raise UserError(f"{path}: bundled corpus not found; it ships with the source checkout "
                            "(or pass --src/--tgt, --tsv, --tmx or --dataset)")
    header = next(iter_lines(files["train"], "bundled corpus file"), "").split("\t")
    missing = [c for c in (src_lang, tgt_lang) if c not in header]
    if missing:
        raise UserError(f"{files['train']}: bundled corpus has no column '{missing[0]}' "
                        f"(columns: {', '.join(header)})")
    ref2 = ref2 if ref2 in header else None

    def stream(split: str) -> Stream:  # the second reference matters only for scoring
        return lambda: _read_bundled(files[split], src_lang, tgt_lang,
                                     None if split == "train" else ref2)

    return Corpus(stream("train"), stream("dev"), stream("test"),
                  [record(split, "bundled", path) for split, path in files.items()])


def _read_bundled(path: Path, src_lang: str, tgt_lang: str, ref2: str | None) -> Iterator[Pair]:
    lines = iter_lines(path, "bundled corpus file")
    header = next(lines, "").split("\t")
    try:
        idx = [header.index(c) for c in (src_lang, tgt_lang, ref2 or src_lang)]
    except ValueError:
        raise UserError(f"{path}:1: header lacks '{src_lang}', '{tgt_lang}' or '{ref2}'") from None
    for number, line in enumerate(lines, start=2):
        cols = line.split("\t")
        if len(cols) != len(header):
            raise UserError(f"{path}:{number}: expected {len(header)} tab-separated columns, "
                            f"found {len(cols)}")
        yield Pair(cols[idx[0]], cols[idx[1]], cols[idx[2]] if ref2 else None)

