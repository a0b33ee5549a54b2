"""Two-stage training on a tiny random BERT: freezing, learning rates, resume, learning."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from nmt_bert.train import trainer as training
from nmt_bert.train.training import Trainer, train


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def test_stage1_freezes_encoder_and_stage2_trains_it(tmp_path, tiny_prepared_dir, tiny_encoder_dir,
                                                     monkeypatch):
    snapshots = {}
    original = Trainer.enter_stage

    def spy(self, stage):
        snapshots[stage] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        original(self, stage)

    monkeypatch.setattr(Trainer, "enter_stage", spy)
    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=8", "train.stage2_steps=6",
                         "train.eval_every=100", "train.freeze_embeddings_stage2=false")
    run = train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    before, middle = snapshots[1], snapshots[2]
    final = weights(run / "checkpoints" / "last")
    encoder_keys = [k for k in before if k.startswith("encoder.")]
    assert encoder_keys
    for key in encoder_keys:  # stage 1: bit-identical encoder
        assert torch.equal(before[key], middle[key]), key
    for prefix in ("adapter.", "decoder."):  # ... while adapter and decoder moved
        assert any(not torch.equal(before[k], middle[k]) for k in before if k.startswith(prefix))
    changed = [k for k in encoder_keys if not torch.equal(middle[k], final[k])]
    assert "encoder.embeddings.word_embeddings.weight" in changed
    assert any(".layer.1." in k for k in changed)


def test_learning_rates_follow_the_config(tmp_path, tiny_prepared_dir, tiny_encoder_dir, monkeypatch):
    seen = {}
    original = Trainer.train_step

    def spy(self):
        out = original(self)
        groups = {(g["name"], g["peak_lr"]) for g in self.optimizer.param_groups}
        seen.setdefault(self.state.stage, groups)
        return out

    monkeypatch.setattr(Trainer, "train_step", spy)
    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=2", "train.stage2_steps=2",
                         "train.lr=5e-3", "train.stage2_lr=2e-3", "train.encoder_lr=1e-4",
                         "train.eval_every=100")
    train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    assert seen[1] == {("head", 5e-3)}
    assert seen[2] == {("head", 2e-3), ("encoder", 1e-4)}


def test_embeddings_stay_frozen_in_stage2_when_asked(tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=2", "train.stage2_steps=3",
                         "train.eval_every=100", "train.freeze_embeddings_stage2=true")
    run = train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    best = weights(run / "checkpoints" / "last")
    from transformers import AutoModel

    fresh = AutoModel.from_pretrained(tiny_encoder_dir)
    kept = json.loads((run / "source_vocab.json").read_text())["kept_ids"]
    expected = fresh.get_input_embeddings().weight[torch.tensor(kept)]
    assert torch.equal(best["encoder.embeddings.word_embeddings.weight"], expected)


def test_random_encoder_init_replaces_the_pretrained_weights(tmp_path, tiny_prepared_dir,
                                                             tiny_encoder_dir):
    from transformers import AutoModel

    fresh = AutoModel.from_pretrained(tiny_encoder_dir).state_dict()
    runs = []
    for name in ("a", "b"):
        config = tiny_config(tiny_encoder_dir, "model.encoder_init=random", "train.stage1_steps=0",
                             "train.stage2_steps=1", "train.eval_every=100",
                             "train.stage2_lr=0", "train.encoder_lr=0")
        runs.append(weights(train(tiny_prepared_dir, tmp_path / name, config, device="cpu")
                            / "checkpoints" / "last"))
    kept = torch.tensor(json.loads((tmp_path / "a" / "source_vocab.json").read_text())["kept_ids"])
    random_table = runs[0]["encoder.embeddings.word_embeddings.weight"]
    assert not torch.allclose(random_table, fresh["embeddings.word_embeddings.weight"][kept])
    layer = "encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(runs[0][layer], fresh[layer.removeprefix("encoder.")])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])  # seeded: reproducible


def assert_resume_matches_uninterrupted(tmp_path: Path, data: Path, config, steps: int,
                                        monkeypatch) -> None:
    """A run stopped after its first evaluation and resumed logs the same losses at every
    one of its `steps` and ends with the same weights as `config` run straight through."""
    straight = train(data, tmp_path / "straight", config(), device="cpu")
    original = Trainer.evaluate

    def stop_after_first_eval(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "evaluate", stop_after_first_eval)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "resumed", config(), device="cpu")
    monkeypatch.setattr(Trainer, "evaluate", original)
    train(None, tmp_path / "resumed", None, device="cpu", resume=True)

    a, b = losses(straight), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-6), step
    wa, wb = weights(straight / "checkpoints" / "last"), weights(tmp_path / "resumed" / "checkpoints" / "last")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_interrupted_then_resumed_run_matches_uninterrupted(tmp_path, tiny_prepared_dir,
                                                            tiny_encoder_dir, monkeypatch):
    overrides = ("train.stage1_steps=12", "train.stage2_steps=6", "train.eval_every=6",
                 "model.dropout=0.1")
    assert_resume_matches_uninterrupted(tmp_path, tiny_prepared_dir,
                                        lambda: tiny_config(tiny_encoder_dir, *overrides), 18,
                                        monkeypatch)


def test_tiny_model_learns_word_for_word_translation(tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=400", "train.eval_every=400",
                         "model.d_model=64", "model.ffn_dim=128", "model.adapter_hidden=128",
                         "train.label_smoothing=0.0", "train.lr=3e-3", "train.warmup_steps=30",
                         "train.schedule=linear")
    run = train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    train_losses = losses(run)
    assert train_losses[1] > 2.0
    last = sorted(train_losses[s] for s in range(381, 401))
    assert last[len(last) // 2] < 0.05, last  # near zero on train (median of the last 20 steps)
    dev = json.loads((run / "checkpoints" / "best" / "meta.json").read_text())["dev"]
    assert dev["bleu"] > 50, dev  # and it generalises to unseen sentences


def test_existing_run_is_not_overwritten(tmp_path, tiny_prepared_dir, tiny_encoder_dir):
    from nmt_bert.errors import UserError

    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=2", "train.eval_every=2")
    train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")


def test_nan_losses_in_stage2_roll_back_with_a_lower_encoder_rate(tmp_path, tiny_prepared_dir,
                                                                 tiny_encoder_dir, monkeypatch):
    real = training.label_smoothed_loss
    calls = {"n": 0}

    def flaky(logits, labels, smoothing):
        calls["n"] += 1
        loss, nll = real(logits, labels, smoothing)
        if 7 <= calls["n"] <= 9:  # three NaN steps in a row, early in stage 2
            return loss * float("nan"), nll
        return loss, nll

    monkeypatch.setattr(training, "label_smoothed_loss", flaky)
    config = tiny_config(tiny_encoder_dir, "train.stage1_steps=4", "train.stage2_steps=6",
                         "train.eval_every=4", "train.max_bad_steps=3", "train.encoder_lr=1e-4")
    run = train(tiny_prepared_dir, tmp_path / "run", config, device="cpu")
    log = (run / "train.log").read_text()
    assert "3 consecutive steps had NaN/inf loss: rolled back to the best checkpoint" in log
    assert "encoder learning rate lowered to 5.00e-05" in log
    assert "encoder_lr: 5.0e-05" in (run / "config.yaml").read_text()
    finished = json.loads((run / "finished.json").read_text())
    assert finished["skipped_steps"] == 3 and finished["steps"] == 10
