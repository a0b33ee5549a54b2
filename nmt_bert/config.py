"""Typed configuration: the one home of every default a user can tune.

(Fixed facts stay with their owners: special ids in model/special_tokens.py, SentencePiece's
own minimum sample in data/prepare.py.)

Recipes (YAML) and `--set section.key=value` overrides only change fields declared here
(config_fields.py reads them in); an unknown key, a value of the wrong type or one outside
its range (config_rules.FIELD_RANGES) is rejected with a one-line message naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt_bert.config_fields import apply_dict, apply_override
from nmt_bert.config_rules import validate
from nmt_bert.data.protected_spans import DEFAULT_KINDS
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
    ratio_min_chars: int = 10  # shorter sides say little about alignment ("Sí." / "Yes.")
    dev_fraction: float = 0.015  # carved out by hashing the pair when no dev set is given
    test_fraction: float = 0.015
    limit_train: int = 0  # keep the first N cleaned train pairs (0 = all): quick runs, scaling
    tgt_vocab_size: int = 8000  # small target vocab: cheaper softmax, enough for one language
    sp_model_type: Literal["unigram", "bpe"] = "unigram"
    sp_character_coverage: float = 1.0  # alphabetic target languages need every character
    sp_max_sentences: int = 1_000_000  # SentencePiece samples this many lines at most
    # sentencepiece: a target SentencePiece of tgt_vocab_size pieces; encoder: the encoder's
    # own tokenizer, pruned to the pieces the target corpus uses (model.decoder_init=encoder)
    target_tokenizer: Literal["sentencepiece", "encoder"] = "sentencepiece"
    # Protected spans (data/protected_spans.py): kinds of text that must come through exactly
    # (printf/brace formats, variables, markup, URLs, e-mails, paths; "identifier" on request)
    # and the user's own regexes. Pairs whose sides carry the same spans train on placeholders;
    # translation masks and restores them with the same setting, read from the checkpoint.
    protect: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    protect_patterns: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    encoder: str = "multilingual-e5-small"  # bundled offline name, local directory or hub id
    encoder_layers: int = 0  # keep only the first N encoder layers (0 = all)
    # random: the encoder's architecture and tokenizer with fresh weights (the no-pretraining
    # ablation); train it from the start (stage1_steps 0), a frozen random encoder reads noise
    encoder_init: Literal["pretrained", "random"] = "pretrained"
    prune_encoder_vocab: bool = True  # keep only embedding rows the corpus uses (250k -> ~15k)
    # mlp/linear end in a LayerNorm; affine (one Linear) is the kind `export` can fold into
    # the decoder exactly; "none" only where widths match
    adapter: Literal["mlp", "linear", "none", "affine"] = "mlp"
    adapter_hidden: int = 1024
    d_model: int = 256  # small decoder: trains at useful speed on 2 CPU cores
    decoder_layers: int = 3
    heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1  # on embeddings, the adapter and each decoder sublayer's output
    # inside the decoder: on the attention weights and on the FFN's hidden units (None: the
    # rate of model.dropout). With torch's masks the full recipe's stage-1 step on 2 cores
    # was 352 ms with all three at 0.1 and 299 ms with these two at 0, and an hour of the
    # cheaper steps gave no better model; with model/dropout.py's masks all three cost about
    # 5% of a step (bench/README.md, "Dropout on CPU")
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    max_target_positions: int = 256
    # random: the pre-LN decoder above (BERT2RND). encoder: BERT2BERT (Rothe et al. 2020), a
    # post-LN decoder whose embeddings and layers start from the encoder checkpoint, causal,
    # with new cross-attention; its width, heads and FFN are the encoder's (d_model, heads and
    # ffn_dim do not apply) and it needs data.target_tokenizer=encoder
    decoder_init: Literal["random", "encoder"] = "random"
    # with decoder_init=encoder: which decoder_layers of the pretrained stack it copies
    decoder_source_layers: Literal["first", "last"] = "first"


@dataclass
class TrainConfig:
    stage1_steps: int = 6000  # encoder frozen: decoder and adapter learn to read it
    stage2_steps: int = 2000  # encoder unfrozen with its own, smaller learning rate
    lr: float = 7e-4  # peak rate for decoder and adapter in stage 1
    stage2_lr: float = 2e-4  # peak rate for decoder and adapter in stage 2
    encoder_lr: float = 3e-5  # peak rate for the encoder in stage 2 (Imamura & Sumita 2019)
    # stage2_lr and encoder_lr may be 0: that group then keeps its weights through stage 2
    warmup_steps: int = 500  # linear warmup at the start of each stage
    stage2_warmup_steps: int = 200
    schedule: Literal["inverse_sqrt", "linear", "constant"] = "inverse_sqrt"
    batch_tokens: int = 6000  # padded source + target tokens per batch
    # which side's length a batch is sorted by first, so the least padded: auto sorts stage 1
    # by target (the decoder's work) and stage 2 by source (the encoder trains); "source"
    # everywhere gives the batches of runs made before this setting existed
    batch_order: Literal["auto", "source", "target"] = "auto"
    # Stage-1 padded lengths rounded up to these multiples, so that its batches come in a
    # few dozen shapes whose kernels oneDNN (torch's CPU matmuls) builds once (fast recipe
    # on 2 cores of an Intel Xeon with AMX: 1.37x the stage-1 tokens/s, no lower test BLEU
    # at equal tokens; bench/README.md, "Batch shapes that come back"). Stage 2 keeps exact
    # lengths. 1 and 1: the batches of earlier trees.
    stage1_source_multiple: int = 32  # cheap to pad in stage 1: cached states, no encoder
    stage1_target_multiple: int = 4
    accumulate: int = 1  # gradient accumulation: effective batch = accumulate x batch_tokens
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # global gradient-norm ceiling; > 0, clipping is always on
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98  # the Transformer's usual value: steadier with inverse-sqrt
    adam_eps: float = 1e-8  # AdamW's usual epsilon
    seed: int = 1
    # auto: bf16 autocast where the hardware runs it natively (bf16 GPUs, AVX512-BF16/AMX
    # CPUs: 1.4-1.5x faster decoder steps on 2 cores), fp32 elsewhere.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    cache_encoder: bool = True  # stage 1 reads encoder states from disk instead of recomputing
    cache_dtype: Literal["float16", "float32"] = "float16"  # halves the cache; loss moves < 1e-3
    cache_batch_tokens: int = 8192  # source tokens per encoder call while building the cache
    # where the stage-1 state cache lives ("" = $NMT_BERT_CACHE/encoder-states, see caches.py);
    # never under the prepared data, which training only reads
    cache_dir: str = ""
    # with model.decoder_init=encoder, what of the decoder trains in stage 1: all of it, or
    # only what is new (cross-attention and its LayerNorms); stage 2 trains all of it
    stage1_decoder: Literal["all", "new"] = "all"
    freeze_embeddings_stage2: bool = True  # stage 2 trains the layers, not the word table
    eval_every: int = 500  # steps between dev loss + BLEU and checkpoints
    valid_beam: int = 1  # greedy during validation keeps it cheap; final scoring uses decode
    patience: int = 0  # stop after this many evals without a better dev BLEU (0 = never)
    average_last: int = 0  # keep the last K eval checkpoints and average them at the end (0 = off)
    log_every: int = 50
    max_bad_steps: int = 20  # consecutive NaN/inf steps before rolling back
    # A wall-clock budget for the whole `train` command, in minutes (0 = the fixed steps
    # above, for exact reproduction); under `pipeline`, for the whole job (prepare, train,
    # translate and score the test set). With one, the steps, the linear decay's end, the
    # evaluation points (as many as eval_every gives for the configured steps) and the
    # stage split are fitted to the time, measured as training goes (train/budget.py).
    max_minutes: float = 0.0
    stage2_share: float = 0.25  # with a budget: stage 2's share of the training time (the
    # full recipe's measured split: 800 unfrozen steps took a quarter of its hour)
    # with a budget: time kept at its end for work that follows training inside the same
    # budget, in dev evaluations (the slowest measured); `pipeline` sets it for its test set
    tail_evals: float = 0.0
    collapse_ratio: float = 0.5  # stage-2 dev BLEU below this share of the best: roll back
    max_rollbacks: int = 3  # stage-2 roll-backs before giving up with an error
    threads: int = 0  # torch CPU threads (0 = torch's default)


@dataclass
class DecodeConfig:
    beam_size: int = 5
    length_penalty: float = 1.0  # score / length**alpha (alpha 0 = raw log-probability)
    max_len_a: float = 1.5  # hypotheses stop at a * source_tokens + b target tokens
    max_len_b: int = 10
    batch_size: int = 32  # sentences per batch, sorted by length
    nbest: int = 1
    # Lines read, length-sorted and translated together before their output is written:
    # memory is bounded by this, not by the input's length. Sorting a few thousand lines
    # already fills each batch with near-equal lengths, and the first output of a file
    # comes after one chunk (under a minute of beam-5 work on 2 CPU cores).
    chunk_lines: int = 2000
    # From a pipe or terminal, lines that have arrived are translated as soon as input
    # pauses and at least this many are waiting (fairseq-interactive's --buffer-size): 1
    # answers each line typed or sent alone at once, while a fast pipe still fills chunks.
    buffer_lines: int = 1
    # Source pieces the training corpus never had: auto reads them through the whole
    # pretrained word table where the embeddings were never trained (frozen in both stages)
    # and the encoder is available offline, else as unknown (with a note); on requires the
    # table; off keeps the pruned one. See nmt_bert/model/full_vocab.py.
    full_vocab: Literal["auto", "on", "off"] = "auto"
    # A translation that drops a protected span gets it appended and `translate` exits 1
    # after writing everything (off: the span problem is only counted in the summary).
    strict_spans: bool = False
    # With masked placeholders, our search emits each of a line's placeholders exactly once
    # and no other (EOS waits for them, and a hypothesis with no more room before its length
    # limit than it has placeholders missing may only emit those); off leaves the model free
    # (and its misses counted).
    # CTranslate2 exports cannot take a per-line constraint: there spans are only restored.
    constrain_spans: bool = True


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


RECIPES = Path(__file__).resolve().parent / "recipes"  # bundled recipes (package data)


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def resolve_recipe(recipe: Path | str) -> Path:
    """A recipe file, or the name of a bundled one (`fast-cpu`, `bible-es-en`, ...)."""
    path = Path(recipe)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    bundled = RECIPES / f"{recipe}.yaml"
    if bundled.is_file():
        return bundled
    raise UserError(f"recipe {recipe!r}: no such file and no bundled recipe of that name "
                    f"(bundled: {', '.join(bundled_recipes())})")


def load_config(recipe: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the recipe (a file or a bundled name), then each `--set` override."""
    config = Config()
    if recipe is not None:
        recipe = resolve_recipe(recipe)
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
