"""Self-describing checkpoints: a directory that is all `translate` needs.

    model.safetensors      weights (encoder pruned/truncated as trained, adapter, decoder)
    config.yaml            the full resolved config of the run
    encoder_config.json    the encoder architecture, to rebuild it without the original files
    encoder_tokenizer/     the source tokenizer
    source_vocab.json      which encoder-tokenizer ids the pruned embedding rows stand for
    spm.model              the target SentencePiece model
    meta.json              step, stage, dev scores, format version
    trainer_state.pt       optimizer, schedule, RNG and data position (resumable checkpoints)

Directories are written under a temporary name and renamed, so a killed run never leaves a
checkpoint that looks complete but is not. Weights are read with safetensors only and the
trainer state with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nmt_bert.config import Config, config_from_dict, read_yaml, save_config
from nmt_bert.errors import UserError
from nmt_bert.model import Seq2Seq
from nmt_bert.textio import atomic_dir
from nmt_bert.vocab import SourceVocab, TargetVocab

FORMAT_VERSION = 1
REQUIRED = ("model.safetensors", "config.yaml", "encoder_config.json", "encoder_tokenizer",
            "source_vocab.json", "spm.model", "meta.json")


@dataclass
class Assets:
    """Everything besides the weights that a checkpoint carries."""

    tokenizer_dir: Path
    spm_path: Path
    source_vocab: SourceVocab


@dataclass
class Checkpoint:
    model: Seq2Seq
    config: Config
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    source_vocab: SourceVocab
    target_vocab: TargetVocab
    meta: dict
    path: Path


def save_checkpoint(path: Path, model: Seq2Seq, config: Config, assets: Assets, meta: dict,
                    trainer_state: dict | None = None) -> None:
    with atomic_dir(path) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        save_config(config, tmp / "config.yaml")
        (tmp / "encoder_config.json").write_text(model.encoder.config.to_json_string())
        shutil.copytree(assets.tokenizer_dir, tmp / "encoder_tokenizer")
        shutil.copy(assets.spm_path, tmp / "spm.model")
        assets.source_vocab.save(tmp / "source_vocab.json")
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer_state.pt")


def resolve_checkpoint_dir(path: Path) -> Path:
    """Accept a checkpoint directory or a run directory (then its best, else last, checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model directory not found")
    if not path.is_dir():
        raise UserError(f"{path}: expected a run or checkpoint directory, got a file")
    if (path / "model.safetensors").exists():
        return path
    for name in ("best", "last"):
        if (path / "checkpoints" / name / "model.safetensors").exists():
            return path / "checkpoints" / name
    raise UserError(f"{path}: no checkpoint here (expected model.safetensors or checkpoints/best)")


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from the checkpoint's own files; errors name the broken file."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_checkpoint_dir(path)
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    config = config_from_dict(read_yaml(path / "config.yaml"), str(path / "config.yaml"))
    try:
        enc_config = json.loads((path / "encoder_config.json").read_text())
        encoder = AutoModel.from_config(AutoConfig.for_model(**enc_config))
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path / 'encoder_config.json'}: cannot rebuild the encoder ({err})") from None
    drop_pooler(encoder)
    target_vocab = TargetVocab(path / "spm.model")
    model = Seq2Seq(encoder, config.model, len(target_vocab))
    weights = path / "model.safetensors"
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
    tokenizer = AutoTokenizer.from_pretrained(path / "encoder_tokenizer")
    meta = json.loads((path / "meta.json").read_text())
    model.to(device).eval()
    return Checkpoint(model, config, tokenizer, SourceVocab.load(path / "source_vocab.json"),
                      target_vocab, meta, path)


def find_resumable(run_dir: Path) -> Path:
    """checkpoints/last, or the previous one if a kill landed between the two renames."""
    checkpoints = Path(run_dir) / "checkpoints"
    for candidate in (checkpoints / "last", checkpoints / ".last.old"):
        if (candidate / "trainer_state.pt").exists():
            return candidate
    raise UserError(f"{run_dir}: no resumable checkpoint yet (checkpoints/last missing)")


def load_trainer_state(path: Path) -> dict:
    file = Path(path) / "trainer_state.pt"
    if not file.exists():
        raise UserError(f"{path}: checkpoint has no trainer_state.pt, cannot resume from it")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"{file}: unreadable trainer state ({type(err).__name__})") from None


def drop_pooler(encoder: torch.nn.Module) -> None:
    """The pooler is unused for translation; dropping it keeps weights and optimizer smaller."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
