"""Parts of a training step against their plain torch forms: the loss and the optimizer update.

  loss       label-smoothed cross-entropy forward + backward on bf16 logits (N, V): the plain
             `F.cross_entropy(logits.float(), ...)` path (with the reported NLL computed
             again, as the trainer did before) against nmt_bert.model.loss, per block size
  optimizer  one AdamW update of the fast recipe's stage-1 parameters (adapter + decoder):
             torch's per-tensor loop, foreach and fused
  step       with --data: the product's stage-1 step from the state cache, the two losses on
             alternate steps of one trainer (so a machine whose speed drifts slows both alike)
  batches    with --data: the same step on batches sorted source first and target first
             (train.batch_order), alternately; real src+tgt tokens/s and padding of each
  dropout    with --data: the same step with dropout 0.1 at each set of sites (model.dropout,
             model.activation_dropout, model.attention_dropout), alternately
  projections  with --data: the same step with each attention's projections as separate
             matmuls (the product) and joined into one (q, k, v of self-attention; k, v of
             the memory), alternately
  masks      with --data: the same step with dropout masks from model/dropout.py (the
             product) and from torch's dropout, alternately (with a recipe that has
             dropout; --stage 2 for the encoder's own dropout)
  attention  with --data: the same step with the attention in training on a CPU as
             model/attention.py's explicit product (the product) and as SDPA's math kernel,
             alternately
  shapes     with --data: the same step on a new batch and on that batch again (oneDNN's
             kernels for its matmul shapes then built): what changing batch shapes cost
  compile    with --data: the same step eager and through torch.compile (each mode of
             --compile-modes, dynamic shapes, a fresh inductor cache), alternately; the
             first compiled step's seconds (the compile) are printed apart

    python bench/step_parts.py --data /tmp/prep-fast --recipe recipes/fast-cpu.yaml --threads 2
    python bench/step_parts.py --smoke
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import common


def plain_loss(logits, labels, smoothing):
    """The trainer's loss before nmt_bert.model.loss: two cross-entropies over a float copy."""
    import torch
    import torch.nn.functional as F

    from nmt_bert.model.special_tokens import PAD

    flat, flat_labels = logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1)
    loss = F.cross_entropy(flat, flat_labels, ignore_index=PAD, label_smoothing=smoothing,
                           reduction="sum")
    with torch.no_grad():
        nll = F.cross_entropy(flat, flat_labels, ignore_index=PAD, reduction="sum")
    return loss, nll


def median_ms(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def loss_rows(rows: int, vocab: int, reps: int, blocks: list[int]) -> list[dict]:
    import torch

    from nmt_bert.model import loss as loss_module

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=g) * 3).bfloat16().requires_grad_()
    labels = torch.randint(1, vocab, (rows,), generator=g)
    labels[::12] = 0  # some padding

    def run(fn):
        def once():
            loss, _ = fn(logits, labels, 0.1)
            (loss / rows).backward()
            logits.grad = None
        return once

    out = [{"system": "plain F.cross_entropy (before)", "ms": median_ms(run(plain_loss), reps)}]
    saved = loss_module.CPU_BLOCK
    try:
        for block in blocks:
            loss_module.CPU_BLOCK = block
            out.append({"system": f"model/loss.py, {block:,}-element blocks"
                        + (" (product)" if block == saved else ""),
                        "ms": median_ms(run(loss_module.label_smoothed_loss), reps)})
    finally:
        loss_module.CPU_BLOCK = saved
    return out


def optimizer_rows(config, reps: int) -> list[dict]:
    import torch

    from nmt_bert.model.adapters import ADAPTERS
    from nmt_bert.model.decoder import Decoder

    m = config.model
    torch.manual_seed(0)
    parts = [ADAPTERS[m.adapter](384, m.d_model, m.adapter_hidden, 0.0),
             Decoder(config.data.tgt_vocab_size, m.d_model, m.decoder_layers, m.heads,
                     m.ffn_dim, 0.0, m.max_target_positions)]
    out = []
    for kind, kwargs in (("per-tensor loop", {"foreach": False}), ("foreach", {"foreach": True}),
                         ("fused (product)", {"fused": True})):
        params = [p for part in parts for p in part.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.98), **kwargs)
        out.append({"system": f"AdamW, {kind}", "ms": median_ms(opt.step, reps),
                    "params": sum(p.numel() for p in params)})
    return out


