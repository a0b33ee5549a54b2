"""`nmt-bert export` to CTranslate2: the exported model computes what ours computes.

Tiny random models of several widths and depths, pruned and whole vocabularies: exported
fp32 log-probabilities equal our teacher-forced ones within 1e-4, greedy and beam outputs
equal our search's token for token, int8 stays within a stated tolerance, inexpressible
adapters are refused in one line, and `translate` takes an export as it takes a checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_encoder
from helpers_model import build_tiny_checkpoint, tiny_source_lines, tiny_target_lines
from typer.testing import CliRunner

from nmt_bert.cli import app
from nmt_bert.decode.load import open_translator
from nmt_bert.decode.translator import Translator
from nmt_bert.errors import UserError
from nmt_bert.export.ct2_translator import Ct2Translator, thread_split
from nmt_bert.export.export_dir import ExportDir, is_export
from nmt_bert.export.exporter import export_model
from nmt_bert.model.checkpoint import load_checkpoint, save_checkpoint, Assets
from nmt_bert.model.special_tokens import BOS, EOS, PAD

CORPUS = tiny_source_lines(40, seed=1)
LINES = tiny_source_lines(12, seed=5) + ["dios house zzz rey", "vino"]  # some unseen pieces
FP32_TOLERANCE = 1e-4  # max |log-prob difference| per token, exported fp32 vs ours
# int8 weights: mean and max |log-prob difference| per token (nats) on these tiny models,
# whose weights (std 0.5, see make_lively) are far larger than a trained model's: measured
# 0.097 and 0.77
INT8_MEAN, INT8_MAX = 0.15, 1.0


@dataclass(frozen=True)
class Case:
    name: str
    enc_hidden: int
    enc_layers: int
    adapter: str
    d_model: int
    heads: int
    decoder_layers: int
    pruned: bool


CASES = [
    Case("enc32x2-affine-d32x2-pruned", 32, 2, "affine", 32, 2, 2, True),
    Case("enc48x3-affine-d32x1-full", 48, 3, "affine", 32, 4, 1, False),
    Case("enc48x3-none-d48x3-pruned", 48, 3, "none", 48, 4, 3, True),
    Case("enc32x2-affine-d48x2-pruned", 32, 2, "affine", 48, 4, 2, True),
]


def quiet_pad_and_bos(model, seed: int = 0, strength: float = 30.0) -> None:
    """Make PAD and BOS as improbable as in a trained model, which never predicts them.

    Both searches ban them, CTranslate2 before its softmax and we after ours, so per-step
    log-probs agree only where their probability is negligible. A unit direction w,
    orthogonal to EOS's, is removed from every other (tied) embedding; PAD and BOS become w
    and the final LayerNorm bias gets -strength * w, which lowers only their logits.
    """
    gen = torch.Generator().manual_seed(seed)
    dec = model.decoder
    with torch.no_grad():
        embed = dec.embed.weight
        u = embed[EOS] / embed[EOS].norm()
        w = torch.randn(embed.size(1), generator=gen)
        w -= (w @ u) * u
        w /= w.norm()
        embed -= (embed @ w)[:, None] * w
        embed[PAD] = w
        embed[BOS] = w
        dec.norm.bias -= strength * w


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[tuple[int, int], Path]:
    root = tmp_path_factory.mktemp("encoders")
    shapes = {(c.enc_hidden, c.enc_layers) for c in CASES}
    return {(h, n): build_tiny_encoder(root / f"bert-{h}x{n}", hidden=h, layers=n, seed=h + n)
            for h, n in shapes}


def make_checkpoint(root: Path, case: Case, encoder_dir: Path, **decode) -> Path:
    """A tiny checkpoint for `case`, its PAD/BOS made improbable (see quiet_pad_and_bos)."""
    model = {"encoder": str(encoder_dir), "adapter": case.adapter, "d_model": case.d_model,
             "heads": case.heads, "decoder_layers": case.decoder_layers,
             "ffn_dim": 2 * case.d_model}
    path = build_tiny_checkpoint(root / case.name, encoder_dir, model=model, decode=decode,
                                 prune_to=CORPUS if case.pruned else None)
    ckpt = load_checkpoint(path)
    quiet_pad_and_bos(ckpt.model)
    save_checkpoint(path, ckpt.model, ckpt.config,
                    Assets(path / "encoder_tokenizer", path / "spm.model", ckpt.source_vocab),
                    meta={"step": 1})
    return path


_BUILT: dict[str, tuple[Path, Path]] = {}


def _build(case: Case, encoders, tmp_path_factory) -> tuple[Path, Path]:
    if case.name not in _BUILT:
        root = tmp_path_factory.mktemp(case.name)
        ckpt = make_checkpoint(root, case, encoders[(case.enc_hidden, case.enc_layers)])
        _BUILT[case.name] = ckpt, export_model(ckpt, root / "export", "float32",
                                               note=_no_note).path
    return _BUILT[case.name]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def exported(request, encoders, tmp_path_factory):
    """(checkpoint dir, fp32 export dir) for each case."""
    return _build(request.param, encoders, tmp_path_factory)


@pytest.fixture(scope="module")
def one_export(encoders, tmp_path_factory):
    """(checkpoint dir, fp32 export dir) of the first case only: for the commands."""
    return _build(CASES[0], encoders, tmp_path_factory)


def _no_note(text: str) -> None:
    if not text.startswith("exported "):  # the summary line of a finished export
        raise AssertionError(f"unexpected note: {text}")


def teacher_forced(translator: Translator, lines: list[str], targets: list[list[int]]):
    """Our per-token log-probs of targets + [EOS], one tensor per line."""
    model = translator.model
    out = []
    for ids, target in zip(translator.encode_sources(lines), targets):
        src = translator.rows[torch.tensor([ids])]
        mask = torch.ones_like(src, dtype=torch.bool)
        with torch.inference_mode():
            logits = model(src, mask, torch.tensor([[BOS] + target]))[0].float()
        labels = torch.tensor(target + [EOS])
        out.append(F.log_softmax(logits, -1)[torch.arange(len(labels)), labels])
    return out


def exported_logprobs(translator: Ct2Translator, lines, targets):
    sources = [[translator.source_tokens[r] for r in translator.rows[ids]]
               for ids in translator.encode_sources(lines)]
    pieces = [[translator.target_tokens[t] for t in target] for target in targets]
    results = translator.model.score_batch(sources, pieces, max_input_length=0)
    return [torch.tensor(r.log_probs) for r in results]


def random_targets(translator, count: int, seed: int = 0) -> list[list[int]]:
    return [translator.target_vocab.encode(line) for line in tiny_target_lines(count, seed)]


def test_fp32_log_probs_equal_ours(exported):
    ckpt, export = exported
    ours = Translator.from_checkpoint(ckpt, note=_no_note)
    theirs = open_translator(export, device="cpu", note=_no_note)
    assert isinstance(theirs, Ct2Translator)
    targets = random_targets(ours, len(LINES))
    a = teacher_forced(ours, LINES, targets)
    b = exported_logprobs(theirs, LINES, targets)
    worst = max(float((x - y).abs().max()) for x, y in zip(a, b))
    assert worst < FP32_TOLERANCE, worst


@pytest.mark.parametrize("beam,alpha,nbest", [(1, 1.0, 1), (4, 1.0, 1), (4, 0.0, 3), (3, 0.6, 2)])
def test_search_outputs_equal_ours(exported, beam, alpha, nbest):
    ckpt, export = exported
    # max_len_b 100: a limit that does not bind (where it binds, see the next tests)
    sets = [f"decode.beam_size={beam}", f"decode.length_penalty={alpha}",
            f"decode.nbest={nbest}", "decode.batch_size=5", "decode.max_len_b=100"]
    ours = Translator.from_checkpoint(ckpt, overrides=sets, note=_no_note)
    theirs = open_translator(export, device="cpu", overrides=sets, note=_no_note)
    a, b = ours.translate(LINES), theirs.translate(LINES)
    for x, y in zip(a, b):
        assert x.candidates[0].tokens == y.candidates[0].tokens
        assert y.candidates[0].score == pytest.approx(x.candidates[0].score, abs=1e-3)
        # Lower n-best entries: where more than K hypotheses finish by the last step,
        # CTranslate2 ranks them all and we keep the first K, so its j-th is never worse.
        assert len(x.candidates) == len(y.candidates)
        for c, d in zip(x.candidates[1:], y.candidates[1:]):
            assert d.score >= c.score - 1e-3
            if d.tokens == c.tokens:
                assert d.score == pytest.approx(c.score, abs=1e-3)
    assert theirs.stats.target_tokens == ours.stats.target_tokens > 0
    assert theirs.stats.sentences == ours.stats.sentences == len(LINES)


def test_greedy_equals_ours_where_the_length_limit_binds(exported):
    ckpt, export = exported
    # limits 1..4 tokens: every hypothesis is cut by its own per-sentence limit
    sets = ["decode.beam_size=1", "decode.max_len_a=0.2", "decode.max_len_b=0",
            "decode.batch_size=7"]
    ours = Translator.from_checkpoint(ckpt, overrides=sets, note=_no_note)
    theirs = open_translator(export, device="cpu", overrides=sets, note=_no_note)
    a, b = ours.translate(LINES), theirs.translate(LINES)
    assert [x.candidates[0].tokens for x in a] == [y.candidates[0].tokens for y in b]
    for x, y in zip(a, b):
        assert y.candidates[0].logprob == pytest.approx(x.candidates[0].logprob, abs=1e-3)
    lengths = {len(x.candidates[0].tokens) for x in a}
    assert len(lengths) > 1  # the per-sentence limits differ within a batch


def test_beam_search_keeps_per_sentence_limits(exported):
    """Where the limit binds, beam search differs from ours in which hypotheses reach it
    (see export.ct2_translator); every hypothesis still obeys its own sentence's limit."""
    ckpt, export = exported
    sets = ["decode.beam_size=3", "decode.nbest=3", "decode.max_len_a=0.5",
            "decode.max_len_b=1", "decode.batch_size=7"]
    ours = Translator.from_checkpoint(ckpt, overrides=sets, note=_no_note)
    theirs = open_translator(export, device="cpu", overrides=sets, note=_no_note)
    lengths = [len(ids) for ids in ours.encode_sources(LINES)]
    for count, translation in zip(lengths, theirs.translate(LINES)):
        limit = int(0.5 * count + 1)
        assert len(translation.candidates) == 3
        assert all(len(c.tokens) <= limit for c in translation.candidates)
        scores = [c.score for c in translation.candidates]
        assert scores == sorted(scores, reverse=True)


