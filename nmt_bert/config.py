"""Typed configuration: the one home of every default.

Recipes (YAML) and `--set section.key=value` overrides only change fields declared here;
an unknown key or a value of the wrong type is rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt_bert.errors import UserError


@dataclass
class DataConfig:
    src_lang: str = "es"  # only labels outputs; any language the encoder knows works
    tgt_lang: str = "en"
    min_chars: int = 1  # empty lines carry no signal
    max_chars: int = 1000  # longer "sentences" are almost always misaligned paragraphs
    max_src_tokens: int = 200  # well inside BERT's 512 positions; longer pairs are dropped
    max_tgt_tokens: int = 200  # plus BOS/EOS must fit model.max_target_positions
    max_length_ratio: float = 2.5  # char-length ratio beyond which a pair is a misalignment
    dev_fraction: float = 0.015  # carved out by hashing the pair when no dev set is given
    test_fraction: float = 0.015
    limit_train: int = 0  # keep the first N cleaned train pairs (0 = all): quick runs, scaling
    tgt_vocab_size: int = 8000  # small target vocab: cheaper softmax, enough for one language
    sp_model_type: Literal["unigram", "bpe"] = "unigram"
    sp_character_coverage: float = 1.0  # alphabetic target languages need every character
    sp_max_sentences: int = 1_000_000  # SentencePiece samples this many lines at most


@dataclass
class ModelConfig:
    encoder: str = "multilingual-e5-small"  # bundled offline name, local directory or hub id
    encoder_layers: int = 0  # keep only the first N encoder layers (0 = all)
    # random: the encoder's architecture and tokenizer with fresh weights (the no-pretraining
    # ablation); train it from the start (stage1_steps 0), a frozen random encoder reads noise
    encoder_init: Literal["pretrained", "random"] = "pretrained"
    prune_encoder_vocab: bool = True  # keep only embedding rows the corpus uses (250k -> ~15k)
    adapter: Literal["mlp", "linear", "none"] = "mlp"  # "none" only where widths match
    adapter_hidden: int = 1024
    d_model: int = 256  # small decoder: trains at useful speed on 2 CPU cores
    decoder_layers: int = 3
    heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    max_target_positions: int = 256


@dataclass
class TrainConfig:
    stage1_steps: int = 6000  # encoder frozen: decoder and adapter learn to read it
    stage2_steps: int = 2000  # encoder unfrozen with its own, smaller learning rate
    lr: float = 7e-4  # peak rate for decoder and adapter in stage 1
    stage2_lr: float = 2e-4  # peak rate for decoder and adapter in stage 2
    encoder_lr: float = 3e-5  # peak rate for the encoder in stage 2 (Imamura & Sumita 2019)
    warmup_steps: int = 500  # linear warmup at the start of each stage
    stage2_warmup_steps: int = 200
    schedule: Literal["inverse_sqrt", "linear", "constant"] = "inverse_sqrt"
    batch_tokens: int = 6000  # padded source + target tokens per batch
    accumulate: int = 1  # gradient accumulation: effective batch = accumulate x batch_tokens
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98  # the Transformer's usual value: steadier with inverse-sqrt
    seed: int = 1
    # auto: bf16 autocast where the hardware runs it natively (bf16 GPUs, AVX512-BF16/AMX
    # CPUs: 1.4-1.5x faster decoder steps on 2 cores), fp32 elsewhere.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    cache_encoder: bool = True  # stage 1 reads encoder states from disk instead of recomputing
    cache_dtype: Literal["float16", "float32"] = "float16"  # halves the cache; loss moves < 1e-3
    freeze_embeddings_stage2: bool = True  # stage 2 trains the layers, not the word table
    eval_every: int = 500  # steps between dev loss + BLEU and checkpoints
    valid_beam: int = 1  # greedy during validation keeps it cheap; final scoring uses decode
    patience: int = 0  # stop after this many evals without a better dev BLEU (0 = never)
    average_last: int = 0  # keep the last K eval checkpoints and average them at the end (0 = off)
    log_every: int = 50
    max_bad_steps: int = 20  # consecutive NaN/inf steps before rolling back
    threads: int = 0  # torch CPU threads (0 = torch's default)


@dataclass
class DecodeConfig:
    beam_size: int = 5
    length_penalty: float = 1.0  # score / length**alpha (alpha 0 = raw log-probability)
    max_len_a: float = 1.5  # hypotheses stop at a * source_tokens + b target tokens
    max_len_b: int = 10
    batch_size: int = 32  # sentences per batch, sorted by length
    nbest: int = 1


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(config)


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Build a Config from nested dicts, rejecting unknown sections, keys and bad types."""
    config = Config()
    apply_dict(config, raw, source)
    return config


