"""Read SWORD zText Bible modules straight from Debian ``.deb`` files.

Pure standard library.  The pieces, in the order they are used:

* ``read_deb``      -- unpack a ``.deb`` (an ``ar`` archive holding
                       ``control.tar.*`` and ``data.tar.*``) into memory.
* ``parse_conf``    -- read a module's ``mods.d/*.conf`` file.
* ``parse_canon``   -- read a versification (book list + verses per chapter)
                       from SWORD's C headers ``canon*.h`` (``libsword-dev``).
* ``read_ztext``    -- decompress every verse slot of a zText/zText4 module
                       and key it by OSIS reference (``"Gen.1.1"``).
* ``strip_markup``  -- turn verse markup into plain text.  OSIS (used by all
                       bundled modules) is handled in full; ThML and GBF only
                       have their notes/headings dropped and tags stripped,
                       which the bundled data does not exercise.

``.deb`` payloads are opened with ``tarfile``, so xz/gz/bz2 work; zstd (newer
Ubuntu) does not.

Layout of a zText module (see SWORD's ``zverse.cpp`` / ``zverse4.cpp``), per
testament ``ot``/``nt``:

* ``.bzs``: 12 bytes per block: uint32 LE offset into ``.bzz``, compressed
  size, uncompressed size.
* ``.bzv``: one entry per verse slot: uint32 block number, uint32 offset in the
  uncompressed block, then the size (uint16 for zText, uint32 for zText4).
* Slot order: 0 = unused, 1 = testament heading, then per book a book heading
  slot and, per chapter, a chapter heading slot followed by its verses.
"""

import bz2
import html
import io
import lzma
import re
import struct
import tarfile
import zlib
from dataclasses import dataclass

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60
# ModDrv -> struct format of one .bzv entry (block, offset, size).
VERSE_ENTRY_FORMATS = {"zText": "<IIH", "zText4": "<III"}
BLOCK_ENTRY_FORMAT = "<III"  # .bzs entry: offset, compressed, uncompressed size
BLOCK_ENTRY_SIZE = struct.calcsize(BLOCK_ENTRY_FORMAT)
DECOMPRESSORS = {"ZIP": zlib.decompress, "BZIP2": bz2.decompress,
                 "LZMA": lzma.decompress, "XZ": lzma.decompress}

# Elements whose whole content is dropped (footnotes, non-canonical headings,
# speaker labels, variant readings), per SourceType.  Everything else keeps its
# text, including canonical titles (Psalm superscriptions, which the Spanish
# module carries as plain verse text).
DROPPED_ELEMENTS = {
    "OSIS": r"<(note|speaker|rdg|catchWord)\b[^>]*(?<!/)>.*?</\1>"
            r'|<title\b(?![^>]*canonical="true")[^>]*(?<!/)>.*?</title>',
    "THML": r"<(note|scripRef)\b[^>]*(?<!/)>.*?</\1>",
    "GBF": r"<RF>.*?<Rf>|<TS>.*?<Ts>",
}
TAG_RUN = re.compile(r"(?:<[^>]*>)+")
DROPPED = "<dropped/>"
NO_SPACE_BEFORE = set(".,;:!?)]”’»")
USFM_MARKER = re.compile(r"\\\+?[a-z]+\d*\*?")


def read_deb(path):
    """Return ``{member path: bytes}`` of the regular files in a ``.deb``.

    Both the ``control.tar.*`` and ``data.tar.*`` payloads are unpacked; their
    member names keep tarfile's form (``./control``, ``./usr/share/...``).
    """
    with open(path, "rb") as handle:
        blob = handle.read()
    if not blob.startswith(AR_MAGIC):
        raise ValueError(f"{path}: not an ar archive")
    files, pos = {}, len(AR_MAGIC)
    while pos < len(blob):
        header = blob[pos:pos + AR_HEADER_SIZE]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii"))
        body = blob[pos + AR_HEADER_SIZE:pos + AR_HEADER_SIZE + size]
        pos += AR_HEADER_SIZE + size + size % 2  # members are 2-byte aligned
        if name.startswith(("control.tar", "data.tar")):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar.getmembers():
                    if member.isfile():
                        files[member.name] = tar.extractfile(member).read()
    return files


