"""Training throughput: source+target tokens/s, peak memory and MFU on the same batches.

Systems (each in its own process, see _measure.py):
  a  nmt-bert stage 1, encoder states from the on-disk cache (cache built first, timed)
  b  nmt-bert stage 1, live frozen encoder (no cache)
  c  nmt-bert stage 2, encoder trainable, word embeddings frozen (the default)
  d  nmt-bert stage 2, encoder and its word embeddings trainable
  e  Hugging Face EncoderDecoderModel (full-vocabulary encoder + random 6-layer BERT decoder
     of the encoder's width), AdamW, everything trainable
  f  the same peer with the encoder frozen (requires_grad False)

nmt-bert systems run the product's own `Trainer.train_step()` on a model from `run.build()`;
every system consumes the batches `Trainer.next_batch` draws in its stage (token_batches, same
seed, cut and padded as `stage_plan` cuts that stage; the peers as their stage: f as stage 1,
e as stage 2), and the script checks that the token counts agree step by step. With
`--set train.batch_order=source --set train.stage1_source_multiple=1 --set
train.stage1_target_multiple=1` every system reads the exact-length batches of earlier trees.

    python bench/train_throughput.py --data /tmp/prep-bible --threads 2 --out results/train.json
    python bench/train_throughput.py --smoke
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import common
from _measure import measure
from flops import bert_lookup, compute_dtype, mfu, param_stats, peak_flops

SYSTEMS = {
    "a": "nmt-bert stage 1, cached encoder states",
    "b": "nmt-bert stage 1, live frozen encoder",
    "c": "nmt-bert stage 2, embeddings frozen",
    "d": "nmt-bert stage 2, embeddings trainable",
    "e": "HF EncoderDecoderModel, all trainable",
    "f": "HF EncoderDecoderModel, encoder frozen",
}
STAGE = {"a": 1, "b": 1, "c": 2, "d": 2, "e": 2, "f": 1}  # the stage each system stands for


# --- shared by the child processes --------------------------------------------------------
def timed_steps(step, warmup: int, steps: int, device) -> dict:
    """Run `step()` (returns (src_tokens, tgt_tokens)) warmup + steps times; time the last steps."""
    for _ in range(warmup):
        step()
    common.sync(device)
    src = tgt = 0
    seconds = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        s, t = step()
        common.sync(device)
        seconds += time.perf_counter() - start
        src, tgt = src + s, tgt + t
    return {"steps": steps, "warmup": warmup, "seconds": round(seconds, 3),
            "src_tokens": src, "tgt_tokens": tgt,
            "tokens_per_s": round((src + tgt) / seconds, 1),
            "src_tokens_per_s": round(src / seconds, 1), "tgt_tokens_per_s": round(tgt / seconds, 1),
            "s_per_step": round(seconds / steps, 4)}


def _step_tokens(data, group) -> tuple[int, int]:
    src = sum(int(data.src_lens[i].sum()) for i in group)
    tgt = sum(int(data.tgt_lens[i].sum()) for i in group)
    return src, tgt


def _setup(data: str, config, run_dir: Path):
    """The product's run construction: RunDir.create + build (encoder loaded, pruned, model made)."""
    from rich.console import Console

    from nmt_bert.train.run_dir import RunDir
    from nmt_bert.train.run_log import RunLog
    from nmt_bert.train.run_setup import build, seed_everything

    run = RunDir(run_dir)
    run.create(Path(data), config)
    log = RunLog(run, console=Console(file=open(os.devnull, "w")))
    seed_everything(config.train.seed)
    return build(run, Path(data), config, None, log), log