def test_workers_search_batches_side_by_side_to_the_same_output(one_export):
    """Batches handed to CTranslate2 at once and searched by two workers give what one
    worker gives, in input order, with progress after every batch."""
    _, export = one_export
    sets = ["decode.beam_size=3", "decode.nbest=2", "decode.batch_size=3"]
    one = Ct2Translator.from_export(export, threads=2, workers=1, overrides=sets, note=_no_note)
    two = Ct2Translator.from_export(export, threads=2, workers=2, overrides=sets, note=_no_note)
    assert (one.model.num_translators, two.model.num_translators) == (1, 2)
    done: list[int] = []
    a, b = one.translate(LINES), two.translate(LINES, done.append)
    assert [[c.tokens for c in t.candidates] for t in a] == [[c.tokens for c in t.candidates]
                                                             for t in b]
    assert [t.score for t in a] == pytest.approx([t.score for t in b], abs=1e-5)
    assert done == [3, 3, 3, 3, 2]  # 14 lines in batches of 3


@pytest.mark.parametrize("kind,threads,workers,split", [
    ("cpu", 4, 0, (4, 1)), ("cpu", 4, 2, (2, 2)), ("cpu", 1, 3, (1, 1)), ("cpu", 3, 2, (2, 1)),
    ("cuda", 8, 0, (1, 0)), ("cuda", 0, 2, (2, 0))])