def stage1_trainer(args, config, run_dir: Path):
    """The product's trainer at the start of stage 1 (state cache attached), or of stage 2
    with --stage 2, warmed by 3 steps."""
    from nmt_bert.train.training import Trainer
    from train_throughput import _setup

    setup, log = _setup(str(args.data), config, run_dir)
    trainer = Trainer(setup, log.run, common.device_of(args.device), log)
    trainer.begin_stage(1)
    if args.stage == 2:
        trainer.begin_stage(2)
    for _ in range(3):
        trainer.train_step()
    return trainer


def efficiency(lens, batches) -> float:
    """Real / padded positions of one side over `batches`."""
    return sum(int(lens[b].sum()) for b in batches) / sum(len(b) * int(lens[b].max())
                                                          for b in batches)


def paired_rows(times: dict) -> list[dict]:
    """A row per setting from its step times (seconds, one per round): median and mean ms,
    and the paired ratio, the median over rounds of its time over the first setting's."""
    first = next(iter(times.values()))
    return [{"system": name, "ms": 1000 * statistics.median(t), "mean_ms": 1000 * statistics.mean(t),
             "paired": statistics.median(b / a for a, b in zip(first, t)),
             "times_s": t, "steps": len(t)} for name, t in times.items()]


def alternate_steps(args, config, settings: dict, steps: int) -> list[dict]:
    """Time the product's stage-1 step under each setting, alternately in one trainer (the
    order reversed every other round): `settings` maps a row name to a function that puts
    the trainer into that setting before its step. Each round's settings step on the same
    batches, so batch sizes do not spread the comparison.

    Each round first takes one untimed step on its batches. A step on batch shapes oneDNN
    has not seen builds a kernel for each of its matmuls first (`shape_rows`), so without it
    the first setting of a round paid those builds and the others did not: the rows then
    compare the same kernels' run times, and the figures are those of a step on shapes
    already seen."""
    times = {name: [] for name in settings}
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-run-") as tmp:
        trainer = stage1_trainer(args, config, Path(tmp))
        names, fresh = list(settings), trainer.next_batch
        for i in range(steps):
            batches = [fresh() for _ in range(trainer.cfg.accumulate)]
            trainer.next_batch = iter(batches).__next__
            trainer.train_step()  # untimed: builds the kernels for these shapes
            for name in names if i % 2 else names[::-1]:
                settings[name](trainer)
                trainer.next_batch = iter(batches).__next__
                start = time.perf_counter()
                trainer.train_step()
                times[name].append(time.perf_counter() - start)
    return paired_rows(times)


def shape_rows(args, config, steps: int) -> list[dict]:
    """The stage-1 step on a new batch, then on that batch again: the second step finds
    oneDNN's kernels for every matmul shape built (its primitive cache), the first builds
    them. The difference is what batch shapes that change every step cost."""
    times = {"new batch shapes (every training step)": [], "the same batch again": []}
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-run-") as tmp:
        trainer = stage1_trainer(args, config, Path(tmp))
        fresh = trainer.next_batch
        for _ in range(steps):
            batches = [fresh() for _ in range(trainer.cfg.accumulate)]
            for t in times.values():
                trainer.next_batch = iter(batches).__next__
                start = time.perf_counter()
                trainer.train_step()
                t.append(time.perf_counter() - start)
    return paired_rows(times)


def alternate_attribute(args, config, owner, attribute: str, values: dict, steps: int
                        ) -> list[dict]:
    """`alternate_steps` where each row is one value of `owner.attribute` (a row name maps to
    its value); the product's value is put back afterwards."""
    product = getattr(owner, attribute)

    def use(value):
        return lambda trainer: setattr(owner, attribute, value)

    try:
        return alternate_steps(args, config, {name: use(value) for name, value in values.items()},
                               steps)
    finally:
        setattr(owner, attribute, product)


def step_rows(args, config, steps: int) -> list[dict]:
    """Alternate the two losses step by step in the product's stage-1 trainer."""
    import nmt_bert.train.trainer as trainer_module

    return alternate_attribute(args, config, trainer_module, "label_smoothed_loss", {
        "plain F.cross_entropy (before)": plain_loss,
        "model/loss.py (product)": trainer_module.label_smoothed_loss}, steps)


