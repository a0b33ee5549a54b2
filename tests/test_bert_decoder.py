"""BERT2BERT (model.decoder_init=encoder) on tiny random BERTs: warm start, search invariants,
checkpoints, training with resume, and the whole CLI path."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers_model import tiny_model_config, tiny_source_lines, tiny_target_lines
from test_training import assert_resume_matches_uninterrupted, weights
from typer.testing import CliRunner

from conftest import tiny_config, tiny_sets, write_tiny_corpus
from nmt_bert.config import Config, load_config
from nmt_bert.decode.search import beam_search, greedy_search
from nmt_bert.errors import UserError
from nmt_bert.model.bert_decoder import (BertDecoder, init_from_encoder, pretrained_parameters,
                                         source_layer_ids)
from nmt_bert.model.checkpoint import Assets, load_checkpoint, save_checkpoint
from nmt_bert.model.seq2seq import Seq2Seq
from nmt_bert.model.special_tokens import BOS, EOS, PAD, UNK
from nmt_bert.model.vocab import EncoderTargetVocab, SourceVocab
from nmt_bert.train.batches import shift_right
from nmt_bert.train.training import Trainer, train

B2B = ("data.target_tokenizer=encoder", "model.decoder_init=encoder")


def build_b2b(encoder_dir, which: str = "first", layers: int = 2, seed: int = 0):
    """(model, pretrained encoder, target vocab): a tiny BERT2BERT in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(encoder_dir)
    pretrained = AutoModel.from_pretrained(encoder_dir)
    encoder.pooler = None
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    vocab = EncoderTargetVocab.build(tokenizer, tokenizer(tiny_target_lines(),
                                                          add_special_tokens=False)["input_ids"])
    config = tiny_model_config(decoder_init="encoder", decoder_layers=layers,
                               decoder_source_layers=which)
    model = Seq2Seq(encoder, config, len(vocab))
    ids = source_layer_ids(len(pretrained.encoder.layer), layers, which)
    init_from_encoder(model.decoder, pretrained.get_input_embeddings().weight,
                      pretrained.embeddings, [pretrained.encoder.layer[i] for i in ids],
                      vocab.kept_ids)
    return model.eval(), pretrained, vocab


@pytest.fixture(scope="module")
def b2b(tiny_encoder_dir):
    return build_b2b(tiny_encoder_dir)