def apply_dict(config: Config, raw: Any, source: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for section_name, values in raw.items():
        section = _section(config, str(section_name), source)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{source}: section '{section_name}' must be a mapping")
        for key, value in values.items():
            _set_field(section, f"{section_name}.{key}", str(key), value, source)


def apply_override(config: Config, assignment: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (1e-4, true, [a])."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected section.key=value")
    dotted, text = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2:
        raise UserError(f"--set {assignment!r}: the key must look like section.key, e.g. train.lr")
    section = _section(config, parts[0], "--set")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    _set_field(section, dotted.strip(), parts[1], value, "--set")


def load_config(recipe: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the recipe (if any), then each `--set` override in order."""
    config = Config()
    if recipe is not None:
        apply_dict(config, read_yaml(recipe), str(recipe))
    for assignment in overrides or []:
        apply_override(config, assignment)
    validate(config)
    return config


def read_yaml(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe not found" if not path.exists() else f"{path}: not a file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}:{where} invalid YAML: {getattr(err, 'problem', err)}") from None


def save_config(config: Config, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def validate(config: Config) -> None:
    """Cross-field checks that a single type cannot express."""
    m, t, d = config.model, config.train, config.decode
    positive = {
        "model.d_model": m.d_model, "model.heads": m.heads, "model.ffn_dim": m.ffn_dim,
        "model.decoder_layers": m.decoder_layers, "train.batch_tokens": t.batch_tokens,
        "train.accumulate": t.accumulate, "decode.beam_size": d.beam_size,
        "decode.batch_size": d.batch_size, "data.tgt_vocab_size": config.data.tgt_vocab_size,
        "train.eval_every": t.eval_every, "decode.nbest": d.nbest,
    }
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"{key} must be positive, got {value}")
    if m.d_model % m.heads:
        raise UserError(f"model.d_model ({m.d_model}) must be divisible by model.heads ({m.heads})")
    if d.nbest > d.beam_size:
        raise UserError(f"decode.nbest ({d.nbest}) cannot exceed decode.beam_size ({d.beam_size})")
    if config.data.max_tgt_tokens + 1 > m.max_target_positions:
        raise UserError("data.max_tgt_tokens + 1 must not exceed model.max_target_positions")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise UserError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if t.stage1_steps < 0 or t.stage2_steps < 0 or t.stage1_steps + t.stage2_steps == 0:
        raise UserError("train.stage1_steps and train.stage2_steps must be >= 0 and not both 0")


def _section(config: Config, name: str, source: str) -> Any:
    names = [f.name for f in dataclasses.fields(config)]
    if name not in names:
        raise UserError(f"{source}: unknown section '{name}' (expected one of: {', '.join(names)})")
    return getattr(config, name)


def _set_field(section: Any, dotted: str, key: str, value: Any, source: str) -> None:
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise UserError(f"{source}: unknown key '{dotted}' (known keys: {known})")
    setattr(section, key, _coerce(value, hints[key], dotted, source))


def _coerce(value: Any, expected: Any, dotted: str, source: str) -> Any:
    """Check `value` against a field's declared type; ints are accepted where floats are."""
    origin = typing.get_origin(expected)
    if origin is Literal:
        choices = typing.get_args(expected)
        if value in choices:
            return value
        raise UserError(
            f"{source}: '{dotted}' must be one of {', '.join(map(str, choices))}; got {value!r}"
        )
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(expected)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], dotted, source)
    if expected is float and isinstance(value, str):
        # YAML 1.1 reads "2e-4" (no dot) as a string; users mean a number.
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(expected)
    if ok is None:
        raise TypeError(f"config field {dotted} has unsupported type {expected}")
    if not ok:
        raise UserError(
            f"{source}: '{dotted}' must be {expected.__name__}; got {value!r} "
            f"({type(value).__name__})"
        )
    return float(value) if expected is float else value