# --- child processes ----------------------------------------------------------------------
def build_cache(data: str, config: dict, cache_dir: str, device: str) -> dict:
    """Build the stage-1 encoder-state cache under `cache_dir`: time, size, tokens/s."""
    from nmt_bert.config import config_from_dict
    from nmt_bert.train.encoder_cache import build_or_load

    cfg = config_from_dict(config)
    dev = common.device_of(device)
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-run-") as run_dir:
        setup, _ = _setup(data, cfg, Path(run_dir))
        model = setup.model.to(dev)
        model.freeze_encoder(True)
        start = time.perf_counter()
        cache = build_or_load(Path(cache_dir), model, setup.train_data, setup.fingerprint,
                              cfg.train.cache_dtype, dev, log=lambda message: None)
        common.sync(dev)
        seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in cache.directory.iterdir())
    tokens = int(cache.meta["tokens"])
    return {"seconds": round(seconds, 2), "tokens": tokens, "sentences": int(cache.meta["sentences"]),
            "tokens_per_s": round(tokens / seconds, 1), "size_mb": round(size / 2**20, 1),
            "dtype": cfg.train.cache_dtype, "directory": str(cache.directory)}


def nmt_bert_system(system: str, data: str, config: dict, warmup: int, steps: int,
                    cache_dir: str, device: str, attention: str = "product") -> dict:
    """Systems a-d: the product's Trainer.train_step() on the product's model (`attention`
    "torch": SDPA with torch's own kernel choice, in place of model/attention.py's CPU
    training product and devices.attention_kernels)."""
    if attention == "torch":
        import contextlib

        import nmt_bert.model.attention as attention_rule
        import nmt_bert.model.decoder as decoder

        attention_rule.CPU_EXPLICIT = False
        decoder.attention_kernels = lambda device: contextlib.nullcontext()
    from nmt_bert.config import config_from_dict
    from nmt_bert.train.batches import stage_plan
    from nmt_bert.train.run_setup import count_parameters
    from nmt_bert.train.training import Trainer

    cfg = config_from_dict(config)
    stage = STAGE[system]
    # System a reads the cache build_cache made under `cache_dir` (the same key: it is reused).
    cfg.train.cache_encoder, cfg.train.cache_dir = system == "a", str(cache_dir)
    cfg.train.freeze_embeddings_stage2 = system != "d"
    dev = common.device_of(device)
    with tempfile.TemporaryDirectory(prefix="nmt-bert-bench-run-") as tmp:
        setup, log = _setup(data, cfg, Path(tmp))
        trainer = Trainer(setup, log.run, dev, log)
        trainer.begin_stage(stage)
        stream = common.batch_stream(setup.train_data, cfg.train.batch_tokens, cfg.train.seed,
                                     cfg.train.accumulate, stage_plan(cfg.train, stage))
        mismatches, last_loss = 0, None

        def step() -> tuple[int, int]:
            nonlocal mismatches, last_loss
            src, tgt = _step_tokens(setup.train_data, next(stream))
            out = trainer.train_step()
            mismatches += out["tokens"] != src + tgt
            last_loss = out.get("loss")
            return src, tgt

        result = timed_steps(step, warmup, steps, dev)
        model = trainer.model
        params = param_stats(
            {"encoder": model.encoder, "adapter": model.adapter, "decoder": model.decoder},
            {"encoder": bert_lookup, "adapter": lambda n: False,
             "decoder": lambda n: n.startswith("positions.")})
    return {**result, "batch_mismatches": mismatches, "last_loss": last_loss, "params": params,
            "encoder_runs": system != "a", "parameters": count_parameters(model),
            "encoder_rows": setup.source_vocab.size,
            "encoder_rows_original": setup.source_vocab.original_size,
            "precision": cfg.train.precision, "batch_tokens": cfg.train.batch_tokens}