@pytest.fixture(scope="module")
def sources(tiny_encoder_dir, b2b):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    enc = tokenizer(tiny_source_lines(6, seed=3), padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    with torch.inference_mode():
        return b2b[0].encode_states(ids, mask), mask


@pytest.mark.parametrize("which", ["first", "last"])
def test_initial_weights_are_the_encoder_layers_and_cross_attention_is_new(tiny_encoder_dir,
                                                                           which):
    model, pretrained, vocab = build_b2b(tiny_encoder_dir, which, layers=1)
    source = pretrained.encoder.layer[0 if which == "first" else -1]
    layer = model.decoder.layers[0]
    assert isinstance(model.decoder, BertDecoder)
    pairs = [(layer.self_attn.q, source.attention.self.query),
             (layer.self_attn.k, source.attention.self.key),
             (layer.self_attn.v, source.attention.self.value),
             (layer.self_attn.out, source.attention.output.dense),
             (layer.norm_self, source.attention.output.LayerNorm),
             (layer.ffn[0], source.intermediate.dense), (layer.ffn[3], source.output.dense),
             (layer.norm_ffn, source.output.LayerNorm)]
    for ours, theirs in pairs:
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    emb = pretrained.embeddings
    assert torch.equal(model.decoder.embed.weight,
                       emb.word_embeddings.weight[torch.tensor(vocab.kept_ids)])
    n = model.decoder.max_positions
    assert torch.equal(model.decoder.positions.weight,
                       emb.position_embeddings.weight[:n] + emb.token_type_embeddings.weight[0])
    assert torch.equal(model.decoder.embed_norm.weight, emb.LayerNorm.weight)
    other = pretrained.encoder.layer[-1 if which == "first" else 0]
    assert not torch.equal(layer.self_attn.q.weight, other.attention.self.query.weight)
    # the cross-attention is new: none of its weights come from the checkpoint
    checkpoint_tensors = list(pretrained.parameters())
    for p in layer.cross_attn.parameters():
        assert not any(p.shape == q.shape and torch.equal(p, q) for q in checkpoint_tensors)
    new = {id(p) for p in [*layer.cross_attn.parameters(), *layer.norm_cross.parameters()]}
    assert {id(p) for p in pretrained_parameters(model.decoder)} == \
        {id(p) for p in model.decoder.parameters()} - new


def test_target_vocab_keeps_the_tokenizers_specials_at_the_fixed_rows(b2b, tiny_encoder_dir):
    _, _, vocab = b2b
    tok = vocab.tokenizer
    assert vocab.kept_ids[PAD] == tok.pad_token_id and vocab.kept_ids[UNK] == tok.unk_token_id
    assert vocab.kept_ids[BOS] == tok.cls_token_id and vocab.kept_ids[EOS] == tok.sep_token_id
    line = tiny_target_lines(1, seed=5)[0]
    assert vocab.decode(vocab.encode(line)) == line
    assert UNK not in vocab.encode(line)
    assert vocab.encode("señor") == [UNK]  # a piece the targets never use is not kept


def test_incremental_logits_equal_full_recomputation(b2b, sources):
    model = b2b[0]
    states, mask = sources
    target = torch.randint(4, len(b2b[2]), (states.size(0), 7))
    target[:, 0] = BOS
    with torch.inference_mode():
        full = model.decoder(target, model.start(states, mask))
        state = model.start(states, mask)
        steps = [model.decoder(target[:, t: t + 1], state, incremental=True) for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_beam_size_one_is_greedy_and_nbest_is_sorted(b2b, sources, length_penalty):
    model = b2b[0]
    states, mask = sources
    max_lens = torch.full((states.size(0),), 12)
    greedy = greedy_search(model, states, mask, max_lens, length_penalty)
    beam = beam_search(model, states, mask, max_lens, 1, length_penalty, nbest=1)
    assert [[h] for h in greedy] == beam
    assert max(len(h.tokens) for h in greedy) > 0
    nbest = beam_search(model, states, mask, max_lens, 3, length_penalty, nbest=3)
    for hyps in nbest:
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_checkpoint_round_trip_translates_on_its_own(tmp_path, b2b, sources, tiny_encoder_dir):
    model, _, vocab = b2b
    vocab_file = tmp_path / EncoderTargetVocab.FILE
    vocab.save(vocab_file)
    rows = model.encoder.get_input_embeddings().num_embeddings
    config = Config(model=model.config, data=load_config(None, list(B2B)).data)
    save_checkpoint(tmp_path / "ckpt", model, config,
                    Assets(tiny_encoder_dir, vocab_file, SourceVocab(rows, 1)), meta={})
    assert not (tmp_path / "ckpt" / "spm.model").exists()
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(ckpt.target_vocab, EncoderTargetVocab)
    assert ckpt.target_vocab.kept_ids == vocab.kept_ids
    states, mask = sources
    labels = torch.randint(4, len(vocab), (states.size(0), 6))
    with torch.inference_mode():
        a = model(None, mask, shift_right(labels), states=states)
        b = ckpt.model(None, mask, shift_right(labels), states=states)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_config_requires_the_encoder_target_tokenizer(tiny_encoder_dir):
    with pytest.raises(UserError, match="data.target_tokenizer=encoder"):
        load_config(None, ["model.decoder_init=encoder"])


@pytest.fixture(scope="module")
def b2b_prepared_dir(tmp_path_factory, tiny_encoder_dir):
    from rich.console import Console

    from nmt_bert.data.corpora import CorpusSpec
    from nmt_bert.data.prepare import prepare

    root = tmp_path_factory.mktemp("b2b-data")
    src, tgt = write_tiny_corpus(root)
    prepare(CorpusSpec(src=src, tgt=tgt), root / "data", tiny_config(tiny_encoder_dir, *B2B),
            console=Console(file=open(os.devnull, "w")))
    return root / "data"


def test_prepare_writes_the_pruned_encoder_pieces(b2b_prepared_dir):
    manifest = json.loads((b2b_prepared_dir / "manifest.json").read_text())
    assert manifest["target_vocab"]["type"] == "encoder"
    assert (b2b_prepared_dir / EncoderTargetVocab.FILE).is_file()
    assert not (b2b_prepared_dir / "spm.model").exists()


def test_data_and_decoder_kind_must_match(tmp_path, tiny_prepared_dir, b2b_prepared_dir,
                                          tiny_encoder_dir):
    with pytest.raises(UserError, match="target_tokenizer=sentencepiece"):
        train(tiny_prepared_dir, tmp_path / "a", tiny_config(tiny_encoder_dir, *B2B),
              device="cpu")
    with pytest.raises(UserError, match="target_tokenizer=encoder"):
        train(b2b_prepared_dir, tmp_path / "b", tiny_config(tiny_encoder_dir), device="cpu")


def test_stage1_new_trains_only_cross_attention_then_stage2_everything(
        tmp_path, b2b_prepared_dir, tiny_encoder_dir, monkeypatch):
    snapshots = {}
    original = Trainer.enter_stage

    def spy(self, stage):
        snapshots[stage] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        original(self, stage)

    monkeypatch.setattr(Trainer, "enter_stage", spy)
    config = tiny_config(tiny_encoder_dir, *B2B, "train.stage1_steps=4", "train.stage2_steps=3",
                         "train.eval_every=100", "train.stage1_decoder=new")
    run = train(b2b_prepared_dir, tmp_path / "run", config, device="cpu")
    before, middle, final = snapshots[1], snapshots[2], weights(run / "checkpoints" / "last")
    decoder = [k for k in before if k.startswith("decoder.")]
    new = [k for k in decoder if ".cross_attn." in k or ".norm_cross." in k]
    assert new and all(not torch.equal(before[k], middle[k]) for k in new if k.endswith("weight"))
    for key in set(decoder) - set(new):
        assert torch.equal(before[key], middle[key]), key
    assert any(not torch.equal(middle[k], final[k]) for k in set(decoder) - set(new))


def test_resumed_run_matches_uninterrupted(tmp_path, b2b_prepared_dir, tiny_encoder_dir,
                                           monkeypatch):
    overrides = (*B2B, "train.stage1_steps=6", "train.stage2_steps=4", "train.eval_every=3",
                 "model.dropout=0.1")
    assert_resume_matches_uninterrupted(tmp_path, b2b_prepared_dir,
                                        lambda: tiny_config(tiny_encoder_dir, *overrides), 10,
                                        monkeypatch)


def test_prepare_train_translate_score_and_export(tmp_path, tiny_encoder_dir):
    """The whole CLI path, then the CTranslate2 export (post-norm decoder, affine adapter):
    its fp32 log-probs equal ours and its greedy output is ours, line for line."""
    from test_export import exported_logprobs, random_targets, teacher_forced

    from nmt_bert.cli import app
    from nmt_bert.decode.translator import Translator
    from nmt_bert.export.ct2_translator import Ct2Translator

    def invoke(*args: str, code: int = 0):
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result

    src, tgt = write_tiny_corpus(tmp_path / "corpus")
    sets = [a for s in tiny_sets(tiny_encoder_dir, *B2B, "model.adapter=affine",
                                 "train.stage1_steps=30", "train.stage2_steps=10",
                                 "train.eval_every=20")
            for a in ("--set", s)]
    data, run = tmp_path / "data", tmp_path / "run"
    invoke("prepare", "--src", str(src), "--tgt", str(tgt), "--out", str(data), *sets)
    invoke("train", "--data", str(data), "--out", str(run), "--device", "cpu", *sets)
    hyp = tmp_path / "test.hyp"
    invoke("translate", str(data / "test.src"), "--model", str(run), "-o", str(hyp), "--beam", "2")
    outputs = hyp.read_text().splitlines()
    lines = (data / "test.src").read_text().splitlines()
    assert len(outputs) == len(lines) > 0
    report = json.loads(invoke("score", str(hyp), str(data / "test.ref"), "--json").output)
    assert all("version:" in s["signature"] for s in report["scores"])

    export = tmp_path / "export"
    invoke("export", str(run), "--out", str(export))
    quiet = dict(device="cpu", overrides=["decode.beam_size=1"], note=lambda text: None)
    ours, theirs = Translator.from_checkpoint(run, **quiet), Ct2Translator.from_export(export, **quiet)
    assert theirs.target_tokens == ours.target_vocab.piece_names()
    targets = random_targets(ours, 6)
    for a, b in zip(teacher_forced(ours, lines[:6], targets),
                    exported_logprobs(theirs, lines[:6], targets)):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert [t.text for t in theirs.translate(lines)] == [t.text for t in ours.translate(lines)]
