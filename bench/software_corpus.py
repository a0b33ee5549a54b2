"""A Spanish->English software-message corpus from compiled gettext catalogs (.mo files).

Each catalog maps an English msgid to its Spanish msgstr; a pair is (msgstr, msgid). Plural
entries give their singular pair (msgid, msgstr[0]) only; context entries ("ctx\\x04msgid") lose the context.
Headers, fuzzy-empty and identity entries are skipped, tabs and newlines become spaces, and
the ISO code-list catalogs (iso_*: country and language names, not messages) are left out.
A message (English msgid) seen in several catalogs keeps the first translation in sorted
file order. Splits are fixed by hashing the English message, so a message never sits on two
sides: test 5 %, dev 2 %, the rest train.

Rebuild: the catalogs under /usr/share/locale/es/LC_MESSAGES of a Debian 12 system (85
files there), plus any directories given with --mo-dir, e.g. es catalogs unpacked from
Debian packages:

    apt-get download gimp-data  # any packages shipping /usr/share/locale/es/LC_MESSAGES/*.mo
    dpkg-deb -x gimp-data_*.deb /tmp/debs
    python bench/software_corpus.py --out /tmp/sw-corpus \
        --mo-dir /tmp/debs/usr/share/locale/es/LC_MESSAGES
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import json
from pathlib import Path

SYSTEM_CATALOGS = Path("/usr/share/locale/es/LC_MESSAGES")
SPLITS = {"test": 0.05, "dev": 0.02}  # the rest is train


def catalog_pairs(path: Path) -> list[tuple[str, str]]:
    """(Spanish, English) pairs of one .mo file, in msgid order."""
    with open(path, "rb") as handle:
        catalog = gettext.GNUTranslations(handle)._catalog
    pairs = []
    for key, value in catalog.items():
        if isinstance(key, tuple):
            if key[1] != 0:  # plural entries are keyed (msgid, n); the plural msgid is
                continue  # not kept in _catalog, so only the singular form pairs up
            english = key[0]
        else:
            english = key
        english = english.split("\x04", 1)[-1]  # drop a msgctxt
        pairs.append((_flat(value), _flat(english)))
    return [(es, en) for es, en in pairs if es and en and es != en]


def _flat(text: str) -> str:
    return " ".join(text.split())


def split_of(english: str) -> str:
    """test, dev or train, fixed by the English message alone."""
    digest = hashlib.sha256(english.encode("utf-8")).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    if share < SPLITS["test"]:
        return "test"
    if share < SPLITS["test"] + SPLITS["dev"]:
        return "dev"
    return "train"


def build(out: Path, mo_dirs: list[Path], limit: int = 0) -> dict:
    """Write OUT/{train,dev,test}.tsv (Spanish<TAB>English) and OUT/stats.json; return stats.

    `limit` > 0 keeps only the first `limit` messages (sorted order): the --smoke corpus.
    """
    files = sorted({p for d in mo_dirs for p in Path(d).glob("*.mo")
                    if not p.name.startswith("iso_")}, key=lambda p: (p.name, str(p)))
    seen: dict[str, str] = {}
    for path in files:
        for es, en in catalog_pairs(path):
            seen.setdefault(en, es)
    messages = sorted(seen.items())
    if limit:
        messages = messages[:limit]
    rows: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for en, es in messages:
        rows[split_of(en)].append(f"{es}\t{en}")
    out.mkdir(parents=True, exist_ok=True)
    for name, lines in rows.items():
        (out / f"{name}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    stats = {"catalogs": [str(p) for p in files], "messages": len(messages),
             "pairs": {name: len(lines) for name, lines in rows.items()}}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mo-dir", type=Path, action="append", default=[],
                   help=f"more directories of .mo files (always read: {SYSTEM_CATALOGS})")
    p.add_argument("--limit", type=int, default=0, help="keep the first N messages (0 = all)")
    args = p.parse_args()
    stats = build(args.out, [SYSTEM_CATALOGS, *args.mo_dir], args.limit)
    print(f"{stats['messages']} messages from {len(stats['catalogs'])} catalogs: "
          + ", ".join(f"{k} {v}" for k, v in stats["pairs"].items()))


if __name__ == "__main__":
    main()