def test_thread_split(kind, threads, workers, split):
    assert thread_split(kind, threads, workers) == split


def test_roberta_type_encoder_positions(tiny_encoder_dir, tmp_path):
    """XLM-R numbers positions from padding_idx + 1: the export starts its table there."""
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    encoder_dir = tmp_path / "xlmr"
    tokenizer.save_pretrained(encoder_dir)
    torch.manual_seed(3)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=258, type_vocab_size=1,
                              pad_token_id=tokenizer.pad_token_id)
    XLMRobertaModel(config).save_pretrained(encoder_dir)
    case = Case("xlmr-affine", 32, 2, "affine", 32, 2, 2, False)
    ckpt = make_checkpoint(tmp_path, case, encoder_dir)
    export = export_model(ckpt, tmp_path / "export", "float32", note=_no_note).path
    ours = Translator.from_checkpoint(ckpt, note=_no_note)
    assert ours.model.encoder.config.model_type == "xlm-roberta"
    theirs = open_translator(export, device="cpu", note=_no_note)
    targets = random_targets(ours, len(LINES), seed=6)
    a = teacher_forced(ours, LINES, targets)
    b = exported_logprobs(theirs, LINES, targets)
    assert max(float((x - y).abs().max()) for x, y in zip(a, b)) < FP32_TOLERANCE


