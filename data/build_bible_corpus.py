"""Build the Spanish-English parallel Bible corpus from Debian SWORD packages.

    python data/build_bible_corpus.py --download --out data/bible-es-en

Spanish is the Reina-Valera 1909 (``sword-text-sparv``), English the World
English Bible (``sword-text-web``); the King James text (``sword-text-kjv``)
is carried along as a third column.  Versifications come from SWORD's
``canon*.h`` headers in ``libsword-dev``.  Verses are paired by OSIS reference
and filtered (see ``drop_reason``); each pair goes to train/dev/test by a hash
of its reference.  Output: ``{train,dev,test}.tsv.gz`` (columns ``ref es en
kjv``, canonical order, gzip mtime 0, so reruns are byte-identical) and
``stats.json``.  Only the standard library is used.
"""

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sword_extract  # noqa: E402  (sibling module, not an installed package)

PACKAGES = {"es": "sword-text-sparv", "en": "sword-text-web", "kjv": "sword-text-kjv"}
CANON_PACKAGE = "libsword-dev"
MAX_CHARS = 1000          # drop pairs where either side is longer (glossaries)
MAX_LENGTH_RATIO = 2.0    # drop pairs whose character lengths differ more
ALIGN_WINDOW = 5          # verses on each side compared by ``shifted_refs``
ALIGN_MARGIN = 0.15       # how much better a neighbour must match
SPLIT_BUCKETS = {"dev": range(0, 15), "test": range(15, 30)}  # out of 1000
SPLITS = ("train", "dev", "test")


def fetch_debs(directory):
    """Run ``apt-get download`` for all needed packages into ``directory``."""
    packages = [*PACKAGES.values(), CANON_PACKAGE]
    subprocess.run(["apt-get", "download", *packages], cwd=directory, check=True)


def find_deb(directory, package):
    """Return the single ``<package>_*.deb`` in ``directory``."""
    found = sorted(Path(directory).glob(f"{package}_*.deb"))
    if len(found) != 1:
        raise SystemExit(f"expected one {package}_*.deb in {directory}, found {found}")
    return found[0]


def package_info(deb_files):
    """Return ``{"package": ..., "package_version": ...}`` from a ``.deb``."""
    control = dict(re.findall(r"^(Package|Version): (.+)$",
                              deb_files["./control"].decode("utf-8"), re.M))
    return {"package": control["Package"], "package_version": control["Version"]}


def load_sources(deb_dir):
    """Load the three modules; return ``({"es"|"en"|"kjv": module}, sources)``.

    ``sources`` describes each package and module for ``stats.json``.
    """
    canon_deb = sword_extract.read_deb(find_deb(deb_dir, CANON_PACKAGE))
    headers = {path.rsplit("/", 1)[1]: body.decode("utf-8")
               for path, body in canon_deb.items() if "/canon" in path}
    modules, sources = {}, {"canon": package_info(canon_deb)}
    for key, package in PACKAGES.items():
        deb = sword_extract.read_deb(find_deb(deb_dir, package))
        module = modules[key] = sword_extract.load_module(deb, headers)
        sources[key] = {**package_info(deb), "module": module.name,
                        "module_version": module.conf.get("Version", ""),
                        "description": module.conf.get("Description", ""),
                        "versification": module.conf.get("Versification", "KJV"),
                        "license": module.conf.get("DistributionLicense", "")}
    return modules, sources


def jaccard(a, b):
    """Jaccard similarity of two sets (0.0 when both are empty)."""
    return len(a & b) / len(a | b) if a | b else 0.0


def shifted_refs(refs, source, reference):
    """Return the refs whose ``source`` set better matches another verse.

    ``source`` and ``reference`` map refs to token sets of two texts in the
    same versification.  A ref is flagged when the ``reference`` set of some
    verse up to ``ALIGN_WINDOW`` positions away (in ``refs`` order, across
    chapters) overlaps ``source[ref]`` by more than ``ALIGN_MARGIN`` above
    ``reference[ref]`` does: the texts number that verse differently.  Refs
    with an empty set on either side (no tags or no text) are not judged.
    """
    flagged = set()
    for i, ref in enumerate(refs):
        if not source[ref] or not reference[ref]:
            continue
        same = jaccard(source[ref], reference[ref])
        window = refs[max(0, i - ALIGN_WINDOW):i] + refs[i + 1:i + 1 + ALIGN_WINDOW]
        if any(jaccard(source[ref], reference[other]) > same + ALIGN_MARGIN
               for other in window):
            flagged.add(ref)
    return flagged


