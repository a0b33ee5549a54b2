"""Tiny random models, target SentencePiece models and checkpoints for tests.

Import from a test module (pytest puts tests/ on sys.path):

    from helpers_model import build_tiny_model, build_tiny_checkpoint, train_tiny_spm

Everything here takes seconds at most; the encoder directory comes from conftest's
`tiny_encoder_dir` fixture.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn

from nmt_bert.model.checkpoint import Assets, save_checkpoint
from nmt_bert.config import Config, DecodeConfig, ModelConfig, TrainConfig
from nmt_bert.model.encoder_surgery import prune_embeddings
from nmt_bert.model.seq2seq import Seq2Seq
from nmt_bert.model.special_tokens import BOS, EOS, PAD
from nmt_bert.decode.search import greedy_search
from nmt_bert.model.vocab import SourceVocab, TargetVocab

TINY_ENGLISH = (
    "god lord king house people land day son father man water light heaven said came "
    "the a of and to in is was he she it they we you not that this with for on at by from"
).split()
TINY_SPANISH = (
    "dios señor rey casa pueblo tierra día hijo padre hombre agua luz cielo dijo vino "
    "el la de y en que los las un una no se su por con para"
).split()


def tiny_model_config(**changes) -> ModelConfig:
    """The decoder side of the tiny model: width 32 to match the tiny encoder, no dropout."""
    base = dict(d_model=32, heads=2, ffn_dim=64, decoder_layers=2, adapter_hidden=64, dropout=0.0)
    return ModelConfig(**{**base, **changes})


def make_lively(model: Seq2Seq, seed: int = 0, stop_rate: float = 0.15) -> None:
    """Re-draw decoder and adapter weights so greedy/beam outputs are long, varied and stop
    at different lengths (a fresh random decoder repeats one token or stops at once).

    Larger linear and position weights make the next token depend on source and step. EOS's
    (tied) embedding becomes a unit direction u that all other embeddings are made orthogonal
    to; the final LayerNorm bias, offset * u, then moves only EOS's logit. The offset is
    calibrated on random inputs so EOS is the argmax at about `stop_rate` of the steps.
    """
    gen = torch.Generator().manual_seed(seed)
    dec = model.decoder
    with torch.no_grad():
        dec.positions.weight.copy_(torch.randn(dec.positions.weight.shape, generator=gen) * 2.0)
        for module in [*dec.modules(), *model.adapter.modules()]:
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.5)
        embed = torch.randn(dec.embed.weight.shape, generator=gen) * 0.3  # (V, D)
        u = torch.randn(embed.size(1), generator=gen)
        u /= u.norm()
        embed -= (embed @ u)[:, None] * u  # every embedding orthogonal to u
        embed[EOS] = u
        embed[PAD] = 0.0
        dec.embed.weight.copy_(embed)
        # Calibrate on greedy paths (EOS banned) from random sources: EOS's margin to the best
        # other token at each step, with no offset; the stop_rate quantile becomes the offset.
        states = torch.randn(16, 10, model.encoder.config.hidden_size, generator=gen)
        mask = torch.ones(16, 10, dtype=torch.bool)
        dec.norm.bias.copy_(-1e4 * u)
        paths = greedy_search(model, states, mask, torch.full((16,), 20))
        dec.norm.bias.zero_()
        prefix = torch.tensor([[BOS] + hyp.tokens[:-1] for hyp in paths])  # (16, 20)
        logits = dec(prefix, model.start(states, mask))  # (16, 20, V)
        others = logits.clone()
        others[..., [PAD, BOS, EOS]] = -float("inf")
        margin = others.max(dim=-1).values - logits[..., EOS]  # EOS wins where offset > margin
        offset = torch.quantile(margin.flatten(), stop_rate).item()
        dec.norm.bias.copy_(offset * u)


def build_tiny_model(encoder_dir: Path, tgt_vocab_size: int = 50, seed: int = 0,
                     lively: bool = True, **config_changes) -> Seq2Seq:
    """The tiny BERT from `encoder_dir` + adapter + 2-layer decoder, in eval mode."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(encoder_dir)
    encoder.pooler = None
    model = Seq2Seq(encoder, tiny_model_config(**config_changes), tgt_vocab_size)
    if lively:
        make_lively(model, seed)
    return model.eval()


def tiny_target_lines(count: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_ENGLISH) for _ in range(rng.randint(2, 8)))
            for _ in range(count)]


def tiny_source_lines(count: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_SPANISH) for _ in range(rng.randint(2, 8)))
            for _ in range(count)]


def train_tiny_spm(directory: Path, lines: list[str] | None = None,
                   vocab_size: int = 50) -> Path:
    """Train a unigram SentencePiece model with pad/unk/bos/eos = 0/1/2/3; returns its path."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines or tiny_target_lines()), model_prefix=str(directory / "spm"),
        vocab_size=vocab_size, hard_vocab_limit=False, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2,
    )
    return directory / "spm.model"


def build_tiny_checkpoint(directory: Path, encoder_dir: Path, *, seed: int = 0,
                          prune_to: list[str] | None = None,
                          decode: dict | None = None, model: dict | None = None,
                          train: dict | None = None) -> Path:
    """Save a checkpoint of a tiny lively model that `Translator.from_checkpoint` can load.

    prune_to: source lines whose encoder pieces (plus special tokens) are the only embedding
    rows kept, as `prepare` would do for a corpus; None keeps the whole encoder vocabulary.
    decode, model, train: DecodeConfig / ModelConfig / TrainConfig fields stored in the
    checkpoint's config (model fields also shape the model, e.g. the adapter kind).
    """
    from transformers import AutoTokenizer

    spm_path = train_tiny_spm(directory.parent / f"{directory.name}-spm")
    changes = dict(model or {})
    net = build_tiny_model(encoder_dir, len(TargetVocab(spm_path)), seed, **changes)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    rows = net.encoder.get_input_embeddings().num_embeddings
    source_vocab = SourceVocab(rows, tokenizer.unk_token_id)
    if prune_to is not None:
        ids = tokenizer(prune_to, add_special_tokens=False)["input_ids"]
        source_vocab = SourceVocab.build(ids, rows, tokenizer.unk_token_id,
                                         tokenizer.all_special_ids)
        prune_embeddings(net.encoder, source_vocab.kept_tensor())
    config = Config(model=tiny_model_config(**changes), train=TrainConfig(**(train or {})),
                    decode=DecodeConfig(**(decode or {})))
    save_checkpoint(directory, net, config, Assets(encoder_dir, spm_path, source_vocab), meta={})
    return directory