def batch_rows(args, config, steps: int) -> list[dict]:
    """Stage-1 steps on source-first and target-first batches of epoch 0, alternately."""
    from nmt_bert.train.batches import token_batches

    t = config.train
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-run-") as tmp:
        trainer = stage1_trainer(args, config, Path(tmp))
        data = trainer.setup.train_data
        epochs = {side: token_batches(data.src_lens, data.tgt_lens, t.batch_tokens, t.seed, 0,
                                      sort_by=side) for side in ("source", "target")}
        seconds, tokens = dict.fromkeys(epochs, 0.0), dict.fromkeys(epochs, 0)
        for i in range(steps):
            for side in ("source", "target") if i % 2 else ("target", "source"):
                index = epochs[side][i % len(epochs[side])]
                trainer.next_batch = lambda index=index: data.collate(index)
                start = time.perf_counter()
                out = trainer.train_step()
                seconds[side] += time.perf_counter() - start
                tokens[side] += out["tokens"]
    return [{"system": f"sorted by {side} first", "tok_s": tokens[side] / seconds[side],
             "batches": len(batches), "src_eff": efficiency(data.src_lens, batches),
             "tgt_eff": efficiency(data.tgt_lens, batches), "steps": steps}
            for side, batches in epochs.items()]


DROPOUT_SITES = {  # (residual, activation, attention) rates
    "none": (0.0, 0.0, 0.0),
    "model.dropout 0.1 (embeddings, adapter, sublayer outputs)": (0.1, 0.0, 0.0),
    "+ activation_dropout 0.1 (FFN hidden units)": (0.1, 0.1, 0.0),
    "+ attention_dropout 0.1 (attention weights)": (0.1, 0.0, 0.1),
    "all three 0.1 (every site, as before)": (0.1, 0.1, 0.1),
}


def set_dropout(model, residual: float, activation: float, attention: float) -> None:
    """Set the rates of the model's dropout sites in place (all are read at forward time)."""
    from torch import nn

    from nmt_bert.model.decoder import DecoderLayer, MultiHeadAttention

    ffn = {id(m.ffn[2]) for m in model.modules() if isinstance(m, DecoderLayer)}
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.dropout = attention
        elif isinstance(m, nn.Dropout):
            m.p = activation if id(m) in ffn else residual


def dropout_rows(args, config, steps: int) -> list[dict]:
    """The stage-1 step with dropout at each set of sites, alternately in one trainer."""
    return alternate_steps(args, config, {
        name: lambda trainer, rates=rates: set_dropout(trainer.model, *rates)
        for name, rates in DROPOUT_SITES.items()}, steps)


def joined_projections(attn, x, *names):
    """The attention's projections as one matmul: weights (n * D, D) joined for each call."""
    import torch
    import torch.nn.functional as F

    linears = [getattr(attn, name) for name in names]
    weight = torch.cat([linear.weight for linear in linears])  # (n * D, D)
    bias = torch.cat([linear.bias for linear in linears])  # (n * D,)
    return F.linear(x, weight, bias).chunk(len(names), dim=-1)  # n x (B, t, D)


def projection_rows(args, config, steps: int) -> list[dict]:
    """The stage-1 step with separate and with joined attention projections, alternately."""
    from nmt_bert.model.decoder import MultiHeadAttention

    return alternate_attribute(args, config, MultiHeadAttention, "project", {
        "separate q, k, v (product)": MultiHeadAttention.project,
        "joined into one matmul": joined_projections}, steps)


def mask_rows(args, config, steps: int) -> list[dict]:
    """The step with dropout masks drawn by model/dropout.py and by torch, alternately."""
    from nmt_bert.model import dropout

    return alternate_attribute(args, config, dropout, "CPU_MASKS", {
        "torch's dropout (before)": False, "model/dropout.py (product)": True}, steps)


def attention_rows(args, config, steps: int) -> list[dict]:
    """The step with the explicit CPU attention and with SDPA's math kernel, alternately."""
    from nmt_bert.model import attention

    return alternate_attribute(args, config, attention, "CPU_EXPLICIT", {
        "SDPA's math kernel (before)": False, "model/attention.py (product)": True}, steps)


