"""Self-describing checkpoints: a directory that is all `translate` needs.

    model.safetensors      weights (encoder pruned/truncated as trained, adapter, decoder)
    config.yaml            the full resolved config of the run
    encoder_config.json    the encoder architecture, to rebuild it without the original files
    encoder_tokenizer/     the source tokenizer
    source_vocab.json      which encoder-tokenizer ids the pruned embedding rows stand for
    spm.model              the target SentencePiece model, or
    target_vocab.json      the encoder-tokenizer ids of the target rows (BERT2BERT)
    meta.json              step, stage, dev scores, format version
    trainer_state.pt       optimizer, schedule, RNG and data position (resumable checkpoints)

Directories are written under a temporary name and renamed, so a killed run never leaves a
checkpoint that looks complete but is not. Nothing in a checkpoint can run code: weights are
read with safetensors only, the trainer state with `torch.load(weights_only=True)`, the
tokenizer with remote code refused (`encoders.load_local_tokenizer`) and the rest as JSON/YAML.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING


from nmt_bert.config import Config, config_from_dict, read_yaml, save_config
from nmt_bert.errors import UserError, first_line
from nmt_bert.atomic import atomic_dir
from nmt_bert.model.vocab import (TARGET_VOCAB_FILES, EncoderTargetVocab, SourceVocab,
                                  TargetVocab, load_target_vocab, target_vocab_file)

if TYPE_CHECKING:  # torch is imported where weights are read or written: the layout names
    import torch   # above are read by code that never loads a model (run directories, exports)

    from nmt_bert.model.seq2seq import Seq2Seq

FORMAT_VERSION = 1
WEIGHTS, TRAINER_STATE, META = "model.safetensors", "trainer_state.pt", "meta.json"
REQUIRED = (WEIGHTS, "config.yaml", "encoder_config.json", "encoder_tokenizer",
            "source_vocab.json", META)


@dataclass
class Assets:
    """Everything besides the weights that a checkpoint carries."""

    tokenizer_dir: Path
    target_vocab_path: Path  # spm.model or target_vocab.json, copied under its own name
    source_vocab: SourceVocab


@dataclass
class Checkpoint:
    model: Seq2Seq
    config: Config
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    source_vocab: SourceVocab
    target_vocab: TargetVocab | EncoderTargetVocab
    meta: dict
    path: Path


def save_checkpoint(path: Path, model: Seq2Seq, config: Config, assets: Assets, meta: dict,
                    trainer_state: dict | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_dir(path, ours=is_checkpoint, what="an nmt-bert checkpoint") as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        save_config(config, tmp / "config.yaml")
        (tmp / "encoder_config.json").write_text(model.encoder.config.to_json_string())
        shutil.copytree(assets.tokenizer_dir, tmp / "encoder_tokenizer")
        shutil.copy(assets.target_vocab_path, tmp / Path(assets.target_vocab_path).name)
        assets.source_vocab.save(tmp / "source_vocab.json")
        (tmp / META).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)


def is_checkpoint(path: Path) -> bool:
    return (Path(path) / WEIGHTS).is_file() and (Path(path) / META).is_file()


def resolve_checkpoint_dir(path: Path) -> Path:
    """Accept a checkpoint directory or a run directory (then its best, else last, checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model directory not found")
    if not path.is_dir():
        raise UserError(f"{path}: expected a run or checkpoint directory, got a file")
    from nmt_bert.train.run_dir import RunDir

    if (path / WEIGHTS).exists():
        return path
    found = RunDir(path).best_or_last()
    if found is None:
        raise UserError(f"{path}: no checkpoint here (expected {WEIGHTS} or a run directory "
                        "with checkpoints/best)")
    return found


def load_checkpoint(path: Path, device: "str | torch.device" = "cpu") -> Checkpoint:
    """Rebuild the model from the checkpoint's own files; errors name the broken file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from nmt_bert.model.encoder_surgery import drop_pooler
    from nmt_bert.model.encoders import load_local_tokenizer
    from nmt_bert.model.seq2seq import Seq2Seq

    path = resolve_checkpoint_dir(path)
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if not any((path / name).exists() for name in TARGET_VOCAB_FILES):
        missing.append(" or ".join(TARGET_VOCAB_FILES))
    if missing:
        raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    config = config_from_dict(read_yaml(path / "config.yaml"), str(path / "config.yaml"))
    enc_config = read_json(path / "encoder_config.json", "encoder configuration")
    try:
        # Only architectures transformers itself defines: an auto_map naming code is ignored.
        enc_config.pop("auto_map", None)
        encoder = AutoModel.from_config(AutoConfig.for_model(**enc_config),
                                        trust_remote_code=False)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path / 'encoder_config.json'}: cannot rebuild the encoder "
                        f"({first_line(err)})") from None
    drop_pooler(encoder)
    tokenizer = load_local_tokenizer(path / "encoder_tokenizer")
    target_vocab = load_target_vocab(target_vocab_file(path), tokenizer)
    model = Seq2Seq(encoder, config.model, len(target_vocab))
    weights = path / WEIGHTS
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{weights}: unreadable weights (truncated or corrupt?): {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[:2]
        raise UserError(f"{weights}: weights do not match the checkpoint's config: "
                        f"{' '.join(line.strip() for line in first)}") from None
    meta = read_json(path / META, "checkpoint description")
    model.to(device).eval()
    return Checkpoint(model, config, tokenizer, SourceVocab.load(path / "source_vocab.json"),
                      target_vocab, meta, path)


def load_trainer_state(path: Path) -> dict:
    import torch

    file = Path(path) / TRAINER_STATE
    if not file.exists():
        raise UserError(f"{path}: checkpoint has no trainer_state.pt, cannot resume from it")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{file}: unreadable trainer state ({type(err).__name__}: "
                        f"{first_line(err)})") from None


def read_json(path: Path, what: str) -> dict:
    """A JSON object from one of our files; UserError naming the file when it is not one."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable {what} ({first_line(err)})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: unreadable {what} (expected a JSON object)")
    return value
