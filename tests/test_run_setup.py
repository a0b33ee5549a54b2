"""Run setup: the encoder's tokenizer is let go once the dev sources are read, and the dev
evaluation translates what `translate` would read."""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import torch

import nmt_bert.model.encoders as encoders
from conftest import tiny_config
from nmt_bert.data.prepared_dir import load_prepared
from nmt_bert.data.protected_spans import Protector
from nmt_bert.decode.translator import Translator
from nmt_bert.metrics import score_lines
from nmt_bert.train.run_dir import RunDir
from nmt_bert.train.run_log import RunLog
from nmt_bert.train.run_setup import build
from nmt_bert.train.validation import evaluate_dev


def test_tokenizer_is_released_and_dev_evaluation_matches_translate(
        tmp_path, tiny_prepared_dir, tiny_encoder_dir, monkeypatch):
    loaded = []
    load_encoder = encoders.load_encoder

    def recording(*args, **kwargs):
        encoder, tokenizer = load_encoder(*args, **kwargs)
        loaded.append(weakref.ref(tokenizer))
        return encoder, tokenizer

    monkeypatch.setattr(encoders, "load_encoder", recording)
    config = tiny_config(tiny_encoder_dir)
    run = RunDir(tmp_path / "run")
    run.create(tiny_prepared_dir, config)
    setup = build(run, tiny_prepared_dir, config, None, RunLog(run, enabled=False))
    gc.collect()
    assert len(loaded) == 1 and loaded[0]() is None  # nothing the run keeps holds it

    # The same dev sources through a translator that tokenizes them itself.
    tokenizer = encoders.load_local_tokenizer(setup.assets.tokenizer_dir)
    dev_src = list(load_prepared(tiny_prepared_dir).split("dev")["src"])
    reader = Translator(setup.model, tokenizer, setup.source_vocab, setup.target_vocab,
                        config.decode, torch.device("cpu"))
    reader.protect_spans(Protector.from_config(config.data))
    assert setup.dev_sources == reader.read(dev_src)
    assert sum(map(len, setup.dev_sources.ids)) > len(dev_src) * 3  # real pieces, not specials

    result = evaluate_dev(setup.model, setup, torch.device("cpu"), beam=1)
    greedy = Translator(setup.model, tokenizer, setup.source_vocab, setup.target_vocab,
                        replace(config.decode, beam_size=1, nbest=1), torch.device("cpu"))
    greedy.protect_spans(Protector.from_config(config.data))
    expected = [t.text for t in greedy.translate(dev_src)]
    assert result["sample"] == expected[:1]
    bleu, _ = score_lines(expected, [list(load_prepared(tiny_prepared_dir).split("dev")["tgt"])],
                          names=("BLEU", "chrF2"))
    assert result["bleu"] == round(bleu.score, 2)