def drop_reason(es, en, misaligned_es, misaligned_en):
    """Return why a verse pair is dropped, or None to keep it.

    ``en`` is None when the English versification lacks the reference.
    Checks run in this order, and a pair counts under the first that fails:
    ``missing_en``; ``empty_es``/``empty_en`` (no text); ``misaligned_es``
    (the Spanish verse's Strong's numbers match a nearby KJV verse better:
    the Spanish module numbers verses differently there); ``misaligned_en``
    (the same test for WEB vs KJV words); ``too_long`` (either side over
    MAX_CHARS characters); ``length_ratio`` (one side over MAX_LENGTH_RATIO
    times longer than the other).
    """
    if en is None:
        return "missing_en"
    if not es:
        return "empty_es"
    if not en:
        return "empty_en"
    if misaligned_es:
        return "misaligned_es"
    if misaligned_en:
        return "misaligned_en"
    if max(len(es), len(en)) > MAX_CHARS:
        return "too_long"
    if max(len(es), len(en)) > MAX_LENGTH_RATIO * min(len(es), len(en)):
        return "length_ratio"
    return None


def split_of(ref):
    """Return the split of a reference, fixed by its SHA-256."""
    bucket = int.from_bytes(hashlib.sha256(ref.encode("utf-8")).digest()[:8], "big") % 1000
    return next((name for name, buckets in SPLIT_BUCKETS.items() if bucket in buckets), "train")


def align(modules):
    """Pair the modules' verses; return ``(rows by split, dropped, refs)``.

    Rows are ``(ref, es, en, kjv)`` in the Spanish module's canonical order;
    ``dropped`` counts pairs per ``drop_reason``.  Refs present only in the
    English versification cannot be paired and are only listed in ``refs``.
    """
    es, en, kjv = modules["es"], modules["en"], modules["kjv"]
    refs = list(es.verses)
    words = {name: {ref: frozenset(re.findall(r"\w+", module.verses.get(ref, "").lower()))
                    for ref in refs} for name, module in (("en", en), ("kjv", kjv))}
    misaligned_es = shifted_refs(refs, es.strongs, kjv.strongs)
    misaligned_en = shifted_refs(refs, words["en"], words["kjv"])
    rows, dropped = {name: [] for name in SPLITS}, Counter()
    for ref in refs:
        pair = es.verses[ref], en.verses.get(ref)
        reason = drop_reason(*pair, ref in misaligned_es, ref in misaligned_en)
        if reason:
            dropped[reason] += 1
        else:
            rows[split_of(ref)].append((ref, *pair, kjv.verses.get(ref, "")))
    books = {ref.split(".")[0] for ref in refs}
    en_only = [ref for ref in en.verses if ref not in es.verses and ref.split(".")[0] in books]
    ref_counts = {"es": len(es.verses), "en": len(en.verses), "kjv": len(kjv.verses),
                  "matched": sum(ref in en.verses for ref in refs),
                  "en_only_in_shared_books": en_only}
    return rows, dict(sorted(dropped.items())), ref_counts


def write_tsv_gz(path, rows):
    """Write a header line and ``rows`` as deterministic gzip'd UTF-8 TSV."""
    lines = ["ref\tes\ten\tkjv"] + ["\t".join(row) for row in rows]
    if any(char in field for row in rows for field in row for char in "\t\n\r"):
        raise ValueError("tab or newline inside a field")
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))


def build(deb_dir, out_dir):
    """Build the corpus from the ``.deb`` files in ``deb_dir`` into ``out_dir``."""
    modules, sources = load_sources(deb_dir)
    rows, dropped, ref_counts = align(modules)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_tsv_gz(out_dir / f"{name}.tsv.gz", rows[name])
    pairs = {name: len(rows[name]) for name in SPLITS}
    stats = {
        "pairs": {**pairs, "total": sum(pairs.values())},
        "dropped": dropped,
        "refs": ref_counts,
        "sources": sources,
        "filters": {"max_chars": MAX_CHARS, "max_length_ratio": MAX_LENGTH_RATIO,
                    "align_window": ALIGN_WINDOW, "align_margin": ALIGN_MARGIN},
        "split": "bucket = int(sha256(ref)[:8 bytes], big-endian) % 1000; "
                 "0-14 dev, 15-29 test, else train",
    }
    (out_dir / "stats.json").write_text(
        json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--download", action="store_true",
                        help="fetch the .deb files with apt-get download into a temp dir")
    source.add_argument("--deb-dir", type=Path,
                        help="directory holding the already downloaded .deb files")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args()
    if args.download:
        with tempfile.TemporaryDirectory() as tmp:
            fetch_debs(tmp)
            stats = build(tmp, args.out)
    else:
        stats = build(args.deb_dir, args.out)
    print(json.dumps({key: stats[key] for key in ("pairs", "dropped", "refs")}, indent=2))


if __name__ == "__main__":
    main()
