"""Scaling: time and peak RSS of prepare / train / translate as the corpus doubles.

For each size N (data.limit_train = N, the first N cleaned train pairs), through the CLI,
each command in its own process (peak RSS from wait4, see _measure.run_command):
  prepare    nmt-bert prepare --set data.limit_train=N          (reads the whole corpus)
  train      nmt-bert train: exactly one epoch of stage 1 from the encoder-state cache,
             stage 2 off; includes building the cache (reported apart) and the one
             end-of-stage validation on the dev set (a constant)
  translate  nmt-bert translate of the N training sources (greedy unless --beam)
Fixed costs (start-up, model load, validation) are in every figure, so the marginal cost
per pair, (t(N) - t(N/2)) / (N - N/2), is the number that shows linearity.

    python bench/scaling.py --threads 2 --out results/scaling.json
    python bench/scaling.py --smoke
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import common
from _measure import run_command

CLI = [sys.executable, "-m", "nmt_bert"]


def epoch_steps(data_dir: Path, config) -> int:
    """Optimizer steps in one epoch of `data_dir`'s train split under `config`."""
    from nmt_bert.train.batches import stage_plan, token_batches

    data = common.token_data(data_dir)
    t = config.train
    plan = stage_plan(t, 1)
    return max(1, len(token_batches(data.src_lens, data.tgt_lens, t.batch_tokens, t.seed, 0,
                                    sort_by=plan.sort_by, multiples=plan.multiples)) // t.accumulate)


def one_size(n: int, work: Path, corpus: list[str], sets: list[str], beam: int, device: str,
             env: dict, config) -> dict:
    root = work / f"n{n}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    data, run = root / "data", root / "run"
    row = {"pairs_requested": n}
    base_sets = [a for s in sets for a in ("--set", s)]
    row["prepare"] = run_command([*CLI, "prepare", "--out", str(data), *corpus, *base_sets,
                                  "--set", f"data.limit_train={n}"], root / "prepare.log", env)
    _check(row["prepare"], root / "prepare.log")
    manifest = json.loads((data / "manifest.json").read_text())
    row["pairs"] = manifest["splits"]["train"]["kept"]
    steps = epoch_steps(data, config)
    row["epoch_steps"] = steps
    row["train"] = run_command([*CLI, "train", "--data", str(data), "--out", str(run),
                                "--device", device, *base_sets,
                                "--set", f"train.stage1_steps={steps}", "--set", "train.stage2_steps=0",
                                "--set", f"train.eval_every={steps}", "--set", "train.cache_encoder=true",
                                "--set", f"train.cache_dir={root / 'cache'}",
                                "--set", "train.average_last=0", "--set", "train.log_every=1"],
                               root / "train.log", env)
    _check(row["train"], root / "train.log")
    meta = next((root / "cache").glob("encoder-*/meta.json"), None)
    row["cache_seconds"] = json.loads(meta.read_text())["seconds"] if meta else None
    row.update(train_phases(run / "metrics.jsonl", steps))
    from nmt_bert.data.prepared_dir import load_prepared

    sources = root / "sources.txt"
    sources.write_text("".join(s + "\n" for s in load_prepared(data).split("train")["src"]),
                       encoding="utf-8")
    row["translate"] = run_command([*CLI, "translate", str(sources), "--model", str(run),
                                    "--output", str(root / "translations.txt"), "--beam", str(beam),
                                    "--device", device], root / "translate.log", env)
    _check(row["translate"], root / "translate.log")
    return row


def train_phases(metrics: Path, steps: int) -> dict:
    """Epoch-loop and validation seconds from the run's per-step records (train.log_every=1).

    The loop: first to last step record, scaled by steps / (steps - 1) for the first step;
    validation: last step record to the eval record (validation time depends on how long
    the half-trained model's outputs are, so it is kept out of the per-pair loop cost).
    """
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    times = [r["time"] for r in records if r["kind"] == "train"]
    evals = [r["time"] for r in records if r["kind"] == "eval"]
    if len(times) < 2 or not evals:
        return {"epoch_seconds": None, "validation_seconds": None}
    return {"epoch_seconds": round((times[-1] - times[0]) * steps / (steps - 1), 2),
            "validation_seconds": round(evals[-1] - times[-1], 2)}


def _check(result: dict, log: Path) -> None:
    if result["returncode"] != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"command failed (exit {result['returncode']}), see {log}:\n" + "\n".join(tail))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], data=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 16000])
    p.add_argument("--recipe", type=Path, help="nmt-bert recipe used by every command")
    p.add_argument("--src", type=Path, help="source file of the corpus (default: bundled Bible)")
    p.add_argument("--tgt", type=Path, help="target file of the corpus")
    p.add_argument("--beam", type=int, default=1, help="beam size for translate")
    p.add_argument("--work", type=Path, help="working directory (default: temporary, deleted)")
    args = p.parse_args()
    common.quiet()
    smoke = common.apply_smoke(args)
    if smoke:
        args.src, args.tgt = smoke["src"], smoke["tgt"]
        args.sizes = [s for s in args.sizes if s <= 200] or [100, 200]  # two: a marginal cost
        args.sets = ["data.tgt_vocab_size=40", "data.dev_fraction=0.1", "data.test_fraction=0.05",
                     *args.sets]
    sets = [f"model.encoder={args.encoder}", *args.sets]
    if args.threads > 0:
        sets.append(f"train.threads={args.threads}")
    corpus = (["--src", str(args.src), "--tgt", str(args.tgt)] if args.src else [])
    corpus += ["--recipe", str(args.recipe)] if args.recipe else []
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} \
        if args.threads > 0 else {}
    from nmt_bert.config import load_config

    config = load_config(args.recipe, sets)
    work = args.work or Path(tempfile.mkdtemp(prefix="nmt-bert-bench-scaling-"))
    rows = []
    try:
        for n in sorted(args.sizes):
            print(f"N = {n} ...", flush=True)
            rows.append(one_size(n, work, corpus, sets, args.beam, args.device, env, config))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(rows)
    common.write_json(args.out, {
        "benchmark": "scaling", "machine": common.machine_info(common.device_of(args.device)),
        "threads": args.threads, "sets": sets, "beam": args.beam,
        "corpus": str(args.src) if args.src else "bundled", "sizes": rows})


