"""Dev-set validation: teacher-forced loss and sacreBLEU through the same Translator as `translate`."""

from __future__ import annotations

import math

import torch
from nmt_bert.config import Config
from nmt_bert.decode.line_translator import LineTranslator, SourceLines
from nmt_bert.model.vocab import SourceVocab
from nmt_bert.train.batches import token_batches
from nmt_bert.metrics import score_lines
from nmt_bert.model.loss import label_smoothed_loss


@torch.inference_mode()
def dev_loss(model, data, device: torch.device, batch_tokens: int) -> float:
    """Per-token NLL of the dev set (no label smoothing, dropout off)."""
    nll_sum, tokens = 0.0, 0
    for index in token_batches(data.src_lens, data.tgt_lens, batch_tokens, 0, 0, shuffle=False):
        batch = data.collate(index).to(device)
        logits = model(batch.src_ids, batch.src_mask, batch.tgt_in)
        _, nll = label_smoothed_loss(logits, batch.labels, 0.0)
        nll_sum, tokens = nll_sum + nll.item(), tokens + batch.target_tokens
    return nll_sum / max(tokens, 1)


def read_dev_sources(lines: list[str], tokenizer, encoder, source_vocab: SourceVocab,
                     target_vocab, config: Config) -> SourceLines:
    """The dev sources read as `translate` reads them (protected spans masked as
    data.protect says, encoded, cut to `encoder`'s positions), once, while the run's setup
    still has the tokenizer; `evaluate_dev` translates them with the same protection."""
    from nmt_bert.data.protected_spans import Protector
    from nmt_bert.model.encoders import encoder_max_tokens

    reader = LineTranslator(tokenizer, source_vocab, target_vocab, config.decode,
                            encoder_max_tokens(encoder, tokenizer),
                            config.model.max_target_positions)
    reader.protect_spans(Protector.from_config(config.data))
    return reader.read(lines)


def evaluate_dev(model, setup, device: torch.device, beam: int) -> dict:
    """Loss, perplexity, BLEU and chrF on the dev set; leaves the model in eval mode."""
    from dataclasses import replace

    from nmt_bert.data.protected_spans import Protector
    from nmt_bert.decode.translator import Translator

    model.eval()
    loss = dev_loss(model, setup.dev_data, device, setup.config.train.batch_tokens)
    decode = replace(setup.config.decode, beam_size=beam, nbest=1)
    # No tokenizer: the dev sources were read once, by read_dev_sources above.
    translator = Translator(model, None, setup.source_vocab, setup.target_vocab, decode, device)
    translator.protect_spans(Protector.from_config(setup.config.data))
    hyps = [t.text for t in translator.translate_sources(setup.dev_sources)]
    bleu, chrf = score_lines(hyps, [setup.dev_ref], names=("BLEU", "chrF2"))
    return {
        "loss": round(loss, 4),
        "ppl": round(math.exp(min(loss, 50)), 2),
        "bleu": round(bleu.score, 2),
        "chrf": round(chrf.score, 2),
        "signatures": {"bleu": bleu.signature, "chrf": chrf.signature},
        "sample": hyps[:1],
    }
