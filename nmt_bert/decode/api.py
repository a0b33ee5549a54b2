"""The Python API for programs that embed nmt-bert: load a model once, translate strings.

    from nmt_bert import load_translator

    translator = load_translator("runs/fast-cpu/run", device="cpu", beam_size=1)
    for result in translator.translate(["Y dijo Dios.", "Sea la luz."]):
        print(result.text, result.score)
    for result in translator.stream(line.rstrip("\\n") for line in sys.stdin):
        print(result.text, flush=True)  # chunk by chunk, memory bounded

The model is opened through `open_translator`, like the `translate` command: a run
directory, a checkpoint directory (and exported models once that loader knows them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nmt_bert.config import DecodeConfig
from nmt_bert.decode.default_model import choose_model
from nmt_bert.decode.input_chunks import chunked
from nmt_bert.decode.load import open_translator
from nmt_bert.decode.translator import TranslateStats, Translation


def load_translator(model: Path | str | None = None, *, device: str = "auto",
                    **decode: Any) -> "TextTranslator":
    """Open `model` once for translating strings.

    model: a run or checkpoint directory; None picks one as `nmt-bert translate` does
        ($NMT_BERT_MODEL, else the newest finished run under ./runs/).
    device: "auto", "cpu", "cuda", "cuda:1", ...
    decode: DecodeConfig fields overriding the checkpoint's own (beam_size=1, nbest=3,
        batch_size=64, chunk_lines=100, ...). An unknown name raises TypeError; a value
        out of range raises nmt_bert.errors.UserError, as a bad model directory does.
    """
    known = {f.name for f in dataclasses.fields(DecodeConfig)}
    for key in decode:
        if key not in known:
            raise TypeError(f"load_translator() got an unexpected keyword argument {key!r} "
                            f"(decode settings: {', '.join(sorted(known))})")
    path, _ = choose_model(model)
    overrides = [f"decode.{key}={value}" for key, value in decode.items()]
    return TextTranslator(open_translator(path, device=device, overrides=overrides), path)


class TextTranslator:
    """A loaded model: strings in, `Translation`s out, in input order.

    Each string is one sentence. A `Translation` has `.text` and `.score` (the best
    hypothesis's length-normalised log-probability) and `.candidates` (up to decode.nbest,
    best first, each with text, score, tokens). An empty or whitespace-only string gives
    an empty translation.
    """

    def __init__(self, translator: Any, path: Path):
        self.translator = translator  # what open_translator returned
        self.path = path  # the run or checkpoint directory it was opened from

    @property
    def config(self) -> DecodeConfig:
        return self.translator.config

    @property
    def stats(self) -> TranslateStats:
        """Running totals over every call: sentences, tokens, seconds, truncations."""
        return self.translator.stats

    def translate(self, lines: Iterable[str]) -> list[Translation]:
        """One Translation per string of `lines` (a list, or any iterable), as a list."""
        return list(self.stream(lines))

    def stream(self, lines: Iterable[str], chunk_lines: int | None = None) -> Iterator[Translation]:
        """Translations yielded as `lines` is consumed, `chunk_lines` strings at a time
        (default decode.chunk_lines): memory stays bounded for an iterator of any length.

        A chunk is translated once it is full or `lines` ends; for a slow source (a socket,
        a queue) pass a small `chunk_lines`, e.g. 1, to get each translation at once.
        """
        if isinstance(lines, (str, bytes)):
            raise TypeError("translate() and stream() take a list or iterator of strings; "
                            "for one sentence pass [text]")
        size = chunk_lines or self.config.chunk_lines
        for chunk in chunked(_checked(lines), size):
            yield from self.translator.translate(chunk)


def _checked(lines: Iterable[str]) -> Iterator[str]:
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            raise TypeError(f"line {index}: expected a str, got {type(line).__name__}")
        yield line
