"""Normalisation, the per-pair rules, hashing splits, dedupe and dev/test overlap removal."""

from __future__ import annotations

import hashlib
import random

import pytest

from nmt_bert.data.cleaning import bucket, clean_corpus, normalize, pair_reason
from nmt_bert.config import DataConfig
from nmt_bert.data.corpora import Corpus, Pair
from nmt_bert.errors import UserError


def corpus_of(train, dev=None, test=None) -> Corpus:
    stream = lambda pairs: (lambda: iter([Pair(*p) for p in pairs]))  # noqa: E731
    return Corpus(stream(train), dev and stream(dev), test and stream(test), [])


def train_lines(cleaned) -> list[tuple[str, str]]:
    text = cleaned.train_path.read_text(encoding="utf-8")
    return [tuple(line.split("\t")) for line in text.splitlines()]


@pytest.mark.parametrize("raw, expected", [
    ("cafe\u0301", "café"),  # NFD -> NFC
    ("  two\t\tspaces\u00a0and\u2009thin  ", "two spaces and thin"),
    ("line\u2028separator\r\nand\x0bvt", "line separator and vt"),
    ("zero\u200bwidth\ufeff bom\x07bell\x00", "zerowidth bombell"),
    ("", ""),
    (" \t\u00a0 ", ""),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_normalize_never_leaves_tabs_or_newlines():
    text = normalize("a\tb\nc\rd\x85e\x1cf")
    assert "\t" not in text and "\n" not in text and "\r" not in text
    assert text == "a b c d e f"


@pytest.mark.parametrize("src, tgt, train, reason", [
    ("", "hello", True, "empty"),
    ("hola", "", False, "empty"),
    ("x" * 1001, "y" * 1000, True, "too_long_chars"),
    ("x" * 1001, "y" * 1000, False, None),  # dev/test keep long pairs
    ("a" * 10, "b" * 26, True, "length_ratio"),  # 2.6 > 2.5
    ("a" * 10, "b" * 25, True, None),  # exactly 2.5 is fine
    ("Sí.", "Yes, it is so.", True, None),  # under 10 chars: ratio not judged
    ("a" * 10, "b" * 26, False, None),
    ("hola", "hello", True, None),
])
def test_pair_rules(src, tgt, train, reason):
    assert pair_reason(src, tgt, DataConfig(), train=train) == reason


def test_min_chars_gives_too_short():
    assert pair_reason("ab", "abc", DataConfig(min_chars=3), train=True) == "too_short"


def test_bucket_is_the_sha256_of_the_pair():
    expected = int(hashlib.sha256("hola\thello".encode()).hexdigest()[:16], 16) / 2**64
    assert bucket("hola", "hello") == expected
    assert bucket("hello", "hola") != expected


def test_carving_ignores_line_order(tmp_path):
    pairs = [(f"frase número {i}", f"sentence number {i}") for i in range(400)]
    data = DataConfig(dev_fraction=0.1, test_fraction=0.1)
    splits = []
    for seed, name in ((0, "a"), (1, "b")):
        shuffled = pairs[:]
        random.Random(seed).shuffle(shuffled)
        (tmp_path / name).mkdir()
        cleaned = clean_corpus(corpus_of(shuffled), data, tmp_path / name, "corpus")
        splits.append({"train": set(train_lines(cleaned)),
                       "dev": {(p.src, p.tgt) for p in cleaned.dev},
                       "test": {(p.src, p.tgt) for p in cleaned.test}})
    assert splits[0] == splits[1]
    assert 20 <= len(splits[0]["dev"]) <= 60 and 20 <= len(splits[0]["test"]) <= 60
    assert sum(len(s) for s in splits[0].values()) == 400


def test_a_given_dev_set_leaves_the_test_carving_unchanged(tmp_path):
    pairs = [(f"frase número {i}", f"sentence number {i}") for i in range(400)]
    data = DataConfig(dev_fraction=0.1, test_fraction=0.1)
    both = clean_corpus(corpus_of(pairs), data, tmp_path, "c")
    (tmp_path / "b").mkdir()
    test_only = clean_corpus(corpus_of(pairs, dev=[("x", "y")]), data, tmp_path / "b", "c")
    assert test_only.test == both.test and test_only.carved == ["test"]
    assert len(train_lines(test_only)) == len(train_lines(both)) + len(both.dev)


def test_each_drop_reason_is_counted(tmp_path):
    train = [
        ("uno", "one"), ("uno", "one"), ("uno  ", " one"),  # two duplicates after normalising
        ("", "empty"), ("x" * 1001, "y" * 1001), ("corto pero largo", "b" * 60),
        ("dev pair", "dev pair en"), ("dev pair", "another translation"),
        ("dos", "two"), ("tres", "three"),
    ]
    data = DataConfig(limit_train=1)
    cleaned = clean_corpus(corpus_of(train, dev=[("dev pair", "dev pair en")],
                                     test=[("", "x"), ("cuatro", "four")]),
                           data, tmp_path, "corpus")
    assert dict(cleaned.stats["train"].dropped) == {
        "duplicate": 2, "empty": 1, "too_long_chars": 1, "length_ratio": 1,
        "overlaps_dev_test": 1, "source_in_dev_test": 1, "limit_train": 2}
    assert train_lines(cleaned) == [("uno", "one")]
    assert cleaned.stats["train"].kept == 1 and cleaned.stats["train"].read == len(train)
    assert cleaned.stats["test"].dropped["empty"] == 1
    assert cleaned.carved == []


def test_dev_and_test_are_not_deduplicated(tmp_path):
    dev = [("igual", "same")] * 3
    cleaned = clean_corpus(corpus_of([("a", "b")], dev=dev, test=dev), DataConfig(), tmp_path, "c")
    assert len(cleaned.dev) == 3 and len(cleaned.test) == 3


def test_tiny_corpus_still_gets_a_dev_and_test_pair(tmp_path):
    train = [(f"frase {i}", f"sentence {i}") for i in range(5)]
    cleaned = clean_corpus(corpus_of(train), DataConfig(), tmp_path, "c")
    assert len(cleaned.dev) == 1 and len(cleaned.test) == 1
    assert len(train_lines(cleaned)) == 3
    assert {s: cleaned.stats[s].read for s in ("train", "dev", "test")} == \
        {"train": 3, "dev": 1, "test": 1}
    # the smallest-bucket pairs are chosen, whatever the order
    ranked = sorted(train, key=lambda p: bucket(*p))
    assert (cleaned.dev[0].src, cleaned.test[0].src) == (ranked[0][0], ranked[1][0])


def test_no_test_carved_when_test_fraction_is_zero(tmp_path):
    train = [(f"frase {i}", f"sentence {i}") for i in range(5)]
    cleaned = clean_corpus(corpus_of(train), DataConfig(test_fraction=0.0), tmp_path, "c")
    assert len(cleaned.dev) == 1 and cleaned.test == []


def test_nothing_left_is_a_user_error_listing_reasons(tmp_path):
    train = [("", "x"), ("a", "b"), ("a", "b")]
    with pytest.raises(UserError) as err:
        clean_corpus(corpus_of(train, dev=[("a", "b")], test=[("c", "d")]), DataConfig(),
                     tmp_path, "corpus.tsv")
    message = str(err.value)
    assert message.startswith("corpus.tsv: no training pairs left after filtering (3 dropped:")
    assert "empty 1" in message and "duplicate 1" in message and "overlaps_dev_test 1" in message
    assert "\n" not in message


def test_explicit_dev_set_empty_after_cleaning_is_an_error(tmp_path):
    with pytest.raises(UserError, match="dev set has no pairs left"):
        clean_corpus(corpus_of([("a", "b")], dev=[("", "")], test=[("c", "d")]), DataConfig(),
                     tmp_path, "c")