def peer_system(system: str, data: str, encoder: str, batch_tokens: int, seed: int,
                accumulate: int, layers: int, lr: float, warmup: int, steps: int,
                device: str, plan: dict | None = None) -> dict:
    """Systems e-f: EncoderDecoderModel with HF's own loss, AdamW, clip 1.0, same batches."""
    import torch

    from nmt_bert.devices import autocast_context
    from nmt_bert.model.encoders import load_encoder
    from nmt_bert.data.prepared_dir import load_prepared
    from nmt_bert.model.vocab import TargetVocab
    from nmt_bert.train.batches import BatchPlan
    from peer import build_peer, peer_loss

    plan = BatchPlan(plan["sort_by"], tuple(plan["multiples"])) if plan else BatchPlan()
    dev = common.device_of(device)
    enc, _ = load_encoder(encoder)  # full vocabulary, not pruned
    ec = enc.config
    vocab = len(TargetVocab(load_prepared(data).spm_path))
    model = build_peer(enc, vocab, layers, ec.hidden_size, ec.num_attention_heads,
                       ec.intermediate_size, seed=seed)
    if system == "f":
        model.encoder.requires_grad_(False)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    train = common.token_data(Path(data))  # identity lookup: the tokenizer's own ids
    stream = common.batch_stream(train, batch_tokens, seed, accumulate, plan)

    def step() -> tuple[int, int]:
        group = next(stream)
        for index in group:
            batch = train.collate(index, plan.multiples).to(dev)
            with autocast_context(dev, "auto"):
                loss = peer_loss(model, batch) / len(group)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return _step_tokens(train, group)

    result = timed_steps(step, warmup, steps, dev)
    stats = param_stats(
        {"encoder": model.encoder, "adapter": getattr(model, "enc_to_dec_proj", None),
         "decoder": model.decoder},
        {"encoder": bert_lookup, "adapter": lambda n: False,
         "decoder": lambda n: "position_embeddings" in n or "token_type_embeddings" in n})
    return {**result, "params": stats, "encoder_runs": True,
            "encoder_rows": enc.get_input_embeddings().num_embeddings,
            "decoder": {"layers": layers, "hidden": ec.hidden_size, "heads": ec.num_attention_heads,
                        "ffn": ec.intermediate_size, "vocab": vocab},
            "lr": lr, "precision": "auto", "batch_tokens": batch_tokens}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, help="nmt-bert recipe for the nmt-bert systems")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per system")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    p.add_argument("--systems", default="abcdef", help="which systems to run (letters a-f)")
    p.add_argument("--peer-layers", type=int, default=6, help="HF peer decoder layers")
    p.add_argument("--peer-lr", type=float, default=5e-5)
    p.add_argument("--cache-dir", type=Path,
                   help="where to build the encoder cache (default: a temporary directory)")
    p.add_argument("--attention", choices=["product", "torch"], default="product",
                   help="nmt-bert's attention: the product's rule (model/attention.py, "
                        "devices.attention_kernels) or SDPA with torch's own kernel choice")
    p.add_argument("--flops-n", type=int, default=2048, help="matmul size for the peak FLOP/s probe")
    args = p.parse_args()
    common.quiet()
    if common.apply_smoke(args):
        args.steps, args.warmup, args.flops_n = min(args.steps, 5), min(args.warmup, 1), 256
    if args.data is None:
        p.error("--data is required (or --smoke)")
    common.set_threads(args.threads)
    device = common.device_of(args.device)
    config = common.load_run_config(args, args.recipe)
    from nmt_bert.config import config_to_dict

    config_dict = config_to_dict(config)
    # Each system's MFU divides by the peak of the dtype its matmuls run in: nmt-bert
    # autocasts to bf16 where the CPU runs it natively, the peer's "auto" keeps fp32 on CPU.
    dtypes = {s: compute_dtype(device, config.train.precision if s in "abcd" else "auto",
                               cpu_bf16=s in "abcd") for s in args.systems}
    peaks = {}
    for dtype in sorted(set(dtypes.values())):
        peaks[dtype] = peak_flops(device, args.flops_n, dtype=dtype)
        print(f"peak {dtype} matmul: {peaks[dtype]['flops'] / 1e9:.1f} GFLOP/s "
              f"({args.threads or 'default'} threads)")
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="nmt-bert-bench-cache-"))
    results, cache = {}, None
    try:
        if "a" in args.systems:
            print("building the encoder-state cache ...", flush=True)
            cache = measure("train_throughput:build_cache",
                            {"data": str(args.data), "config": config_dict,
                             "cache_dir": str(cache_dir), "device": args.device}, args.threads)
            print(f"cache: {cache['sentences']} sentences, {cache['tokens']} tokens, "
                  f"{cache['size_mb']} MiB ({cache['dtype']}) in {cache['seconds']} s = "
                  f"{cache['tokens_per_s']:.0f} tokens/s, peak RSS {cache['peak_rss_mb']:.0f} MB")
        for system in args.systems:
            print(f"system {system}: {SYSTEMS[system]} ...", flush=True)
            common_kw = {"system": system, "data": str(args.data), "warmup": args.warmup,
                         "steps": args.steps, "device": args.device}
            if system in "abcd":
                r = measure("train_throughput:nmt_bert_system",
                            {**common_kw, "config": config_dict, "cache_dir": str(cache_dir),
                             "attention": args.attention},
                            args.threads)
            else:
                from dataclasses import asdict

                from nmt_bert.train.batches import stage_plan

                t = config.train
                r = measure("train_throughput:peer_system",
                            {**common_kw, "encoder": args.encoder, "batch_tokens": t.batch_tokens,
                             "seed": t.seed, "accumulate": t.accumulate,
                             "layers": args.peer_layers, "lr": args.peer_lr,
                             "plan": asdict(stage_plan(t, STAGE[system]))}, args.threads)
            r.update(mfu(r, peaks[dtypes[system]]["flops"]), mfu_dtype=dtypes[system])
            results[system] = {"description": SYSTEMS[system], **r}
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    report(results, cache)
    common.write_json(args.out, {
        "benchmark": "train_throughput", "machine": common.machine_info(device),
        "threads": args.threads, "attention": args.attention, "peaks": peaks,
        "steps": args.steps, "warmup": args.warmup,
        "data": str(args.data), "encoder": args.encoder, "config": config_dict,
        "cache": cache, "systems": results})