def report(rows: list[dict]) -> None:
    """One line per phase and size: seconds, peak RSS, cost per pair (average and marginal).

    "epoch" is the training loop alone (inside "train", without start-up, cache, validation).
    """
    def phases(r: dict) -> dict:
        return {"prepare": (r["prepare"]["seconds"], r["prepare"]["peak_rss_mb"], ""),
                "train": (r["train"]["seconds"], r["train"]["peak_rss_mb"],
                          f"cache {r['cache_seconds']} s, validation {r['validation_seconds']} s"),
                "epoch": (r["epoch_seconds"], None, f"{r['epoch_steps']} steps"),
                "translate": (r["translate"]["seconds"], r["translate"]["peak_rss_mb"], "")}

    table = []
    for phase in ("prepare", "train", "epoch", "translate"):
        previous = None
        for r in rows:
            seconds, rss, note = phases(r)[phase]
            if seconds is None:
                continue
            n = r["pairs"]
            line = {"phase": phase, "n": n, "s": seconds, "rss": rss, "avg": 1000 * seconds / n,
                    "note": note}
            if previous is not None and n > previous[0]:
                line["marg"] = 1000 * (seconds - previous[1]) / (n - previous[0])
            table.append(line)
            previous = (n, seconds)
    print()
    common.print_table(table, [("phase", "phase", ""), ("n", "pairs", "d"), ("s", "seconds", ".1f"),
                               ("rss", "peak RSS MB", ".0f"), ("avg", "ms/pair", ".2f"),
                               ("marg", "marginal ms/pair", ".2f"), ("note", "", "")])


if __name__ == "__main__":
    main()
