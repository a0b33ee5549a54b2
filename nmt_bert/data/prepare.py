"""`nmt-bert prepare`: a parallel corpus in, a self-describing prepared data directory out.

    OUT/splits/{train,dev,test}/   Arrow (save_to_disk): src, tgt, src_ids, tgt_ids (int32)
    OUT/{dev,test}.{src,ref}       cleaned text, line-aligned with the splits; .ref2 where the
                                   corpus has a second reference (the bundled KJV)
    OUT/spm.model, spm.vocab       target SentencePiece: pad 0, unk 1, bos 2, eos 3
    OUT/target_vocab.json          instead, with data.target_tokenizer=encoder: the encoder
                                   tokenizer's ids the targets use, specials at rows 0-3
    OUT/encoder_tokenizer/         the source tokenizer exactly as it made src_ids
    OUT/config.yaml                the resolved config
    OUT/manifest.json              inputs with sha256, counts, drops per reason, coverage

The directory is built beside OUT and renamed into place only when complete: a failed run
leaves an existing OUT untouched and no half-written one behind. An existing OUT is replaced
only when it is itself a prepared data directory (or empty); anything else is refused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)

from nmt_bert import __version__
from nmt_bert.atomic import atomic_dir, check_replaceable
from nmt_bert.data.cleaning import CleanedCorpus, SplitStats, clean_corpus, no_training_pairs
from nmt_bert.config import Config, DataConfig, save_config
from nmt_bert.data.corpora import CorpusSpec, Pair, open_corpus
from nmt_bert.data.coverage import coverage
from nmt_bert.errors import UserError
from nmt_bert.model.special_tokens import BOS, EOS, PAD, UNK
from nmt_bert.data.protected_spans import Protector, mask_train_file, placeholder_symbols
from nmt_bert.data.target_pieces import BATCH, EncoderPieces, chunks, train_sentencepiece
from nmt_bert.data.prepared_dir import FORMAT, FORMAT_VERSION, is_prepared, summary_table
from nmt_bert.progress import progress_bar
from nmt_bert.textio import write_lines

PREPARED_WHAT = "a prepared data directory (no nmt-bert manifest.json)"



def prepare(spec: CorpusSpec, out: Path, config: Config, console: Console | None = None) -> dict:
    """Read, clean, split and tokenize `spec` into the directory `out`; return the manifest.

    Raises UserError (one line, naming the file and line where one applies) for bad inputs.
    """
    import datasets

    from nmt_bert.model.encoders import load_tokenizer

    console = console or Console(stderr=True)
    started, data, out = time.time(), config.data, Path(out)
    check_replaceable(out, is_prepared, PREPARED_WHAT)
    check_inputs_outside(spec, out)
    tokenizer = load_tokenizer(config.model.encoder)  # fails fast, before reading the corpus
    # What the model cannot take at all (dev/test), and the train filter within that.
    hard = (_hard_limit(tokenizer), config.model.max_target_positions - 1)
    limits = (min(data.max_src_tokens, hard[0] or data.max_src_tokens), data.max_tgt_tokens)
    with atomic_dir(out, is_prepared, PREPARED_WHAT) as tmp, _datasets_quiet(datasets):
        work = tmp / "_work"
        work.mkdir()
        corpus = open_corpus(spec, data.src_lang, data.tgt_lang, work / "hf-cache")
        # the corpus as errors name it: its files, or the bundled corpus's train file
        label = ", ".join(i["path"] for i in corpus.inputs if i["role"] in ("corpus", "train"))
        with _progress(console) as progress:
            task = progress.add_task("reading and cleaning", total=None)
            cleaned = clean_corpus(corpus, data, work, label, lambda n: progress.advance(task, n))
            progress.update(task, total=progress.tasks[task].completed)
            protector, protection = protect_train(cleaned, data)
            if data.target_tokenizer == "encoder":
                progress.add_task("pruning the encoder's pieces to the targets", total=None)
                sp = EncoderPieces.build(cleaned.train_path, tmp, tokenizer)
            else:
                progress.add_task("training SentencePiece", total=None)
                sp = train_sentencepiece(cleaned.train_path, tmp / "spm.model", data,
                                         config.train.seed, protection["symbols"])
            task = progress.add_task("tokenizing train", total=cleaned.stats["train"].kept)
            rows = TrainRows(cleaned.train_path, tokenizer, sp, limits,
                             lambda n: progress.advance(task, n))
            splits = {"train": _train_split(datasets, rows, work, cleaned.stats["train"], label)}
        for name in ("dev", "test"):
            pairs = getattr(cleaned, name)
            splits[name], kept = heldout_split(datasets, pairs, tokenizer, sp, hard,
                                               cleaned.stats[name], protector)
            write_heldout_text(tmp, name, kept)
        for name, split in splits.items():
            split.save_to_disk(str(tmp / "splits" / name))
        tokenizer.save_pretrained(str(tmp / "encoder_tokenizer"))
        save_config(config, tmp / "config.yaml")
        manifest = build_manifest(config, corpus.inputs, cleaned, sp.get_piece_size(), tokenizer,
                                  coverage(splits, tokenizer), started, tmp)
        if data.target_tokenizer == "encoder":
            manifest["target_vocab"] = sp.manifest_entry()
        manifest["protection"] = protection
        del splits
        shutil.rmtree(work)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print_summary(console, manifest, out)
    return manifest


def check_inputs_outside(spec: CorpusSpec, out: Path) -> None:
    """Replacing OUT must never take an input file with it."""
    target = out.resolve()
    given = [spec.src, spec.tgt, spec.tsv, spec.tmx, *spec.dev, *spec.test]
    if spec.dataset and Path(spec.dataset).exists():
        given.append(Path(spec.dataset))
    for path in (Path(p) for p in given if p is not None):
        resolved = path.resolve()
        if resolved == target or target in resolved.parents:
            raise UserError(f"--out {out}: contains the input {path}; write the prepared data "
                            "elsewhere")


def features(datasets):
    return datasets.Features({
        "src": datasets.Value("string"), "tgt": datasets.Value("string"),
        "src_ids": datasets.List(datasets.Value("int32")),
        "tgt_ids": datasets.List(datasets.Value("int32")),
    })


def protect_train(cleaned: CleanedCorpus, data: DataConfig) -> tuple[Protector | None, dict]:
    """Mask the train pairs whose sides carry the same protected spans (data.protect,
    data.protect_patterns); return the protector for dev/test (None when no train pair was
    masked: then nothing changes, byte for byte) and the manifest's record of it."""
    protector = Protector.from_config(data)
    masked = mask_train_file(cleaned.train_path, protector) if protector is not None else 0
    record = {"kinds": list(data.protect), "patterns": list(data.protect_patterns),
              "masked_train_pairs": masked, "symbols": placeholder_symbols() if masked else []}
    return (protector if masked else None), record