def test_int8_within_tolerance(one_export, tmp_path):
    ckpt, _ = one_export
    export = export_model(ckpt, tmp_path / "int8", "int8", note=_no_note).path
    ours = Translator.from_checkpoint(ckpt, note=_no_note)
    theirs = open_translator(export, device="cpu", note=_no_note)
    targets = random_targets(ours, len(LINES), seed=3)
    diffs = torch.cat([(x - y).abs() for x, y in zip(teacher_forced(ours, LINES, targets),
                                                     exported_logprobs(theirs, LINES, targets))])
    print(f"int8: mean {float(diffs.mean()):.4f} max {float(diffs.max()):.4f} nats/token")
    assert float(diffs.mean()) < INT8_MEAN and float(diffs.max()) < INT8_MAX
    assert float(diffs.max()) > 1e-5  # int8 really is in use


def test_float16_export_leaves_the_stream_unscaled(one_export, tmp_path):
    """float16 compute keeps c = 1 (export.spec); fp32 exports carry c = sqrt(1e-12/1e-5)."""
    ckpt, fp32 = one_export
    assert ExportDir(fp32).manifest()["layer_norm_epsilon"]["decoder_stream_scale"] == \
        pytest.approx((1e-12 / 1e-5) ** 0.5)
    export = export_model(ckpt, tmp_path / "fp16", "float16", note=_no_note).path
    assert ExportDir(export).manifest()["layer_norm_epsilon"]["decoder_stream_scale"] == 1.0
    ours = Translator.from_checkpoint(ckpt, note=_no_note)
    theirs = open_translator(export, device="cpu", note=_no_note)  # CPU computes in float32
    targets = random_targets(ours, len(LINES), seed=7)
    diffs = torch.cat([(x - y).abs() for x, y in zip(teacher_forced(ours, LINES, targets),
                                                     exported_logprobs(theirs, LINES, targets))])
    # float16 weights (about 3 significant digits) on logits of magnitude ~30: measured
    # mean 3.7e-3, max 0.08 nats per token
    print(f"float16: mean {float(diffs.mean()):.2e} max {float(diffs.max()):.2e}")
    assert float(diffs.mean()) < 0.01 and float(diffs.max()) < 0.2


def test_export_of_a_layernorm_adapter_fails_in_one_line(tiny_encoder_dir, tmp_path):
    for kind in ("mlp", "linear"):
        path = build_tiny_checkpoint(tmp_path / kind, tiny_encoder_dir, model={"adapter": kind})
        with pytest.raises(UserError) as err:
            export_model(path, tmp_path / f"{kind}-export")
        message = str(err.value)
        assert "\n" not in message and str(path / "config.yaml") in message
        assert f"model.adapter={kind} ends in a LayerNorm" in message
        assert "--set model.adapter=affine" in message
        assert not (tmp_path / f"{kind}-export").exists()


def test_export_directory_describes_itself(exported):
    ckpt, export = exported
    assert is_export(export)
    manifest = ExportDir(export).manifest()
    assert manifest["source"]["checkpoint"] == str(Path(ckpt).resolve())
    assert manifest["source"]["meta"]["step"] == 1
    assert len(manifest["source"]["weights_sha256"]) == 64
    assert manifest["quantization"] == "float32"
    table = manifest["source_table"]
    pruned = ExportDir(export).source_tokens()
    assert table["size"] == len(pruned) and table["rows"] in ("pretrained", "complete")
    assert len(set(pruned)) == len(pruned)  # one distinct name per row
    for name in ("encoder_tokenizer", "spm.model", "source_vocab.json", "config.yaml"):
        assert (Path(export) / name).exists()


