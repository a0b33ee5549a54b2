"""Open a directory written by `nmt-bert prepare` (layout: see nmt_bert/data/prepare.py).

    data = load_prepared("data/bible")
    data.split("train")        # datasets.Dataset: src, tgt, src_ids, tgt_ids (memory-mapped)
    data.spm_path              # target SentencePiece model
    data.target_vocab()        # that, or the encoder's own pieces (data.target_tokenizer)
    data.tokenizer_dir         # source tokenizer (AutoTokenizer.from_pretrained)
    data.source_file("test")   # cleaned source text; data.references("test") its references
    summary_table(data.manifest, "title")   # rich Table: counts, drops per reason, coverage
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nmt_bert.errors import UserError

FORMAT, FORMAT_VERSION = "nmt-bert-prepared", 1
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class PreparedData:
    path: Path
    manifest: dict[str, Any]
    config_dict: dict[str, Any]  # the resolved config `prepare` ran with (config.yaml)

    @property
    def spm_path(self) -> Path:
        return self.path / "spm.model"

    @property
    def target_tokenizer(self) -> str:
        """data.target_tokenizer as prepared: sentencepiece or encoder."""
        return "encoder" if self.manifest["target_vocab"]["type"] == "encoder" else "sentencepiece"

    @property
    def target_vocab_path(self) -> Path:
        """spm.model, or target_vocab.json for the encoder's own pieces."""
        return self.path / self.manifest["target_vocab"]["model"]

    def target_vocab(self, tokenizer=None):
        """The target vocabulary (model/vocab.py `load_target_vocab`)."""
        from nmt_bert.model.vocab import load_target_vocab

        return load_target_vocab(self.target_vocab_path, tokenizer)

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "encoder_tokenizer"

    def split(self, name: str):
        """The split `name` (train, dev or test) as a memory-mapped `datasets.Dataset`."""
        import datasets

        if name not in SPLITS:
            raise UserError(f"unknown split '{name}' (expected one of: {', '.join(SPLITS)})")
        where = self.path / "splits" / name
        try:
            return datasets.load_from_disk(str(where))
        except (OSError, ValueError) as err:
            raise UserError(f"{where}: cannot read the prepared {name} split ({err}); "
                            "run `nmt-bert prepare` again") from None

    def source_file(self, name: str) -> Path:
        """Cleaned source sentences of dev or test, one a line, aligned with its references."""
        _check_heldout(name)
        return self._file(self.manifest["files"][name]["src"])

    def references(self, name: str) -> list[Path]:
        """Reference files of dev or test: `.ref` first, then any `.ref2` (the bundled KJV)."""
        _check_heldout(name)
        return [self._file(ref) for ref in self.manifest["files"][name]["refs"]]

    def count(self, name: str) -> int:
        """Pairs kept in split `name`."""
        return int(self.manifest["splits"][name]["kept"])

    def _file(self, relative: str) -> Path:
        path = self.path / relative
        if not path.is_file():
            raise UserError(f"{path}: missing from the prepared data; run `nmt-bert prepare` again")
        return path



def _check_heldout(name: str) -> None:
    if name not in ("dev", "test"):
        raise UserError(f"split '{name}' has no text files (expected dev or test)")


def is_prepared(path: Path) -> bool:
    """Whether `path` holds a manifest that says `prepare` wrote it (any format version)."""
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def load_prepared(path: Path | str) -> PreparedData:
    """Open a prepared data directory; UserError naming it when it is missing or not one."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: prepared data directory not found; run `nmt-bert prepare`"
                        if not path.exists() else f"{path}: not a directory")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{path}: not a prepared data directory (no manifest.json); "
                        "run `nmt-bert prepare`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{manifest_path}: corrupt manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path}: not an nmt-bert prepared data manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{manifest_path}: format version {manifest.get('format_version')} is "
                        f"not supported (expected {FORMAT_VERSION}); run `nmt-bert prepare` again")
    target = str((manifest.get("target_vocab") or {}).get("model", "spm.model"))
    missing = [name for name in ("config.yaml", target, "encoder_tokenizer",
                                 *(f"splits/{s}" for s in SPLITS)) if not (path / name).exists()]
    if missing:
        raise UserError(f"{path}: incomplete prepared data directory (missing "
                        f"{', '.join(missing)}); run `nmt-bert prepare` again")
    try:
        config_dict = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path / 'config.yaml'}: corrupt config ({err})".splitlines()[0]) from None
    return PreparedData(path, manifest, config_dict or {})


def summary_table(manifest: dict[str, Any], title: str):
    """A rich Table of a manifest: pairs read, kept and dropped per reason, and coverage,
    one column per split."""
    from rich.table import Table

    from nmt_bert.data.cleaning import REASONS

    splits, cover = manifest["splits"], manifest["coverage"]
    reasons = [r for r in REASONS if any(r in s["dropped"] for s in splits.values())]
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name, s in splits.items():
        table.add_column(name + (" (carved)" if s["carved"] else ""), justify="right")
    rows = [("read", lambda s, c: f"{s['read']:,}"), ("kept", lambda s, c: f"{s['kept']:,}")]
    rows += [(f"dropped: {r}", lambda s, c, r=r: f"{s['dropped'].get(r, 0):,}") for r in reasons]
    rows += [("encoder unk rate", lambda s, c: f"{c['unk_rate']:.3%}"),
             ("encoder tokens/word", lambda s, c: f"{c['src_tokens_per_word']:.2f}"),
             ("target pieces/word", lambda s, c: f"{c['tgt_tokens_per_word']:.2f}")]
    section_ends = {"kept", f"dropped: {reasons[-1]}" if reasons else "kept"}
    for label, cell in rows:
        table.add_row(label, *[cell(s, cover[name]) for name, s in splits.items()],
                      end_section=label in section_ends)
    return table


def reconcile_encoder(config, data_dir: Path):
    """The encoder must be the one whose tokenizer produced the prepared source ids.

    A config that leaves model.encoder at its default takes the prepared data's encoder;
    one that names another encoder explicitly is an error.
    """
    from dataclasses import replace

    from nmt_bert.config import ModelConfig

    prepared_encoder = load_prepared(data_dir).config_dict.get("model", {}).get("encoder")
    if prepared_encoder is None or prepared_encoder == config.model.encoder:
        return config
    if config.model.encoder != ModelConfig().encoder:
        raise UserError(f"{data_dir} was tokenized for encoder '{prepared_encoder}' but "
                        f"model.encoder is '{config.model.encoder}'; prepare the data again "
                        "with the same model.encoder")
    return replace(config, model=replace(config.model, encoder=prepared_encoder))