class TrainRows:
    """Generator of tokenized train rows for `Dataset.from_generator`; counts token drops.

    A pair is dropped (`too_long_tokens`) when its source has more than `limits[0]` encoder
    tokens ([CLS] and [SEP] included: data.max_src_tokens, capped by the encoder's positions)
    or its target more than `limits[1]` SentencePiece pieces (data.max_tgt_tokens; BOS/EOS
    excluded, the model adds one of them).
    """

    def __init__(self, path: Path, tokenizer, sp, limits: tuple[int, int], advance=lambda n: None):
        self.path, self.tokenizer, self.sp, self.advance = path, tokenizer, sp, advance
        self.max_src, self.max_tgt = limits
        self.kept = self.dropped = 0

    def __call__(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8", newline="\n") as lines:
            for batch in chunks((line.rstrip("\n").split("\t") for line in lines), BATCH):
                srcs, tgts = [s for s, _ in batch], [t for _, t in batch]
                src_ids = self.tokenizer(srcs, add_special_tokens=True)["input_ids"]
                for s, t, si, ti in zip(srcs, tgts, src_ids, self.sp.encode(tgts)):
                    if len(si) > self.max_src or len(ti) > self.max_tgt:
                        self.dropped += 1
                    else:
                        self.kept += 1
                        yield {"src": s, "tgt": t, "src_ids": si, "tgt_ids": ti}
                self.advance(len(batch))


def _train_split(datasets, rows: TrainRows, work: Path, stats: SplitStats, label: str):
    """Stream `rows` into an Arrow file under `work`; a fresh fingerprint means no cache reuse."""
    try:
        split = datasets.Dataset.from_generator(
            rows, features=features(datasets), cache_dir=str(work / "arrow"),
            fingerprint=uuid.uuid4().hex)
    except ValueError:
        if rows.kept:
            raise
        split = None  # `datasets` cannot build an empty split from a generator
    if rows.dropped:
        stats.dropped["too_long_tokens"] += rows.dropped
    if split is None:
        raise no_training_pairs(label, stats)
    return split


def heldout_split(datasets, pairs: list[Pair], tokenizer, sp, hard: tuple[int | None, int],
                  stats: SplitStats, protector: Protector | None = None):
    """A dev/test Dataset and the pairs it kept: only pairs the model cannot take are dropped
    (`exceeds_model_limits`: source beyond the encoder's positions, target beyond the decoder's).
    With `protector`, the ids (not the text) of pairs with the same spans on both sides are
    those of the masked pair, as in training."""
    columns = {"src": [], "tgt": [], "src_ids": [], "tgt_ids": []}
    kept = []
    for batch in chunks(pairs, BATCH):
        texts = [(protector and protector.mask_pair(p.src, p.tgt)) or (p.src, p.tgt)
                 for p in batch]
        src_ids = tokenizer([s for s, _ in texts], add_special_tokens=True)["input_ids"]
        for pair, si, ti in zip(batch, src_ids, sp.encode([t for _, t in texts])):
            if (hard[0] is not None and len(si) > hard[0]) or len(ti) > hard[1]:
                stats.dropped["exceeds_model_limits"] += 1
                continue
            kept.append(pair)
            for key, value in zip(columns, (pair.src, pair.tgt, si, ti)):
                columns[key].append(value)
    return datasets.Dataset.from_dict(columns, features=features(datasets)), kept


def write_heldout_text(out: Path, name: str, pairs: list[Pair]) -> None:
    """`name`.src and `name`.ref (and .ref2 where every pair has one), line-aligned."""
    write_lines(out / f"{name}.src", [p.src for p in pairs])
    write_lines(out / f"{name}.ref", [p.tgt for p in pairs])
    if pairs and all(p.ref2 is not None for p in pairs):
        write_lines(out / f"{name}.ref2", [p.ref2 for p in pairs])


def build_manifest(config: Config, inputs: list[dict], cleaned: CleanedCorpus, sp_size: int,
                   tokenizer, cover: dict, started: float, out: Path) -> dict:
    import datasets
    import sentencepiece
    import transformers

    files = {name: {"src": f"{name}.src", "refs": sorted(p.name for p in out.glob(f"{name}.ref*"))}
             for name in ("dev", "test")}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 2),
        "inputs": inputs,
        "languages": {"src": config.data.src_lang, "tgt": config.data.tgt_lang},
        "encoder": {"name": config.model.encoder, "tokenizer_dir": "encoder_tokenizer",
                    "tokenizer_class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
                    "unk_id": tokenizer.unk_token_id},
        "target_vocab": {"model": "spm.model", "type": config.data.sp_model_type,
                         "size": sp_size, "requested_size": config.data.tgt_vocab_size,
                         "pad_id": PAD, "unk_id": UNK, "bos_id": BOS, "eos_id": EOS},
        "splits": {name: {"read": s.read, "kept": s.kept, "carved": name in cleaned.carved,
                          "dropped": s.drops_in_order()}
                   for name, s in cleaned.stats.items()},
        "files": files,
        "coverage": cover,
        "versions": {"nmt_bert": __version__, "datasets": datasets.__version__,
                     "sentencepiece": sentencepiece.__version__,
                     "transformers": transformers.__version__},
    }


def print_summary(console: Console, manifest: dict, out: Path) -> None:
    console.print(summary_table(manifest, f"prepared {out}"))
    cover, sp = manifest["coverage"], manifest["target_vocab"]
    target = (f"target: {sp['size']:,} of the encoder's own pieces" if sp["type"] == "encoder"
              else f"target SentencePiece {sp['type']}, {sp['size']:,} pieces (asked for "
                   f"{sp['requested_size']:,})")
    console.print(f"encoder ids used by train+dev: {cover['encoder_ids_used']:,} of "
                  f"{cover['encoder_vocab_size']:,}; {target}; "
                  f"{manifest['wall_time_s']:.1f} s", highlight=False)


def _hard_limit(tokenizer) -> int | None:
    limit = tokenizer.model_max_length
    return limit if limit and limit < 1_000_000 else None  # tokenizers without one say 1e30


def _progress(console: Console) -> Progress:
    """Live bars on a terminal; elsewhere a line as each step starts and every half minute."""
    return progress_bar(console, SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), unit="pairs", announce=True)


@contextlib.contextmanager
def _datasets_quiet(datasets) -> Iterator[None]:
    """Our own progress bars replace the `datasets` ones while preparing."""
    was_enabled = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
