"""`nmt-bert export`: a checkpoint (or run) directory -> a CTranslate2 export directory.

The encoder reads the whole pretrained word table where `decode.full_vocab` allows it
(`nmt_bert.model.full_vocab`: the same rule as PyTorch translation), else the checkpoint's
own (possibly pruned) table. Either way the CTranslate2 model takes one token string per
row of that table; `Ct2Translator` maps encoder-tokenizer ids to those rows itself, so no
unknown string ever reaches CTranslate2.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nmt_bert import __version__
from nmt_bert.atomic import atomic_dir, check_replaceable
from nmt_bert.config import config_from_dict, read_yaml, save_config
from nmt_bert.errors import UserError
from nmt_bert.export.export_dir import ExportDir, is_export
from nmt_bert.export.runtime import import_ctranslate2
from nmt_bert.export.spec import build_spec, check_exportable, decoder_epsilon, residual_scale
from nmt_bert.model.special_tokens import BOS, EOS, UNK

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")  # CTranslate2's weight types
FLOAT16_COMPUTE = ("float16", "int8_float16")  # no epsilon fold (export.spec)
WHAT = "an nmt-bert export"


def export_model(path: Path, out: Path, quantization: str = "float32",
                 note: Callable[[str], None] | None = None) -> ExportDir:
    """Write the export of the checkpoint (or run) at `path` to `out`, atomically.

    Fails with one line before loading any weights when the adapter cannot be expressed
    (`spec.check_exportable`), the quantization is unknown or `out` is not replaceable.
    `note` receives one-line notes (default: stderr): why the pruned table is kept, where
    it is, and what was written.
    """
    from nmt_bert.decode.translator import stderr_note
    from nmt_bert.hashing import file_sha256
    from nmt_bert.model.checkpoint import WEIGHTS, load_checkpoint, resolve_checkpoint_dir
    from nmt_bert.model.encoders import encoder_max_tokens
    from nmt_bert.model.full_vocab import choose_full_vocab
    from nmt_bert.model.vocab import target_vocab_file

    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization {quantization}: expected one of "
                        f"{', '.join(QUANTIZATIONS)}")
    source = resolve_checkpoint_dir(Path(path))
    config_file = source / "config.yaml"
    check_exportable(config_from_dict(read_yaml(config_file), str(config_file)).model,
                     str(config_file))
    ct2 = import_ctranslate2()
    check_replaceable(Path(out), is_export, WHAT)
    ckpt = load_checkpoint(source)
    table = ckpt.model.encoder.get_input_embeddings().weight
    choice = choose_full_vocab(ckpt.config, ckpt.source_vocab, table)
    if choice.note is not None:
        (note or stderr_note)(choice.note)
    vocab = ckpt.source_vocab
    if choice.weight is not None:
        rows, word_table, row_ids = "pretrained", choice.weight, range(vocab.original_size)
    elif vocab.kept_ids is None:
        rows, word_table, row_ids = "complete", table, range(vocab.original_size)
    else:
        rows, word_table, row_ids = "pruned", table, vocab.kept_ids
    target_tokens = ckpt.target_vocab.piece_names()
    specials = {"unk": target_tokens[UNK], "bos": target_tokens[BOS], "eos": target_tokens[EOS]}
    source_tokens = source_token_names(ckpt.tokenizer, row_ids, vocab.unk_id, specials["unk"])
    fold = quantization not in FLOAT16_COMPUTE
    spec = build_spec(ckpt.model, word_table, source_tokens, target_tokens, specials, fold)
    manifest: dict[str, Any] = {
        "quantization": quantization,
        "source_table": {"rows": rows, "size": len(source_tokens), "note": choice.note},
        "max_source_tokens": encoder_max_tokens(ckpt.model.encoder, ckpt.tokenizer),
        "layer_norm_epsilon": {
            "written": spec.config.layer_norm_epsilon,
            "decoder_trained_with": decoder_epsilon(ckpt.model.decoder),
            "decoder_stream_scale": (residual_scale(spec.config.layer_norm_epsilon,
                                                    ckpt.model.decoder) if fold else 1.0)},
        "source": {"checkpoint": str(ckpt.path.resolve()), "meta": ckpt.meta,
                   "weights_sha256": file_sha256(ckpt.path / WEIGHTS)},
        "versions": {"nmt_bert": __version__, "ctranslate2": ct2.__version__},
    }
    with atomic_dir(Path(out), ours=is_export, what=WHAT) as tmp:
        export = ExportDir(tmp)
        export.ct2.mkdir()
        spec.validate()
        spec.optimize(quantization=quantization)
        spec.save(str(export.ct2))
        shutil.copytree(ckpt.path / "encoder_tokenizer", export.tokenizer_dir)
        target = target_vocab_file(ckpt.path)
        shutil.copy(target, export.path / target.name)
        ckpt.source_vocab.save(export.source_vocab)
        save_config(ckpt.config, export.config)
        export.write_manifest(manifest)
    size = sum(p.stat().st_size for p in ExportDir(out).ct2.iterdir()) / 2**20
    (note or _stderr_line)(f"exported {ckpt.path} to {out}: {quantization}, {size:.1f} MB, "
                           f"{len(source_tokens)} source rows ({rows} word table)")
    return ExportDir(out)


def _stderr_line(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(text, markup=False, highlight=False, soft_wrap=True)


def source_token_names(tokenizer: Any, row_ids: Sequence[int], unk_id: int,
                       unk_name: str) -> list[str]:
    """One distinct token string per word-table row: the tokenizer's piece for its id.

    The unknown token's row is named `unk_name` (CTranslate2 keeps one unknown-token string
    for both vocabularies and would append it to a vocabulary lacking it); a piece already
    used, or an id the tokenizer does not name, gets a placeholder of its own.
    """
    size = len(tokenizer)
    ids = list(row_ids)
    pieces = tokenizer.convert_ids_to_tokens([i for i in ids if i < size])
    names, used = [], {unk_name}
    for row, (i, piece) in enumerate(zip(ids, pieces + [None] * (len(ids) - len(pieces)))):
        if i == unk_id:
            names.append(unk_name)
            continue
        if not isinstance(piece, str) or piece in used:
            piece = f"<nmt-bert-row-{row}>"
        used.add(piece)
        names.append(piece)
    return names
