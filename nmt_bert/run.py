"""What a training run is built from: model, vocabularies, data, logs (layout: run_dir.py)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from nmt_bert.atomic import atomic_file
from nmt_bert.checkpoint import Assets, drop_pooler, load_checkpoint
from nmt_bert.config import Config, config_from_dict, read_yaml, save_config
from nmt_bert.data import TokenData
from nmt_bert.errors import UserError
from nmt_bert.model import Seq2Seq, prune_embeddings, truncate_encoder
from nmt_bert.prepared import load_prepared
from nmt_bert.run_dir import RunDir
from nmt_bert.vocab import SourceVocab, TargetVocab


class RunLog:
    """Writes human lines to train.log (and the console) and records to metrics.jsonl."""

    def __init__(self, run: RunDir, console: Console | None = None, enabled: bool = True):
        self.run, self.enabled = run, enabled
        self.console = console or Console(stderr=True)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.run.log_file, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")
        self.console.print(message, highlight=False)

    def record(self, **fields) -> None:
        if not self.enabled:
            return
        with open(self.run.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")

    def drop_after(self, step: int) -> int:
        """Remove records of steps after `step` (replayed after a resume); return how many."""
        if not self.enabled or not self.run.metrics.exists():
            return 0
        lines = self.run.metrics.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and _step(line) <= step]
        if len(kept) != len(lines):
            with atomic_file(self.run.metrics) as f:
                f.write("".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", -1))
    except (ValueError, TypeError, AttributeError):
        return -1  # a damaged line (a kill mid-write) is kept as it is


@dataclass
class RunSetup:
    config: Config
    model: Seq2Seq
    tokenizer: object
    source_vocab: SourceVocab
    target_vocab: TargetVocab
    train_data: TokenData
    dev_data: TokenData
    dev_src: list[str]
    dev_ref: list[str]
    assets: Assets
    data_dir: Path
    fingerprint: str


def reconcile_encoder(config: Config, data_dir: Path, log: RunLog | None = None) -> Config:
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


def create_run(run: RunDir, data_dir: Path, config: Config, log=None) -> None:
    """Start a new run in `run` (hold its lock): refuses a directory that is not ours."""
    run.prepare_new(data_dir, log)
    save_config(config, run.config)
    run.write_info({"data_dir": str(Path(data_dir).resolve())})


def read_run(run: RunDir) -> tuple[Config, Path, dict]:
    info = run.read_info()
    config = config_from_dict(read_yaml(run.config), str(run.config))
    return config, Path(info["data_dir"]), info


def build(run: RunDir, data_dir: Path, config: Config, resume_from: Path | None,
          log: RunLog) -> RunSetup:
    """Model, vocabularies and token data for a new run, or rebuilt from a checkpoint."""
    from nmt_bert.encoders import encoder_fingerprint, load_encoder

    prepared = load_prepared(data_dir)
    info = run.read_info()
    train_split, dev_split = prepared.split("train"), prepared.split("dev")
    target_vocab = TargetVocab(prepared.spm_path)
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        model, tokenizer, source_vocab = ckpt.model, ckpt.tokenizer, ckpt.source_vocab
        fingerprint = info["encoder_fingerprint"]
    else:
        pretrained = config.model.encoder_init == "pretrained"
        torch.manual_seed(config.train.seed)  # the random init, when asked for, is seeded
        encoder, tokenizer = load_encoder(config.model.encoder, pretrained=pretrained)
        if not pretrained:
            log.info("encoder weights randomly initialised (model.encoder_init=random)")
        truncate_encoder(encoder, config.model.encoder_layers)
        drop_pooler(encoder)
        fingerprint = encoder_fingerprint(encoder)
        original = encoder.get_input_embeddings().num_embeddings
        specials = [i for i in tokenizer.all_special_ids if i is not None and i < original]
        if config.model.prune_encoder_vocab:
            ids = (row for split in (train_split, dev_split) for row in split["src_ids"])
            source_vocab = SourceVocab.build(ids, original, tokenizer.unk_token_id, specials)
            prune_embeddings(encoder, source_vocab.kept_tensor())
            log.info(f"encoder vocabulary pruned: {source_vocab.size} of {original} rows kept")
        else:
            source_vocab = SourceVocab(original, tokenizer.unk_token_id)
        torch.manual_seed(config.train.seed)
        model = Seq2Seq(encoder, config.model, len(target_vocab))
        source_vocab.save(run.source_vocab)
        info["encoder_fingerprint"] = fingerprint
        run.write_info(info)
    lookup = source_vocab.lookup_table()
    assets = Assets(prepared.tokenizer_dir, prepared.spm_path, source_vocab)
    return RunSetup(config, model, tokenizer, source_vocab, target_vocab,
                    TokenData.from_dataset(train_split, lookup),
                    TokenData.from_dataset(dev_split, lookup),
                    list(dev_split["src"]), list(dev_split["tgt"]), assets, Path(data_dir),
                    fingerprint)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    parts = {"encoder": model.encoder, "adapter": model.adapter, "decoder": model.decoder}
    return {name: int(sum(p.numel() for p in m.parameters())) for name, m in parts.items()}


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
