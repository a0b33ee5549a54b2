"""The export directory: its layout, spelled here and nowhere else.

    EXPORT/ct2/                 the CTranslate2 model (model.bin, config.json,
                                source_vocabulary.json, target_vocabulary.json)
    EXPORT/encoder_tokenizer/   the source tokenizer, as in the checkpoint
    EXPORT/spm.model            the target SentencePiece model
    EXPORT/source_vocab.json    the training (pruned) encoder vocabulary: the ids training saw
    EXPORT/config.yaml          the checkpoint's config; its decode section holds the decode
                                defaults `translate` starts from
    EXPORT/export.json          written last: format, quantization, which word table the
                                model reads (the whole pretrained one or the pruned one),
                                the encoder's token limit and where it came from (checkpoint
                                path, its meta.json, sha256 of its weights, versions)

An export translates with nothing but its own directory, like a checkpoint: nothing in it
runs code (the tokenizer is read with `encoders.load_local_tokenizer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nmt_bert.errors import UserError, first_line

KIND = "nmt-bert-export"
FORMAT_VERSION = 1


class ExportDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ExportDir({str(self.path)!r})"

    @property
    def ct2(self) -> Path:
        return self.path / "ct2"

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "encoder_tokenizer"

    @property
    def target_vocab(self) -> Path:
        """The target vocabulary, as the checkpoint had it: spm.model or target_vocab.json."""
        from nmt_bert.model.vocab import target_vocab_file

        return target_vocab_file(self.path)

    @property
    def source_vocab(self) -> Path:
        return self.path / "source_vocab.json"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest_file(self) -> Path:
        return self.path / "export.json"

    @property
    def ct2_source_vocabulary(self) -> Path:
        """The CTranslate2 model's source token strings, one per row of its word table."""
        return self.ct2 / "source_vocabulary.json"

    def required(self) -> list[Path]:
        return [self.ct2 / "model.bin", self.ct2_source_vocabulary, self.tokenizer_dir,
                self.target_vocab, self.source_vocab, self.config, self.manifest_file]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Written last: its presence marks a complete export."""
        body = {"kind": KIND, "format": FORMAT_VERSION, **manifest}
        self.manifest_file.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")

    def manifest(self) -> dict[str, Any]:
        """export.json, checked: UserError naming the file (or what is missing) otherwise."""
        missing = [p.name for p in self.required() if not p.exists()]
        if missing:
            raise UserError(f"{self.path}: incomplete export, missing {', '.join(missing)}")
        try:
            body = json.loads(self.manifest_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{self.manifest_file}: unreadable export manifest "
                            f"({first_line(err)})") from None
        if not isinstance(body, dict) or body.get("kind") != KIND:
            raise UserError(f"{self.manifest_file}: not an nmt-bert export manifest")
        if body.get("format") != FORMAT_VERSION:
            raise UserError(f"{self.manifest_file}: export format {body.get('format')!r}, this "
                            f"nmt-bert reads format {FORMAT_VERSION}; export the checkpoint again")
        return body

    def source_tokens(self) -> list[str]:
        """The CTranslate2 source vocabulary (row i's token string)."""
        try:
            tokens = json.loads(self.ct2_source_vocabulary.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{self.ct2_source_vocabulary}: unreadable vocabulary "
                            f"({first_line(err)})") from None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise UserError(f"{self.ct2_source_vocabulary}: expected a JSON list of tokens")
        return tokens


def is_export(path: Path | str) -> bool:
    """Whether `path` is (or was being written as) one of our exports: its manifest says so."""
    manifest = ExportDir(path).manifest_file
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False
