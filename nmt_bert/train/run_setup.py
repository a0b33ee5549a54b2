"""What a training run is built from: model, vocabularies and token data, new or resumed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmt_bert.model.checkpoint import Assets, load_checkpoint
from nmt_bert.config import Config
from nmt_bert.cpu import return_freed_memory
from nmt_bert.decode.line_translator import SourceLines
from nmt_bert.train.batches import TokenData
from nmt_bert.model.encoder_surgery import (drop_pooler, own_memory, prune_embeddings,
                                            truncate_encoder)
from nmt_bert.model.seq2seq import Seq2Seq
from nmt_bert.data.prepared_dir import load_prepared
from nmt_bert.train.run_dir import RunDir
from nmt_bert.train.run_log import RunLog
from nmt_bert.train.validation import read_dev_sources
from nmt_bert.errors import UserError
from nmt_bert.model.vocab import SourceVocab, TargetVocab


@dataclass
class RunSetup:
    config: Config
    model: Seq2Seq
    source_vocab: SourceVocab
    target_vocab: TargetVocab
    train_data: TokenData
    dev_data: TokenData
    dev_sources: SourceLines  # the dev sources as `translate` reads them: what evaluations translate
    dev_ref: list[str]
    assets: Assets
    data_dir: Path
    fingerprint: str


def build(run: RunDir, data_dir: Path, config: Config, resume_from: Path | None,
          log: RunLog) -> RunSetup:
    """Model, vocabularies and token data for a new run, or rebuilt from a checkpoint.

    The encoder's tokenizer is needed here only, to read the dev sources the way `translate`
    reads lines. It is let go before the model is made (~300 MB for a 250k-piece one),
    unless the target vocabulary decodes through it (data.target_tokenizer=encoder).
    """
    from nmt_bert.model.encoders import encoder_fingerprint, load_encoder

    prepared = load_prepared(data_dir)
    info = run.read_info()
    train_split, dev_split = prepared.split("train"), prepared.split("dev")
    dev_src = list(dev_split["src"])
    check_target_tokenizer(prepared, config)
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        model, source_vocab, target_vocab = ckpt.model, ckpt.source_vocab, ckpt.target_vocab
        dev_sources = read_dev_sources(dev_src, ckpt.tokenizer, model.encoder, source_vocab,
                                       target_vocab, config)
        del ckpt
        return_freed_memory()
        fingerprint = info["encoder_fingerprint"]
    else:
        pretrained = config.model.encoder_init == "pretrained"
        torch.manual_seed(config.train.seed)  # the random init, when asked for, is seeded
        encoder, tokenizer = load_encoder(config.model.encoder, pretrained=pretrained)
        if not pretrained:
            log.info("encoder weights randomly initialised (model.encoder_init=random)")
        target_vocab = prepared.target_vocab(tokenizer)
        pretrained_stack = list(encoder.encoder.layer)  # before truncation and pruning
        pretrained_words = encoder.get_input_embeddings().weight
        truncate_encoder(encoder, config.model.encoder_layers)
        drop_pooler(encoder)
        original = encoder.get_input_embeddings().num_embeddings
        specials = [i for i in tokenizer.all_special_ids if i is not None and i < original]
        if config.model.prune_encoder_vocab:
            ids = (row for split in (train_split, dev_split) for row in split["src_ids"])
            source_vocab = SourceVocab.build(ids, original, tokenizer.unk_token_id, specials)
        else:
            source_vocab = SourceVocab(original, tokenizer.unk_token_id)
        dev_sources = read_dev_sources(dev_src, tokenizer, encoder, source_vocab, target_vocab,
                                       config)
        del tokenizer
        return_freed_memory()
        if config.model.prune_encoder_vocab:
            prune_embeddings(encoder, source_vocab.kept_tensor())
            log.info(f"encoder vocabulary pruned: {source_vocab.size} of {original} rows kept")
        torch.manual_seed(config.train.seed)
        model = Seq2Seq(encoder, config.model, len(target_vocab))
        if config.model.decoder_init == "encoder":
            warm_start_decoder(model, pretrained_words, pretrained_stack, target_vocab, log)
        del pretrained_words, pretrained_stack
        own_memory(model.encoder)  # the loaded file's map goes with the full table and layers
        # Of the encoder as trained (kept rows only): hashing the full table first would read
        # all of its mapped file into memory (~380 MB of e5-small's 250k rows) for nothing.
        fingerprint = encoder_fingerprint(model.encoder)
        source_vocab.save(run.source_vocab)
        info["encoder_fingerprint"] = fingerprint
        run.write_info(info)
    lookup = source_vocab.lookup_table()
    assets = Assets(prepared.tokenizer_dir, prepared.target_vocab_path, source_vocab)
    return RunSetup(config, model, source_vocab, target_vocab,
                    TokenData.from_dataset(train_split, lookup),
                    TokenData.from_dataset(dev_split, lookup),
                    dev_sources, list(dev_split["tgt"]), assets, Path(data_dir),
                    fingerprint)


def check_target_tokenizer(prepared, config: Config) -> None:
    """The decoder kind and the prepared target vocabulary must go together."""
    kind = prepared.target_tokenizer
    if (config.model.decoder_init == "encoder") != (kind == "encoder"):
        raise UserError(f"{prepared.path} was prepared with data.target_tokenizer={kind}, but "
                        f"model.decoder_init={config.model.decoder_init} needs "
                        f"{'encoder' if config.model.decoder_init == 'encoder' else 'sentencepiece'}"
                        "; prepare the data again with the matching data.target_tokenizer")


def warm_start_decoder(model: Seq2Seq, word_table: torch.Tensor, stack: list, target_vocab,
                       log: RunLog) -> None:
    """BERT2BERT: the decoder's embeddings and layers from the pretrained encoder's
    (`word_table` and `stack`: its word table and layers before pruning and truncation)."""
    from nmt_bert.model.bert_decoder import init_from_encoder, source_layer_ids
    from nmt_bert.model.encoders import OFFSET_POSITIONS

    m = model.config
    try:
        ids = source_layer_ids(len(stack), m.decoder_layers, m.decoder_source_layers)
    except ValueError as err:
        raise UserError(str(err)) from None
    encoder = model.encoder
    offset = OFFSET_POSITIONS.get(encoder.config.model_type, 0)
    try:
        init_from_encoder(model.decoder, word_table, encoder.embeddings, [stack[i] for i in ids],
                          target_vocab.kept_ids, offset)
    except ValueError as err:
        raise UserError(str(err)) from None
    log.info(f"decoder initialised from encoder layers {ids} ({m.decoder_source_layers} "
             f"{m.decoder_layers}); target vocabulary {len(target_vocab)} encoder pieces")


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    parts = {"encoder": model.encoder, "adapter": model.adapter, "decoder": model.decoder}
    return {name: int(sum(p.numel() for p in m.parameters())) for name, m in parts.items()}


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
