"""The whole pretrained word-embedding table at translation time (`decode.full_vocab`).

Training prunes the encoder's word embeddings to the pieces its corpus uses, and any other
piece is read as the unknown token. Where the word embeddings were never trained (frozen in
stage 1, and in stage 2 by `train.freeze_embeddings_stage2`, a zero `train.encoder_lr` or no
stage 2 at all), the pretrained table is still exactly the table the model was trained
with: its kept rows are bit-identical to the pruned ones, so in-vocabulary text gives
bit-identical encoder states, and every other piece is read through its own pretrained row
instead of `<unk>`.

    auto  the whole table where valid and available offline; otherwise the pruned one, with
          a one-line note saying why (embeddings trained, encoder not available offline,
          rows that differ from the checkpoint's)
    on    the whole table, or a UserError saying why not
    off   the pruned table, as trained

The pretrained table comes from the encoder named in `model.encoder` (a bundled name, a
local directory or a hub id already in the local cache; nothing is downloaded). A
checkpoint therefore still translates with nothing but its own directory: the pruned table
is the fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from nmt_bert.config import Config
from nmt_bert.errors import UserError, first_line
from nmt_bert.model.vocab import SourceVocab

_WORD_TABLE = "word_embeddings.weight"  # BERT-family state-dict name, under any prefix


@dataclass
class FullVocab:
    """What `choose_full_vocab` decided."""

    weight: Tensor | None  # (original_size, E) pretrained rows; None keeps the pruned table
    note: str | None = None  # one line for stderr when the pruned table is kept; else None


def embeddings_trained(config: Config) -> str | None:
    """Why the pretrained rows are not the model's rows (from the config alone), or None."""
    m, t = config.model, config.train
    if m.encoder_init != "pretrained":
        return "the encoder was randomly initialised (model.encoder_init=random)"
    if t.stage2_steps > 0 and t.encoder_lr > 0 and not t.freeze_embeddings_stage2:
        return "the word embeddings were trained in stage 2 (train.freeze_embeddings_stage2=false)"
    return None


def choose_full_vocab(config: Config, source_vocab: SourceVocab, pruned: Tensor) -> FullVocab:
    """Decide by `config.decode.full_vocab` whether to read source pieces through the whole
    pretrained table.

    `pruned` (K, E) is the model's own word table, row i standing for original id
    `source_vocab.kept_ids[i]`. The pretrained table is used only if it has
    `source_vocab.original_size` rows of width E and its kept rows equal `pruned` exactly.
    Raises UserError for `on` where `auto` would fall back.
    """
    mode = config.decode.full_vocab
    if mode == "off" or source_vocab.kept_ids is None:
        return FullVocab(None)  # off, or nothing was pruned: the model's table is the whole one
    try:
        reason = embeddings_trained(config)
        if reason is not None:
            raise UserError(f"{reason}, so only the trained rows are valid")
        weight = pretrained_rows(config.model.encoder)
        check_rows(weight, source_vocab, pruned, config.model.encoder)
    except UserError as err:
        if mode == "on":
            raise UserError(f"decode.full_vocab=on: {err}") from None
        return FullVocab(None, f"decode.full_vocab=auto: {err}; source pieces outside the "
                               "training vocabulary are read as unknown")
    return FullVocab(weight.to(pruned.dtype))


def check_rows(weight: Tensor, source_vocab: SourceVocab, pruned: Tensor, encoder: str) -> None:
    """UserError unless `weight` is the table `pruned` was cut from."""
    expected = (source_vocab.original_size, pruned.size(1))
    if tuple(weight.shape) != expected:
        raise UserError(f"encoder {encoder!r} has a {tuple(weight.shape)} word table, the model "
                        f"was pruned from {expected}")
    kept = weight.index_select(0, source_vocab.kept_tensor()).to(pruned.dtype)
    if not torch.equal(kept, pruned.detach().cpu()):
        raise UserError(f"encoder {encoder!r}'s word embeddings differ from the model's")


def widen_encoder(encoder: nn.Module, weight: Tensor, source_vocab: SourceVocab) -> SourceVocab:
    """Install `weight` (original_size, E) as `encoder`'s word table, on the old table's
    device; returns the vocabulary that now applies (every id is its own row)."""
    old = encoder.get_input_embeddings()
    table = nn.Embedding(weight.size(0), weight.size(1), device=old.weight.device,
                         dtype=old.weight.dtype)
    with torch.no_grad():
        table.weight.copy_(weight)
    table.requires_grad_(old.weight.requires_grad)
    encoder.set_input_embeddings(table)
    encoder.config.vocab_size = weight.size(0)
    return SourceVocab(source_vocab.original_size, source_vocab.unk_id)


def pretrained_rows(encoder: str) -> Tensor:
    """The word-embedding table of the encoder named `encoder`, read from local files only.

    UserError (one line) when it cannot be found offline or its files hold no such table.
    """
    from nmt_bert.model.encoders import resolve_encoder

    source = resolve_encoder(encoder)
    directory = Path(source) if isinstance(source, Path) else _cached_hub_dir(source)
    try:
        return _read_word_table(directory)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UserError(f"cannot read the word table of encoder {encoder!r} from {directory} "
                        f"({first_line(err)})") from None


def _cached_hub_dir(repo_id: str) -> Path:
    """The local snapshot of a hub encoder, without any network access."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - offline, not cached, malformed id: all one case
        raise UserError(f"encoder {repo_id!r} is not in the local hub cache "
                        f"({type(err).__name__})") from None


def _read_word_table(directory: Path) -> Tensor:
    """`*word_embeddings.weight` from model.safetensors (single or indexed shards), else from
    pytorch_model.bin (read with weights_only)."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({directory / name for key, name in weight_map.items()
                        if key.endswith(_WORD_TABLE)})
    else:
        files = [directory / "model.safetensors"]
    for file in files:
        if file.is_file():
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    if key.endswith(_WORD_TABLE):
                        return handle.get_tensor(key)
    bin_file = directory / "pytorch_model.bin"
    if bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True, mmap=True)
        for key, value in state.items():
            if key.endswith(_WORD_TABLE):
                return value.clone()
    raise KeyError(f"no {_WORD_TABLE} in model.safetensors or pytorch_model.bin")
