"""BERT2BERT against BERT2RND (today's default) and the Hugging Face BERT2BERT, same data, same
wall-clock training budget: test BLEU/chrF per reference with signatures, training tokens/s
and each system's own peak RSS.

Systems, each trained in its own process for --minutes (`train.max_minutes`):
- bert2rnd: the recipe as it is (pretrained encoder -> adapter -> random pre-LN decoder);
- bert2bert: the recipe + B2B_SETS (model.decoder_init=encoder: the decoder warm-started from
  the encoder checkpoint, target side in the encoder's own pruned pieces);
- hf-bert2bert: `EncoderDecoderModel.from_encoder_decoder_pretrained(E, E)` from the same
  encoder directory (bench/hf_peer.py --bert2bert), decoder as deep as bert2bert's.
Data is prepared once per target vocabulary under --work and reused.

    python bench/bert2bert.py --minutes 15 --threads 2 --out results/bert2bert/fast.json
    python bench/bert2bert.py --recipe bible-es-en --minutes 60 --threads 2 \
        --out results/bert2bert/hour.json
    python bench/bert2bert.py --smoke
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import common
from _measure import run_command

# What bert2bert changes in a recipe (measured on 2 cores; see bench/README.md).
B2B_SETS = ["data.target_tokenizer=encoder", "model.decoder_init=encoder",
            "model.decoder_source_layers=first", "train.lr=0.0005"]
SYSTEMS = ("bert2rnd", "bert2bert", "hf-bert2bert")
CLI = [sys.executable, "-m", "nmt_bert"]


def prepare(out: Path, recipe: str, sets: list[str], corpus: list[str], log: Path) -> None:
    """`nmt-bert prepare` into `out` unless a prepared directory is already there."""
    if (out / "manifest.json").is_file():
        return
    flags = [a for s in sets for a in ("--set", s)]
    done = run_command([*CLI, "prepare", "--recipe", recipe, "--out", str(out), *corpus, *flags],
                       log)
    if done["returncode"]:
        raise SystemExit(f"prepare {out} failed; see {log}")


def train_ours(name: str, data: Path, work: Path, recipe: str, sets: list[str],
               minutes: float) -> dict:
    """Train (a finished run of the same name, recipe and budget is reused), translate the
    test set with the recipe's decode settings, and report."""
    name = f"{name}-{Path(recipe).stem}-{minutes:g}m"
    run, log = work / name, work / f"{name}.train.log"
    flags = [a for s in [*sets, f"train.max_minutes={minutes}"] for a in ("--set", s)]
    if not (run / "finished.json").is_file():
        trained = run_command([*CLI, "train", "--recipe", recipe, "--data", str(data), "--out",
                               str(run), "--device", "cpu", *flags], log)
        if trained["returncode"]:
            raise SystemExit(f"{name}: training failed; see {log}")
    else:
        trained = {"seconds": None, "peak_rss_mb": None, "reused": True}
    hyp = work / f"{name}.test.hyp"
    decoded = run_command([*CLI, "translate", str(data / "test.src"), "--model", str(run), "-o",
                           str(hyp)], work / f"{name}.translate.log")
    if decoded["returncode"]:
        raise SystemExit(f"{name}: translation failed; see {work / f'{name}.translate.log'}")
    return {"run": str(run), "train": {**trained, **train_rates(run)},
            "translate_seconds": decoded["seconds"], "hypotheses": str(hyp)}