def parse_conf(raw):
    """Parse a SWORD ``.conf`` (bytes) into ``(module name, {key: value})``.

    Repeated keys keep their first value.  The file is decoded as UTF-8, or
    Latin-1 (SWORD's default encoding) when that fails.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    name, conf = None, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]") and name is None:
            name = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            conf.setdefault(key.strip(), value.strip())
    return name, conf


def _c_array(header, c_type, name):
    """Return the body of ``c_type name[] = { ... };`` in ``header``, or None."""
    match = re.search(rf"{c_type}\s+{name}\[\]\s*=\s*\{{(.*?)\n\}};", header, re.S)
    return match and match.group(1)


def _books(header, name):
    """Parse a ``struct sbook`` array into ``[(osis name, chapter count)]``."""
    entries = re.findall(r'\{\s*"[^"]*",\s*"([^"]*)",\s*"[^"]*",\s*(\d+)\s*\}',
                         _c_array(header, "struct sbook", name))
    return [(osis, int(chapters)) for osis, chapters in entries if osis]


def parse_canon(headers, versification):
    """Return ``{"ot"|"nt": [(book, [verses per chapter])]}`` for a system.

    ``headers`` maps header file names (``canon.h``, ``canon_nrsva.h``...) to
    their text.  KJV lives in ``canon.h`` with arrays ``otbooks``/``ntbooks``/
    ``vm``; another system ``X`` in ``canon_x.h`` with ``otbooks_x``,
    ``ntbooks_x`` and ``vm_x``, where a missing ``ntbooks_x`` means the KJV
    ``ntbooks`` (as the headers themselves note).  ``vm`` lists the verse
    counts of every chapter, OT books first.
    """
    suffix = "" if versification == "KJV" else "_" + versification.lower()
    header = headers[f"canon{suffix}.h"]
    ot_books = _books(header, "otbooks" + suffix)
    if _c_array(header, "struct sbook", "ntbooks" + suffix):
        nt_books = _books(header, "ntbooks" + suffix)
    else:
        nt_books = _books(headers["canon.h"], "ntbooks")
    vm_body = re.sub(r"//[^\n]*", "", _c_array(header, "int", "vm" + suffix))
    counts = [int(n) for n in re.findall(r"\d+", vm_body)]
    if len(counts) != sum(chapters for _, chapters in ot_books + nt_books):
        raise ValueError(f"{versification}: vm[] does not match the book lists")
    canon, pos = {"ot": [], "nt": []}, 0
    for testament, books in (("ot", ot_books), ("nt", nt_books)):
        for book, chapters in books:
            canon[testament].append((book, counts[pos:pos + chapters]))
            pos += chapters
    return canon


def verse_slots(books):
    """Yield ``(slot index, "Book.C.V")`` for the verses of one testament."""
    slot = 2  # 0 = unused, 1 = testament heading
    for book, verse_counts in books:
        slot += 1  # book heading
        for chapter, verses in enumerate(verse_counts, 1):
            slot += 1  # chapter heading
            for verse in range(1, verses + 1):
                yield slot, f"{book}.{chapter}.{verse}"
                slot += 1


def read_ztext(files, conf, canon):
    """Return ``{ref: raw markup}`` for every verse of a zText/zText4 module.

    ``files`` maps ``ot.bzs``, ``ot.bzv``... to bytes; ``conf`` is the parsed
    ``.conf``; ``canon`` comes from ``parse_canon`` for the module's
    versification.  Raises ValueError if the verse index does not have exactly
    the number of slots the versification predicts.
    """
    entry_format = VERSE_ENTRY_FORMATS[conf.get("ModDrv", "zText")]
    entry_size = struct.calcsize(entry_format)
    decompress = DECOMPRESSORS[conf.get("CompressType", "ZIP").upper()]
    encoding = "utf-8" if conf.get("Encoding", "").upper() == "UTF-8" else "latin-1"
    verses = {}
    for testament in ("ot", "nt"):
        bzs, bzv, bzz = (files[f"{testament}.{ext}"] for ext in ("bzs", "bzv", "bzz"))
        slots = list(verse_slots(canon[testament]))
        expected = slots[-1][0] + 1
        if len(bzv) != expected * entry_size:
            raise ValueError(f"{testament}.bzv has {len(bzv) // entry_size} "
                             f"slots, versification predicts {expected}")
        blocks = {}
        for slot, ref in slots:
            block, offset, size = struct.unpack_from(entry_format, bzv, slot * entry_size)
            if size == 0:
                verses[ref] = ""
                continue
            if block not in blocks:
                start, length, _ = struct.unpack_from(BLOCK_ENTRY_FORMAT, bzs,
                                                      block * BLOCK_ENTRY_SIZE)
                blocks[block] = decompress(bzz[start:start + length])
            verses[ref] = blocks[block][offset:offset + size].decode(encoding)
    return verses


def _join_tags(match):
    """Replace a run of tags by "" or " " (see ``strip_markup``)."""
    run, text, end = match.group(0), match.string, match.end()
    separates = (DROPPED in run or "/>" in run
                 or re.search(r"</[^>]*>.*<[^/]", run) is not None)
    next_char = text[end] if end < len(text) else ""
    return " " if separates and next_char not in NO_SPACE_BEFORE else ""


def strip_markup(raw, source_type="OSIS"):
    """Return the plain text of one verse's markup.

    Footnotes, headings and similar elements are removed with their content.
    A run of tags between two pieces of text becomes a space when it separates
    them (it contains a removed element, an empty element such as a poetry
    line break, or the end of one element and the start of another) unless
    punctuation follows; otherwise it is removed, so that a tag inside a word
    (``give</w>n``) does not split the word.  Entities are unescaped;
    pilcrows (the KJV's paragraph marks) and USFM markers leaked from the
    module's conversion (``\\nd LORD``) are removed; whitespace is collapsed.
    """
    dropped = DROPPED_ELEMENTS[source_type.upper()]
    text = re.sub(dropped, DROPPED, raw, flags=re.S)
    text = TAG_RUN.sub(_join_tags, text)
    text = html.unescape(text).replace("\N{PILCROW SIGN}", " ")
    text = USFM_MARKER.sub(" ", text)
    return " ".join(text.split())


def strongs_numbers(raw, source_type="OSIS"):
    """Return the Strong's numbers (``"H430"``, ``"G26"``) of a verse.

    Reads OSIS ``lemma="strong:H0430"`` attributes outside footnotes and other
    dropped elements; other markups yield an empty set.
    """
    text = re.sub(DROPPED_ELEMENTS[source_type.upper()], "", raw, flags=re.S)
    return frozenset(f"{lang}{int(num)}" for lang, num
                     in re.findall(r"strong:([GH])(\d+)", text))


@dataclass
class SwordModule:
    """One Bible module, verses in canonical order.

    ``verses`` maps ``"Book.C.V"`` to plain text ("" for an empty slot);
    ``strongs`` maps the same references to the verse's Strong's numbers.
    """

    name: str
    conf: dict
    verses: dict
    strongs: dict


def load_module(deb_files, canon_headers):
    """Load the single zText module contained in an unpacked ``.deb``.

    ``deb_files`` is ``read_deb``'s result; ``canon_headers`` maps
    ``canon*.h`` file names to their text.
    """
    confs = [path for path in deb_files if "/mods.d/" in path and path.endswith(".conf")]
    if len(confs) != 1:
        raise ValueError(f"expected one mods.d/*.conf, found {confs}")
    name, conf = parse_conf(deb_files[confs[0]])
    data_dir = conf["DataPath"].lstrip("./").rstrip("/")
    files = {path.rsplit("/", 1)[1]: body for path, body in deb_files.items()
             if path.rsplit("/", 1)[0].endswith(data_dir)}
    canon = parse_canon(canon_headers, conf.get("Versification", "KJV"))
    raw = read_ztext(files, conf, canon)
    source_type = conf.get("SourceType", "Plaintext")
    if source_type.upper() not in DROPPED_ELEMENTS:
        raise ValueError(f"{name}: unsupported SourceType {source_type}")
    verses = {ref: strip_markup(text, source_type) for ref, text in raw.items()}
    strongs = {ref: strongs_numbers(text, source_type) for ref, text in raw.items()}
    return SwordModule(name, conf, verses, strongs)