def compile_rows(args, config, steps: int) -> list[dict]:
    """The stage-1 step eager and compiled (each of --compile-modes), alternately in one
    trainer. Inductor's cache lives in a fresh directory, so the first compiled step pays
    the whole compile, as a user's first run would."""
    import os

    import torch

    modes = args.compile_modes.split(",")
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        compiled: dict = {}

        def use(mode):
            def put(trainer):
                if "eager" not in compiled:
                    compiled["eager"] = trainer.ddp_model
                if mode not in compiled:
                    compiled[mode] = torch.compile(compiled["eager"], dynamic=True,
                                                   mode=None if mode == "default" else mode)
                trainer.ddp_model = compiled[mode]
            return put

        rows = alternate_steps(args, config, {
            "eager (product)": use("eager"),
            **{f"torch.compile, mode {mode}": use(mode) for mode in modes}}, steps + 1)
    for row in rows:  # the first step of each apart: it holds the compile
        after = row["times_s"][1:]
        row.update(first_s=row["times_s"][0], ms=1000 * statistics.median(after),
                   mean_ms=1000 * statistics.mean(after), steps=len(after))
    return rows


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=common.REPO / "recipes" / "fast-cpu.yaml")
    p.add_argument("--rows", type=int, default=2100, help="target tokens in the loss's batch")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions of each part")
    p.add_argument("--blocks", default=f"{2**16},{2**18},{2**20},{2**22}",
                   help="block sizes (float32 elements) of the blocked loss")
    p.add_argument("--steps", type=int, default=20, help="alternations of the step comparison")
    p.add_argument("--cache-dir", type=Path, help="reuse a state cache (default: build a new one)")
    p.add_argument("--parts",
                   default="loss,optimizer,step,batches,dropout,projections,masks,attention,"
                           "shapes",
                   help="which parts to time (step, batches, dropout, projections, masks, "
                        "attention, shapes and compile need --data; compile is not in the default, its compile takes a "
                        "minute or more)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1,
                   help="the stage whose step the trainer's parts time (2: the encoder "
                        "trainable, no state cache)")
    p.add_argument("--compile-modes", default="default",
                   help="torch.compile modes of the compile part, comma-separated "
                        "(default, max-autotune-no-cudagraphs, ...)")
    args = p.parse_args()
    common.quiet()
    smoke = common.apply_smoke(args)
    if smoke:
        args.rows, args.reps, args.steps, args.blocks = 64, 2, 2, "4096"
        args.recipe = None  # the tiny model of the smoke assets
    common.set_threads(args.threads)
    config = common.load_run_config(args, args.recipe) if args.data else None
    if config is None:
        from nmt_bert.config import load_config

        config = load_config(args.recipe, args.sets)
    vocab = 97 if smoke else config.data.tgt_vocab_size
    parts = args.parts.split(",")
    results = {}
    if "loss" in parts:
        results["loss"] = loss_rows(args.rows, vocab, args.reps,
                                    [int(b) for b in args.blocks.split(",")])
    if "optimizer" in parts:
        results["optimizer"] = optimizer_rows(config, args.reps)
    trainer_parts = {"step": step_rows, "batches": batch_rows, "dropout": dropout_rows,
                     "projections": projection_rows, "masks": mask_rows,
                     "attention": attention_rows, "shapes": shape_rows,
                     "compile": compile_rows}
    if args.data:  # the trainer's parts read one state cache: --cache-dir, or one built here
        own_cache = None if args.cache_dir else tempfile.mkdtemp(prefix="nmt-bert-bench-cache-")
        config.train.cache_dir = str(args.cache_dir or own_cache)
        try:
            for part, rows in trainer_parts.items():
                if part in parts:
                    results[part] = rows(args, config, args.steps)
        finally:
            if own_cache:
                shutil.rmtree(own_cache, ignore_errors=True)
    for part, rows in results.items():
        print(f"\n{part}" + (f" ({args.rows:,} x {vocab:,} bf16 logits)" if part == "loss" else ""))
        if part == "batches":
            common.print_table(rows, [("system", "stage-1 batches", ""),
                                      ("tok_s", "real src+tgt tok/s", ",.0f"),
                                      ("batches", "batches an epoch", "d"),
                                      ("src_eff", "src real/padded", ".3f"),
                                      ("tgt_eff", "tgt real/padded", ".3f")])
        elif part == "compile":
            common.print_table(rows, [("system", "system", ""), ("ms", "median ms", ".1f"),
                                      ("mean_ms", "mean ms", ".1f"),
                                      ("first_s", "first step s", ".1f")])
        else:  # paired: the median over rounds of a row's step time / the first row's
            common.print_table(rows, [("system", "system", ""), ("ms", "median ms", ".1f")]
                               + ([("paired", "paired ratio", ".3f")] if "paired" in rows[0]
                                  else []))
    common.write_json(args.out, {"benchmark": "step_parts", "machine": common.machine_info("cpu"),
                                 "threads": args.threads, "rows": args.rows, "vocab": vocab,
                                 **results})


if __name__ == "__main__":
    main()
