"""The target side's pieces: a SentencePiece model trained on the train targets (the default),
or the encoder tokenizer's own pieces pruned to those the targets use
(data.target_tokenizer=encoder, for a decoder warm-started from the encoder).

Both fix pad 0, unk 1, bos 2, eos 3 (model/special_tokens.py) and give `prepare` the same
batch `encode` and `get_piece_size`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

from nmt_bert.config import DataConfig
from nmt_bert.cpu import usable_cores
from nmt_bert.errors import UserError
from nmt_bert.model.special_tokens import BOS, EOS, PAD, UNK
from nmt_bert.textio import write_lines

BATCH = 1000  # pairs per tokenizer call: fast tokenizers batch well, memory stays flat
# SentencePiece refuses samples of 100 sentences or fewer (0 means "all").
SP_MIN_SAMPLE = 101


def train_sentencepiece(train_path: Path, model_path: Path, data: DataConfig, seed: int,
                        symbols: list[str] = ()):
    """Train the target SentencePiece model on the train targets; return the processor.

    `symbols` become single pieces (user_defined_symbols): the protected-span placeholders.
    They are cut out of the text SentencePiece learns from (each becomes a space), so they
    do not shape the other pieces: a symbol in the text splits its neighbour's word-start
    marker off, and a model learned with them there segments every line, spans or not,
    into more pieces (bench/README.md, protected spans).

    Writes `model_path` and, for reading, the pieces and scores beside it (.vocab). A corpus
    too small for data.tgt_vocab_size gets the largest vocabulary it supports (tiny corpora
    must work). The model is written from memory so it embeds no temporary path: the same
    input gives the same bytes.
    """
    import sentencepiece as spm

    cut = re.compile("|".join(map(re.escape, symbols))) if symbols else None

    def targets() -> Iterator[str]:
        with open(train_path, encoding="utf-8", newline="\n") as lines:
            for line in lines:
                target = line.rstrip("\n").split("\t", 1)[1]
                yield cut.sub(" ", target) if cut else target

    sample = data.sp_max_sentences and max(data.sp_max_sentences, SP_MIN_SAMPLE)
    options = dict(
        vocab_size=data.tgt_vocab_size, model_type=data.sp_model_type,
        character_coverage=data.sp_character_coverage, input_sentence_size=sample,
        shuffle_input_sentence=True, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
        num_threads=usable_cores(), minloglevel=2,
    )
    if symbols:
        options["user_defined_symbols"] = list(symbols)
    spm.set_random_generator_seed(seed)  # the sentence sample: same input, same model
    for hard_limit in (True, False):
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=targets(), model_writer=model,
                                           hard_vocab_limit=hard_limit, **options)
            break
        except RuntimeError as err:
            if hard_limit and "Vocabulary size too high" in str(err):
                continue  # a tiny corpus: take the largest vocabulary it supports
            reason = str(err).strip().splitlines()[-1].split("] ")[-1]
            raise UserError(f"SentencePiece training failed (data.tgt_vocab_size="
                            f"{data.tgt_vocab_size}): {reason}") from None
    model_path.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    write_lines(model_path.with_suffix(".vocab"),
                [f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}" for i in range(sp.get_piece_size())])
    return sp


class EncoderPieces:
    """data.target_tokenizer=encoder: the target side in the encoder tokenizer's own pieces,
    pruned to those the train targets use (model/vocab.py `EncoderTargetVocab`), with the
    batch `encode` and `get_piece_size` the rest of `prepare` calls on SentencePiece."""

    def __init__(self, vocab):
        self.vocab = vocab

    @classmethod
    def build(cls, train_path: Path, out: Path, tokenizer) -> "EncoderPieces":
        from nmt_bert.model.vocab import EncoderTargetVocab

        def id_lists() -> Iterator[list[int]]:
            with open(train_path, encoding="utf-8", newline="\n") as lines:
                for batch in chunks((line.rstrip("\n").split("\t", 1)[1] for line in lines),
                                     BATCH):
                    yield from tokenizer(batch, add_special_tokens=False)["input_ids"]

        vocab = EncoderTargetVocab.build(tokenizer, id_lists())
        vocab.save(out / EncoderTargetVocab.FILE)
        return cls(vocab)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.vocab.encode_batch(texts)

    def get_piece_size(self) -> int:
        return len(self.vocab)

    def manifest_entry(self) -> dict:
        return {"model": self.vocab.FILE, "type": "encoder", "size": len(self.vocab),
                "requested_size": len(self.vocab), "pad_id": PAD, "unk_id": UNK,
                "bos_id": BOS, "eos_id": EOS}


def chunks(items, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