def report(results: dict, cache: dict | None) -> None:
    rows = []
    for system, r in results.items():
        trainable = sum(part["trainable"] for part in r["params"].values())
        rows.append({"system": f"{system}  {r['description']}", "tok_s": r["tokens_per_s"],
                     "s_step": r["s_per_step"], "rss": r["peak_rss_mb"], "train": trainable / 1e6,
                     "mfu_s": 100 * r["mfu_simple"], "mfu_x": 100 * r["mfu_split"],
                     "dtype": r["mfu_dtype"], "bad": r.get("batch_mismatches")})
    print()
    common.print_table(rows, [("system", "system", ""), ("tok_s", "src+tgt tok/s", ".0f"),
                              ("s_step", "s/step", ".3f"), ("rss", "peak RSS MB", ".0f"),
                              ("train", "trainable M", ".1f"), ("mfu_s", "MFU simple %", ".2f"),
                              ("mfu_x", "MFU split %", ".2f"), ("dtype", "vs peak of", ""),
                              ("bad", "batch mismatches", "d")])
    print()
    for stage in (1, 2):
        tokens = {(r["src_tokens"], r["tgt_tokens"]) for s, r in results.items() if STAGE[s] == stage}
        if tokens:
            print(f"same batches within stage {stage}: {'yes' if len(tokens) == 1 else 'NO'} "
                  f"(src, tgt tokens timed per system: {sorted(tokens)})")
    ours = next((r for r in results.values() if "encoder_rows_original" in r), None)
    if ours:
        print(f"encoder embedding rows: {ours['encoder_rows']:,} kept of "
              f"{ours['encoder_rows_original']:,} after pruning")
    if cache:
        print(f"cache build: {cache['seconds']} s, {cache['size_mb']} MiB, "
              f"{cache['tokens_per_s']:.0f} tokens/s")
    if "a" in results and "e" in results:
        print(f"stage 1 (cached) vs HF all-trainable: "
              f"{results['a']['tokens_per_s'] / results['e']['tokens_per_s']:.1f}x tokens/s")


if __name__ == "__main__":
    main()
