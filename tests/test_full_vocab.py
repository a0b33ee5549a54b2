"""decode.full_vocab: the whole pretrained word table at translation time (PyTorch search)."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_encoder
from helpers_model import build_tiny_checkpoint, tiny_source_lines
from safetensors.torch import load_file

from nmt_bert.decode.translator import TranslateStats, Translator
from nmt_bert.errors import UserError

CORPUS = tiny_source_lines(40, seed=1)  # the "training corpus" the checkpoints are pruned to
UNSEEN = "dios house zzz rey"  # "house" and z/##z/##z are not in the Spanish corpus


def pruned_checkpoint(tmp_path, encoder_dir, name="pruned", **train):
    return build_tiny_checkpoint(tmp_path / name, encoder_dir, prune_to=CORPUS,
                                 model={"encoder": str(encoder_dir)}, train=train)


def open_with(path, mode, notes=None):
    return Translator.from_checkpoint(path, overrides=[f"decode.full_vocab={mode}"],
                                      note=(notes.append if notes is not None else None))


def encoder_states(translator, lines):
    """Encoder output (B, S, E) for `lines`, through the translator's own id -> row map."""
    encoded = translator.encode_sources(lines)
    width = max(len(ids) for ids in encoded)
    ids = torch.zeros(len(lines), width, dtype=torch.long)
    mask = torch.zeros(len(lines), width, dtype=torch.bool)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = translator.rows[torch.tensor(seq)]
        mask[row, : len(seq)] = True
    with torch.inference_mode():
        return translator.model.encode_states(ids, mask), mask


def test_full_table_gives_identical_states_in_vocabulary_and_pretrained_rows_outside(
        tiny_encoder_dir, tmp_path):
    path = pruned_checkpoint(tmp_path, tiny_encoder_dir)
    notes = []
    pruned, full = open_with(path, "off"), open_with(path, "auto", notes)
    assert notes == []
    pretrained = load_file(str(tiny_encoder_dir / "model.safetensors"))
    table = next(v for k, v in pretrained.items() if k.endswith("word_embeddings.weight"))
    assert full.model.encoder.get_input_embeddings().weight.shape == table.shape
    assert pruned.model.encoder.get_input_embeddings().num_embeddings < table.size(0)

    in_vocab = CORPUS[:8]
    a, mask = encoder_states(pruned, in_vocab)
    b, _ = encoder_states(full, in_vocab)
    assert torch.equal(a[mask], b[mask])  # bit-identical, not merely close

    # Outside the training vocabulary: each piece is read through its own pretrained row.
    ids = full.tokenizer(UNSEEN, add_special_tokens=False)["input_ids"]
    unseen = [i for i in ids if i not in set(pruned.source_vocab.kept_ids)]
    assert len(unseen) == 4
    rows = full.model.encoder.get_input_embeddings().weight
    assert torch.equal(rows[full.rows[torch.tensor(unseen)]], table[torch.tensor(unseen)])
    assert all(int(pruned.rows[i]) == int(pruned.rows[full.tokenizer.unk_token_id])
               for i in unseen)  # ... where the pruned table reads them all as <unk>
    a, mask = encoder_states(pruned, [UNSEEN])
    b, _ = encoder_states(full, [UNSEEN])
    assert not torch.equal(a[mask], b[mask])

    pruned.stats = TranslateStats()
    full.stats = TranslateStats()
    pruned.translate([UNSEEN])
    full.translate([UNSEEN])
    assert (pruned.stats.oov_pieces, pruned.stats.pretrained_pieces) == (4, 0)
    assert (full.stats.oov_pieces, full.stats.pretrained_pieces) == (0, 4)


def test_trained_embeddings_keep_the_pruned_table_and_say_so(tiny_encoder_dir, tmp_path):
    path = pruned_checkpoint(tmp_path, tiny_encoder_dir, freeze_embeddings_stage2=False,
                             stage2_steps=10, encoder_lr=1e-4)
    notes = []
    translator = open_with(path, "auto", notes)
    assert translator.source_vocab.kept_ids is not None
    assert len(notes) == 1 and "freeze_embeddings_stage2=false" in notes[0]
    assert "\n" not in notes[0]
    with pytest.raises(UserError, match="decode.full_vocab=on: the word embeddings were trained"):
        open_with(path, "on")


def test_frozen_encoder_in_stage_2_still_counts_as_untrained(tiny_encoder_dir, tmp_path):
    path = pruned_checkpoint(tmp_path, tiny_encoder_dir, freeze_embeddings_stage2=False,
                             stage2_steps=10, encoder_lr=0.0)  # encoder_lr 0: weights kept
    notes = []
    assert open_with(path, "auto", notes).source_vocab.kept_ids is None and notes == []


def test_missing_encoder_falls_back_to_the_checkpoint_alone(tiny_encoder_dir, tmp_path):
    path = build_tiny_checkpoint(tmp_path / "ckpt", tiny_encoder_dir, prune_to=CORPUS,
                                 model={"encoder": str(tmp_path / "gone")})
    notes = []
    translator = open_with(path, "auto", notes)
    assert translator.source_vocab.kept_ids is not None
    assert len(notes) == 1 and "does not exist" in notes[0]
    assert translator.translate([UNSEEN])[0].candidates[0].tokens  # still translates
    with pytest.raises(UserError, match="does not exist"):
        open_with(path, "on")


def test_a_different_encoder_at_that_name_is_refused(tiny_encoder_dir, tmp_path):
    other = build_tiny_encoder(tmp_path / "other-bert", seed=1)  # same shape, other weights
    path = build_tiny_checkpoint(tmp_path / "ckpt", tiny_encoder_dir, prune_to=CORPUS,
                                 model={"encoder": str(other)})
    notes = []
    assert open_with(path, "auto", notes).source_vocab.kept_ids is not None
    assert len(notes) == 1 and "differ from the model's" in notes[0]


def test_unpruned_checkpoint_needs_nothing(tiny_encoder_dir, tmp_path):
    path = build_tiny_checkpoint(tmp_path / "full", tiny_encoder_dir,
                                 model={"encoder": str(tmp_path / "gone")})
    notes = []
    translator = open_with(path, "on", notes)
    assert translator.training_vocab is None and notes == []


def test_on_and_off_are_words_not_yaml_booleans():
    from nmt_bert.config import load_config

    assert load_config(None, ["decode.full_vocab=off"]).decode.full_vocab == "off"
    assert load_config(None, ["decode.full_vocab=on"]).decode.full_vocab == "on"
    with pytest.raises(UserError, match="must be one of auto, on, off"):
        load_config(None, ["decode.full_vocab=sometimes"])
