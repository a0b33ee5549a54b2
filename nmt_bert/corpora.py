"""Parallel corpus readers: aligned files, TSV, TMX, `datasets` datasets, the bundled Bible.

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
from nmt_bert.textio import check_readable_file, count_lines, file_sha256, iter_lines

# Overridable (tests monkeypatch it): the corpus `prepare` uses when given no inputs.
BUNDLED_CORPUS = Path(__file__).resolve().parents[1] / "data" / "bible-es-en"
# A second English reference shipped with the bundled corpus (King James Version).
BUNDLED_SECOND_REFERENCE = {"en": "kjv"}
DEV_SPLIT_NAMES = ("validation", "valid", "val", "dev", "development")
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
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
                        [_record("corpus", "text", spec.src), _record("corpus", "text", spec.tgt)])
    elif kind == "tsv":
        corpus = Corpus(_tsv_stream(spec.tsv), None, None, [_record("corpus", "tsv", spec.tsv)])
    elif kind == "tmx":
        check_readable_file(spec.tmx, "TMX file")
        corpus = Corpus(lambda: read_tmx(spec.tmx, src_lang, tgt_lang), None, None,
                        [_record("corpus", "tmx", spec.tmx)])
    elif kind == "dataset":
        corpus = _open_dataset(spec.dataset, spec.dataset_config, src_lang, tgt_lang, cache_dir)
    else:
        corpus = _open_bundled(src_lang, tgt_lang)
    for role, files in (("dev", spec.dev), ("test", spec.test)):
        if files:
            setattr(corpus, role, _pair_stream(*files) if len(files) == 2 else _tsv_stream(files[0]))
            corpus.inputs = [i for i in corpus.inputs if i["role"] != role]
            corpus.inputs += [_record(role, "text" if len(files) == 2 else "tsv", f) for f in files]
    return corpus


def read_parallel(src: Path, tgt: Path) -> Iterator[Pair]:
    """Line i of `src` with line i of `tgt` (`_pair_stream` checks the counts first)."""
    for s, t in zip(iter_lines(src, "source file"), iter_lines(tgt, "target file"), strict=True):
        yield Pair(s, t)


def read_tsv(path: Path) -> Iterator[Pair]:
    """`source<TAB>target` per line; extra columns are ignored, a blank line is an empty pair."""
    for number, line in enumerate(iter_lines(path, "TSV file"), start=1):
        cols = line.split("\t")
        if len(cols) < 2:
            if not line.strip():
                yield Pair("", "")
                continue
            raise UserError(f"{path}:{number}: expected source<TAB>target, found no tab")
        yield Pair(cols[0], cols[1])


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


def read_dataset(dataset: Any, columns: tuple[str, str, str | None], where: str) -> Iterator[Pair]:
    """Rows of a `datasets.Dataset`, in batches straight from its memory-mapped Arrow file.

    `columns` is (source, target, None) for plain columns or ("translation", src, tgt) for a
    column of {language: text} dicts. None counts as empty text.
    """
    first, second, third = columns
    for start in range(0, len(dataset), 1000):
        batch = dataset[start:start + 1000]  # a dict of columns, read from the Arrow file
        if third is None:
            rows = zip(batch[first], batch[second])
        else:
            rows = (((d or {}).get(second), (d or {}).get(third)) for d in batch[first])
        for offset, (s, t) in enumerate(rows):
            if not isinstance(s, (str, type(None))) or not isinstance(t, (str, type(None))):
                raise UserError(f"{where} row {start + offset}: expected text, got "
                                f"{type(s).__name__} and {type(t).__name__}")
            yield Pair(s or "", t or "")


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


def _record(role: str, kind: str, path: Path | str, sha: bool = True) -> dict[str, Any]:
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


def _open_dataset(name: str, config_name: str | None, src_lang: str, tgt_lang: str,
                  cache_dir: Path) -> Corpus:
    """A saved dataset directory, a local json/jsonl/csv/parquet file, or a hub name."""
    import datasets

    path = Path(name)
    record = _record("corpus", "dataset", name, sha=path.exists())
    try:
        if path.is_dir() and any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(path))
        elif path.suffix.lower() in DATA_FILE_BUILDERS:
            check_readable_file(path, "data file")
            builder = DATA_FILE_BUILDERS[path.suffix.lower()]
            loaded = datasets.load_dataset(builder, data_files=str(path), cache_dir=str(cache_dir))
        else:
            loaded = datasets.load_dataset(name, config_name, cache_dir=str(cache_dir))
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{name}: cannot load dataset ({first_line}); offline, pass a directory "
                        "saved with save_to_disk or a local json/jsonl/csv/parquet file") from None
    if config_name:
        record["config"] = config_name
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    if "train" not in splits:
        if len(splits) != 1:
            raise UserError(f"{name}: no 'train' split (splits: {', '.join(splits)})")
        splits = {"train": next(iter(splits.values()))}
    dev_name = next((s for s in DEV_SPLIT_NAMES if s in splits), None)
    streams = {}
    for role, split in (("train", "train"), ("dev", dev_name), ("test", "test")):
        if split in splits:
            ds = splits[split]
            columns = _dataset_columns(ds.features, name, src_lang, tgt_lang)
            streams[role] = lambda ds=ds, c=columns, w=f"{name} [{split}]": read_dataset(ds, c, w)
    return Corpus(streams["train"], streams.get("dev"), streams.get("test"), [record])


def _dataset_columns(features: Any, where: str, src_lang: str, tgt_lang: str):
    """(source, target, None) for plain columns, ("translation", src, tgt) for a dict column."""
    names = list(features)
    if "translation" in names:
        feature = features["translation"]
        keys = list(getattr(feature, "languages", None) or
                    (feature if isinstance(feature, dict) else [src_lang, tgt_lang]))
        picked = [want if want in keys else next((k for k in keys if lang_matches(k, want)), None)
                  for want in (src_lang, tgt_lang)]
        if None in picked:
            want = (src_lang, tgt_lang)[picked.index(None)]
            raise UserError(f"{where}: the translation column has no '{want}' "
                            f"(languages: {', '.join(keys)})")
        return ("translation", *picked)
    for pair in ((src_lang, tgt_lang), ("src", "tgt"), ("source", "target")):
        if all(c in names for c in pair):
            return (*pair, None)
    raise UserError(f"{where}: expected a 'translation' column or columns '{src_lang}' and "
                    f"'{tgt_lang}' (or 'src' and 'tgt'); found {', '.join(names)}")


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
                  [_record(split, "bundled", path) for split, path in files.items()])


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

