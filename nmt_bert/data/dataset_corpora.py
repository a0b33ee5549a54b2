"""Corpora from `datasets`: a directory saved with save_to_disk, a local data file, a hub name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nmt_bert.data.corpora import Corpus, Pair, lang_matches, record
from nmt_bert.errors import UserError
from nmt_bert.textio import check_readable_file

DEV_SPLIT_NAMES = ("validation", "valid", "val", "dev", "development")
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


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


def open_dataset(name: str, config_name: str | None, src_lang: str, tgt_lang: str,
                  cache_dir: Path) -> Corpus:
    """A saved dataset directory, a local json/jsonl/csv/parquet file, or a hub name."""
    import datasets

    path = Path(name)
    source = record("corpus", "dataset", name, sha=path.exists())
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
        source["config"] = config_name
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
    return Corpus(streams["train"], streams.get("dev"), streams.get("test"), [source])


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
