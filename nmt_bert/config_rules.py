"""What each config key may be: the range of every number and the rules across keys.

config.py declares the keys and their defaults; config_fields.py coerces values to their
types and applies the ranges below. `validate` runs on every loaded config (defaults,
recipe, `--set`) and on the config a checkpoint carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nmt_bert.config_fields import check_ranges
from nmt_bert.data.protected_spans import check_protection
from nmt_bert.errors import UserError

if TYPE_CHECKING:
    from nmt_bert.config import Config

# The allowed range of every numeric key, by the names of config_fields.RANGE_TESTS
# (`validate` also requires every float to be finite).
FIELD_RANGES: dict[str, str] = {
    "data.min_chars": "positive", "data.max_chars": "positive",
    "data.max_src_tokens": "positive", "data.max_tgt_tokens": "positive",
    "data.max_length_ratio": ">= 1", "data.ratio_min_chars": ">= 0",
    "data.dev_fraction": "in [0, 1)",
    "data.test_fraction": "in [0, 1)", "data.limit_train": ">= 0",
    "data.tgt_vocab_size": "positive", "data.sp_character_coverage": "in (0, 1]",
    "data.sp_max_sentences": "positive",
    "model.encoder_layers": ">= 0", "model.adapter_hidden": "positive",
    "model.d_model": "positive", "model.decoder_layers": "positive", "model.heads": "positive",
    "model.ffn_dim": "positive", "model.dropout": "in [0, 1)",
    "model.attention_dropout": "in [0, 1)", "model.activation_dropout": "in [0, 1)",
    "model.max_target_positions": "positive",
    "train.stage1_steps": ">= 0", "train.stage2_steps": ">= 0", "train.lr": "positive",
    "train.stage2_lr": ">= 0", "train.encoder_lr": ">= 0", "train.warmup_steps": ">= 0",
    "train.stage2_warmup_steps": ">= 0", "train.batch_tokens": "positive",
    "train.stage1_source_multiple": "positive", "train.stage1_target_multiple": "positive",
    "train.accumulate": "positive", "train.label_smoothing": "in [0, 1)",
    "train.clip_norm": "positive", "train.weight_decay": ">= 0",
    "train.adam_beta1": "in [0, 1)", "train.adam_beta2": "in [0, 1)",
    "train.adam_eps": "positive", "train.cache_batch_tokens": "positive",
    "train.collapse_ratio": "in [0, 1)", "train.max_rollbacks": ">= 0",
    "train.max_minutes": ">= 0", "train.tail_evals": ">= 0", "train.stage2_share": "in [0, 1)",
    "train.seed": "in [0, 2**32)", "train.eval_every": "positive",
    "train.valid_beam": "positive", "train.patience": ">= 0", "train.average_last": ">= 0",
    "train.log_every": "positive", "train.max_bad_steps": "positive", "train.threads": ">= 0",
    "decode.beam_size": "positive", "decode.length_penalty": ">= 0",
    "decode.max_len_a": ">= 0", "decode.max_len_b": ">= 0", "decode.batch_size": "positive",
    "decode.nbest": "positive", "decode.chunk_lines": "positive",
    "decode.buffer_lines": "positive",
}


def validate(config: Config) -> None:
    """Reject a value outside its range, or a combination that a single type cannot express.

    Every float must be finite and every numeric key within its FIELD_RANGES entry. The
    UserError names the first offending key (in declaration order) and what it must be.
    """
    check_ranges(config, FIELD_RANGES)
    data, m, t, d = config.data, config.model, config.train, config.decode
    if data.dev_fraction + data.test_fraction >= 1:
        raise UserError("data.dev_fraction + data.test_fraction must be < 1 to leave training "
                        f"data, got {data.dev_fraction} + {data.test_fraction}")
    if data.max_chars < data.min_chars:
        raise UserError(f"data.max_chars ({data.max_chars}) must be >= data.min_chars "
                        f"({data.min_chars})")
    if m.decoder_init == "encoder" and data.target_tokenizer != "encoder":
        raise UserError("model.decoder_init=encoder needs data.target_tokenizer=encoder (the "
                        "decoder reads and writes the encoder's own pieces)")
    if m.d_model % m.heads:
        raise UserError(f"model.d_model ({m.d_model}) must be divisible by model.heads ({m.heads})")
    if d.nbest > d.beam_size:
        raise UserError(f"decode.nbest ({d.nbest}) cannot exceed decode.beam_size ({d.beam_size})")
    if data.max_tgt_tokens + 1 > m.max_target_positions:
        raise UserError("data.max_tgt_tokens + 1 must not exceed model.max_target_positions")
    if t.stage1_steps + t.stage2_steps == 0:
        raise UserError("train.stage1_steps and train.stage2_steps must not both be 0")
    complaint = check_protection(data.protect, data.protect_patterns, "data.protect")
    if complaint is not None:
        raise UserError(complaint)
