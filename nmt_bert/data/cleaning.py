"""Normalise text, drop bad pairs and carve dev/test splits, counting every drop by reason.

The rules, in the order a pair meets them; the first one it breaks names its drop:

    empty, too_short           a side with no text (or fewer than data.min_chars characters)
    too_long_chars             a side longer than data.max_chars                    (train)
    length_ratio               char-length ratio above data.max_length_ratio        (train)
    duplicate                  an exact repeat of an earlier train pair             (train)
    overlaps_dev_test          a train pair that is also a dev or test pair         (train)
    source_in_dev_test         a train pair whose source is a dev or test source    (train)
    limit_train                beyond the first data.limit_train pairs              (train)
    too_long_tokens            more than data.max_src/tgt_tokens tokens (prepare)   (train)
    exceeds_model_limits       longer than the model can take at all (prepare)      (dev/test)

Dev and test are never deduplicated or length-filtered beyond that: their pairs are scored.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nmt_bert.config import DataConfig
from nmt_bert.data.corpora import Corpus, Pair
from nmt_bert.errors import UserError
from nmt_bert.data.prepared_dir import SPLITS

REASONS = ("empty", "too_short", "too_long_chars", "length_ratio", "duplicate",
           "overlaps_dev_test", "source_in_dev_test", "limit_train", "too_long_tokens",
           "exceeds_model_limits")
# Control characters other than whitespace, plus zero-width space and a stray BOM: invisible,
# they would only split words into odd tokens. (Whitespace controls become spaces below.)
_INVISIBLE = re.compile("[%s]" % "".join(
    re.escape(ch) for ch in map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x200B, 0xFEFF])
    if not ch.isspace()))
_SPACES = re.compile(r"\s+")  # Unicode-aware: tabs, NBSP, thin spaces, line separators


def normalize(text: str) -> str:
    """NFC, invisible characters removed, whitespace runs collapsed to one space, stripped.

    The result never contains a tab or newline, so a pair can be stored as one TSV line.
    """
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return _SPACES.sub(" ", _INVISIBLE.sub("", text)).strip()


def pair_reason(src: str, tgt: str, data: DataConfig, train: bool) -> str | None:
    """The first per-pair rule (normalised text) that drops the pair, or None to keep it."""
    shorter, longer = sorted((len(src), len(tgt)))
    if shorter == 0:
        return "empty"
    if shorter < data.min_chars:
        return "too_short"
    if not train:
        return None
    if longer > data.max_chars:
        return "too_long_chars"
    if shorter >= data.ratio_min_chars and longer / shorter > data.max_length_ratio:
        return "length_ratio"
    return None


def bucket(src: str, tgt: str) -> float:
    """A number in [0, 1) fixed by the pair's text alone: the same pair always lands in the
    same split, whatever the line order, and duplicates never straddle train and test."""
    digest = hashlib.sha256(f"{src}\t{tgt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pair_key(src: str, tgt: str) -> bytes:
    # 16-byte digests keep the duplicate set small (about 100 bytes a pair in a Python set).
    return hashlib.blake2b(f"{src}\t{tgt}".encode("utf-8"), digest_size=16).digest()


def source_key(src: str) -> bytes:
    return hashlib.blake2b(src.encode("utf-8"), digest_size=16).digest()


@dataclass
class SplitStats:
    """Pairs read into a split and dropped per reason; what remains was kept."""

    read: int = 0
    dropped: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())

    def drops_in_order(self) -> dict[str, int]:
        return dict(sorted(self.dropped.items(), key=_reason_order))

    def describe_drops(self) -> str:
        return ", ".join(f"{r} {n}" for r, n in self.drops_in_order().items())


@dataclass
class CleanedCorpus:
    train_path: Path  # normalised "src<TAB>tgt" lines, one kept train pair a line
    dev: list[Pair]
    test: list[Pair]
    stats: dict[str, SplitStats]
    carved: list[str]  # splits carved from the corpus by hashing


def clean_corpus(corpus: Corpus, data: DataConfig, work: Path, label: str,
                 advance: Callable[[int], None] = lambda n: None) -> CleanedCorpus:
    """Read, normalise, filter and split `corpus`; write the train pairs to `work`.

    Dev and test come from the corpus's own splits or are carved by `bucket` (dev_fraction,
    then test_fraction). A carved dev (and test, if test_fraction > 0) that comes out empty on
    a tiny corpus takes the train pair with the smallest bucket. `advance(n)` reports progress.
    Raises UserError, naming `label`, when no training pair is left.
    """
    stats = {split: SplitStats() for split in SPLITS}
    carve = {"dev": corpus.dev is None, "test": corpus.test is None}
    candidates = work / "candidates.tsv"
    held, spare = _first_pass(corpus.train(), data, carve, candidates, stats, advance)
    for split in ("dev", "test"):
        if not carve[split]:
            held[split] = _read_heldout(getattr(corpus, split), stats[split], data)
            if not held[split]:
                where = ", ".join(i["path"] for i in corpus.inputs if i["role"] == split) or label
                raise UserError(f"{where}: the {split} set has no pairs left after cleaning")
    moved = set()
    wanted = {"dev": True, "test": data.test_fraction > 0}
    for split in ("dev", "test"):
        if carve[split] and wanted[split] and not held[split] and spare:
            _, pair = spare.pop(0)
            held[split].append(pair)
            moved.add(pair_key(pair.src, pair.tgt))
            stats["train"].read -= 1
            stats[split].read += 1
    train_path = work / "train.tsv"
    _drop_overlaps(candidates, train_path, held, moved, stats["train"], data.limit_train)
    candidates.unlink()
    if stats["train"].kept == 0:
        raise no_training_pairs(label, stats["train"])
    return CleanedCorpus(train_path, held["dev"], held["test"], stats,
                         [s for s in ("dev", "test") if carve[s]])


def no_training_pairs(label: str, train: SplitStats) -> UserError:
    return UserError(f"{label}: no training pairs left after filtering "
                     f"({sum(train.dropped.values())} dropped: {train.describe_drops() or 'none'})")


def _normalized(raw: Pair) -> Pair:
    return Pair(normalize(raw.src), normalize(raw.tgt),
                None if raw.ref2 is None else normalize(raw.ref2))


def _first_pass(pairs: Iterable[Pair], data: DataConfig, carve: dict[str, bool], out_path: Path,
                stats: dict[str, SplitStats], advance: Callable[[int], None]):
    """Normalise, carve and filter the corpus; train candidates (deduplicated) go to `out_path`.

    Returns the carved dev/test pairs and the two train candidates with the smallest buckets.
    """
    bounds = {"dev": data.dev_fraction, "test": data.dev_fraction + data.test_fraction}
    held: dict[str, list[Pair]] = {"dev": [], "test": []}
    seen: set[bytes] = set()
    spare: list[tuple[float, Pair]] = []
    number = 0
    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        for number, raw in enumerate(pairs, start=1):
            pair = _normalized(raw)
            u = bucket(pair.src, pair.tgt) if carve["dev"] or carve["test"] else 1.0
            split = next((s for s in ("dev", "test") if u < bounds[s]), "train")
            split = split if split == "train" or carve[split] else "train"  # given, not carved
            stats[split].read += 1
            reason = pair_reason(pair.src, pair.tgt, data, train=split == "train")
            if reason is None and split == "train":
                key = pair_key(pair.src, pair.tgt)
                reason = "duplicate" if key in seen else None
                seen.add(key)
            if reason is not None:
                stats[split].dropped[reason] += 1
            elif split != "train":
                held[split].append(pair)
            else:
                out.write(f"{pair.src}\t{pair.tgt}\n")
                if len(spare) < 2 or u < spare[-1][0]:
                    spare = sorted([*spare, (u, pair)], key=lambda item: item[0])[:2]
            if number % 1000 == 0:
                advance(1000)
    advance(number % 1000)
    return held, spare


def _read_heldout(stream, stats: SplitStats, data: DataConfig) -> list[Pair]:
    kept = []
    for pair in map(_normalized, stream()):
        stats.read += 1
        reason = pair_reason(pair.src, pair.tgt, data, train=False)
        if reason:
            stats.dropped[reason] += 1
        else:
            kept.append(pair)
    return kept


def _drop_overlaps(candidates: Path, train_path: Path, held: dict[str, list[Pair]],
                   moved: set[bytes], stats: SplitStats, limit: int) -> None:
    """Second pass over the train candidates, now that dev and test are complete."""
    pairs = {pair_key(p.src, p.tgt) for split in held.values() for p in split}
    sources = {source_key(p.src) for split in held.values() for p in split}
    written = 0
    with open(candidates, encoding="utf-8", newline="\n") as lines, \
            open(train_path, "w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            src, tgt = line.rstrip("\n").split("\t")
            key = pair_key(src, tgt)
            if key in moved:
                moved.discard(key)  # it moved to dev/test: neither kept in train nor dropped
                continue
            if key in pairs:
                stats.dropped["overlaps_dev_test"] += 1
            elif source_key(src) in sources:
                stats.dropped["source_in_dev_test"] += 1
            elif limit and written >= limit:
                stats.dropped["limit_train"] += 1
            else:
                out.write(line)
                written += 1


def _reason_order(item: tuple[str, int]) -> int:
    return REASONS.index(item[0]) if item[0] in REASONS else len(REASONS)