def test_full_vocab_export_reads_unseen_pieces_as_themselves(exported):
    ckpt, export = exported
    sets = ["decode.max_len_b=100"]  # a limit that does not bind
    whole = open_translator(export, device="cpu", overrides=sets, note=_no_note)
    off = sets + ["decode.full_vocab=off"]
    pruned = open_translator(export, device="cpu", overrides=off, note=_no_note)
    reference = Translator.from_checkpoint(ckpt, overrides=off)
    line = ["dios house zzz rey"]
    whole.translate(line)
    pruned.translate(line)
    reference.translate(line)
    if reference.stats.oov_pieces == 0:  # nothing pruned
        return
    assert (whole.stats.oov_pieces, whole.stats.pretrained_pieces) == (0, 4)
    assert (pruned.stats.oov_pieces, pruned.stats.pretrained_pieces) == (4, 0)
    assert ([t.candidates[0].tokens for t in pruned.translate(LINES)]
            == [t.candidates[0].tokens for t in reference.translate(LINES)])


def test_export_refuses_to_replace_what_is_not_an_export(one_export, tmp_path):
    ckpt, _ = one_export
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="is not an nmt-bert export"):
        export_model(ckpt, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_translate_command_on_an_export_matches_the_checkpoint(one_export, tmp_path):
    ckpt, export = one_export
    source = tmp_path / "in.txt"
    source.write_text("\n".join(LINES[:6] + ["", LINES[6]]) + "\n", encoding="utf-8")
    runner = CliRunner()
    outputs = []
    for model in (ckpt, export):
        out = tmp_path / f"{Path(model).name}.txt"
        result = runner.invoke(app, ["translate", str(source), "--model", str(model),
                                     "--beam", "1", "--output", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert "translated 8 sentences" in result.output
        outputs.append(out.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 8


def test_export_command(one_export, tmp_path):
    ckpt, _ = one_export
    out = tmp_path / "cli-export"
    result = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out),
                                      "--quantization", "int8"])
    assert result.exit_code == 0, result.output
    assert ExportDir(out).manifest()["quantization"] == "int8"
    bad = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(out),
                                   "--quantization", "int3"])
    assert bad.exit_code != 0 and "int3" in bad.output


def test_layer_norm_epsilon_effect_and_its_fold(one_export):
    """CTranslate2 has one LayerNorm epsilon: the encoder's (1e-12) is written, and our
    decoder's norms (trained at 1e-5) get it through a residual stream scaled by
    c = sqrt(1e-12 / 1e-5) (export.spec). Measured here in PyTorch alone: how far the
    log-probs would move without that fold (decoder norms at 1e-12), and with the other
    choice (encoder norms at 1e-5); the fp32 test above shows the fold leaves < 1e-4."""
    ckpt, _ = one_export
    translator = Translator.from_checkpoint(ckpt, note=_no_note)
    targets = random_targets(translator, len(LINES), seed=4)
    exact = teacher_forced(translator, LINES, targets)

    def effect(modules, eps):
        norms = [m for m in modules if isinstance(m, torch.nn.LayerNorm)]
        saved = [m.eps for m in norms]
        for m in norms:
            m.eps = eps
        try:
            moved = teacher_forced(translator, LINES, targets)
        finally:
            for m, e in zip(norms, saved):
                m.eps = e
        return max(float((x - y).abs().max()) for x, y in zip(exact, moved))

    decoder_at_encoder_eps = effect(translator.model.decoder.modules(), 1e-12)
    encoder_at_decoder_eps = effect(translator.model.encoder.modules(), 1e-5)
    print(f"epsilon effect: decoder at 1e-12 {decoder_at_encoder_eps:.2e}, "
          f"encoder at 1e-5 {encoder_at_decoder_eps:.2e}")
    assert 1e-6 < decoder_at_encoder_eps < 1e-3  # measurable: the fold is worth having
    assert encoder_at_decoder_eps > decoder_at_encoder_eps  # the tiny BERT's small activations


TORCH_PROBE = """
import runpy, sys
sys.argv = ["nmt-bert", *sys.argv[1:]]
try:
    runpy.run_module("nmt_bert", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print("torch imported:", "torch" in sys.modules)
"""


def test_translating_an_export_never_imports_torch(one_export, tmp_path):
    """Serving an export needs CTranslate2, the tokenizer and SentencePiece only: `translate`
    on an export directory runs in a process that never imports torch (half its memory)."""
    _, export = one_export
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("\n".join(LINES[:3]) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", TORCH_PROBE, "translate", str(source),
                             "--model", str(export), "-o", str(out), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "torch imported: False"
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