def train_rates(run: Path) -> dict:
    """Steps and training tokens/s (src + tgt, padded) from the run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    last = train[-1] if train else {}
    return {"steps": last.get("global_step", last.get("step")),
            "tokens_per_s": last.get("tokens_per_s")}


def train_peer(data: Path, work: Path, encoder: str, minutes: float, layers: int,
               threads: int, sets: list[str]) -> dict:
    name = f"hf-bert2bert-{minutes:g}m"
    out = work / f"{name}.json"
    cmd = [sys.executable, str(common.BENCH / "hf_peer.py"), "--bert2bert", "--data", str(data),
           "--encoder", encoder, "--minutes", str(minutes), "--layers", str(layers),
           "--threads", str(threads), "--out", str(out), "--hyp",
           str(work / f"{name}.test.hyp"), *[a for s in sets for a in ("--set", s)]]
    done = run_command(cmd, work / f"{name}.log")
    if done["returncode"]:
        raise SystemExit(f"hf-bert2bert failed; see {work / f'{name}.log'}")
    peer = json.loads(out.read_text())
    return {"train": {"seconds": peer["train"]["seconds"], "steps": peer["train"]["steps"],
                      "tokens_per_s": peer["train"]["tokens_per_s"],
                      "peak_rss_mb": peer["peak_rss_mb"]},
            "translate_seconds": peer["decode"]["seconds"], "hypotheses": peer["hypotheses"]}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], data=False)
    p.add_argument("--recipe", default="fast-cpu", help="bundled recipe or YAML file")
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per system")
    p.add_argument("--work", type=Path, default=Path("/tmp/nmt-bert-bench-bert2bert"),
                   help="prepared data, runs and hypotheses (reused when present)")
    p.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=SYSTEMS)
    args = p.parse_args()
    common.quiet()
    corpus: list[str] = []
    smoke = common.apply_smoke(args)
    if smoke:
        from nmt_bert.tiny import tiny_sets

        args.minutes = min(args.minutes, 0.05)
        args.work = common.SMOKE_ROOT / "bert2bert"
        args.sets = [*tiny_sets(Path(args.encoder)), *common.SMOKE_EXTRA_SETS,
                     "model.encoder_layers=0", "train.stage1_steps=200", "train.eval_every=100",
                     *args.sets]
        corpus = ["--src", str(smoke["src"]), "--tgt", str(smoke["tgt"])]
    threads = args.threads or 0
    base = [f"model.encoder={args.encoder}", *args.sets]
    if threads:
        base.append(f"train.threads={threads}")
    args.work.mkdir(parents=True, exist_ok=True)
    data = {"bert2rnd": args.work / "data-rnd", "bert2bert": args.work / "data-b2b"}
    prepare(data["bert2rnd"], args.recipe, base, corpus, args.work / "prepare-rnd.log")
    prepare(data["bert2bert"], args.recipe, [*base, *B2B_SETS], corpus,
            args.work / "prepare-b2b.log")
    if (data["bert2rnd"] / "test.src").read_bytes() != (data["bert2bert"] / "test.src").read_bytes():
        raise SystemExit("the two prepared directories hold different test sets")
    from nmt_bert.config import load_config

    b2b_config = load_config(args.recipe, [*base, *B2B_SETS])
    # the peer: bert2bert's decoder depth and batches; the whole encoder, as HF users load it
    layers = b2b_config.model.decoder_layers
    peer_sets = [*(args.sets if smoke else []),
                 f"train.batch_tokens={b2b_config.train.batch_tokens}"]
    results = {}
    for name in args.systems:
        print(f"{name}: training for {args.minutes} min ...", flush=True)
        if name == "hf-bert2bert":
            results[name] = train_peer(data["bert2bert"], args.work, args.encoder, args.minutes,
                                       layers, threads, peer_sets)
        else:
            sets = base if name == "bert2rnd" else [*base, *B2B_SETS]
            results[name] = train_ours(name, data[name], args.work, args.recipe, sets,
                                       args.minutes)
    from quality import score

    sets = {name: [common.read_lines(r) for r in refs]
            for name, refs in common.reference_sets(data["bert2rnd"]).items()}
    for result in results.values():
        result["scores"] = score(common.read_lines(Path(result["hypotheses"])), sets)
    report(results)
    common.write_json(args.out, {
        "benchmark": "bert2bert", "machine": common.machine_info("cpu"), "recipe": args.recipe,
        "minutes": args.minutes, "threads": threads, "b2b_sets": B2B_SETS, "sets": args.sets,
        "systems": results})


def report(results: dict) -> None:
    from quality import print_signatures

    rows = []
    for name, r in results.items():
        for refs, scores in r["scores"].items():
            rows.append({"system": name, "refs": refs, "BLEU": scores["BLEU"]["score"],
                         "chrF2": scores["chrF2"]["score"],
                         "tok_s": r["train"].get("tokens_per_s") or 0.0,
                         "rss": r["train"].get("peak_rss_mb") or 0.0})
    common.print_table(rows, [("system", "system", ""), ("refs", "references", ""),
                              ("BLEU", "BLEU", ".2f"), ("chrF2", "chrF2", ".2f"),
                              ("tok_s", "train tok/s", ".0f"), ("rss", "peak RSS MB", ".0f")])
    print_signatures(results)


if __name__ == "__main__":
    main()
