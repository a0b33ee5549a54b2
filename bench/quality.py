"""Test-set quality: BLEU, chrF and TER (sacreBLEU, with signatures) of several systems.

Each reference is scored alone and all together; for the bundled Bible corpus that is the
WEB (test.ref), the KJV (test.ref2) and both. Systems are trained runs (translated here with
nmt-bert's Translator), ready-made hypothesis files (e.g. hf_peer.py's), and Apertium's
rule-based Spanish->English (`apertium -u spa-eng`) when it is installed.

    python bench/quality.py --data /tmp/prep-bible --runs fast=runs/fast-cpu/run \
        hf=results/hf-peer/test.hyp --out results/quality.json
    python bench/quality.py --smoke
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import common


def translate_run(path: Path, sources: list[str], device: str, beam: int | None) -> list[str]:
    from nmt_bert.decode.translator import Translator

    overrides = [f"decode.beam_size={beam}"] if beam else []
    translator = Translator.from_checkpoint(path, device=device, overrides=overrides + ["decode.nbest=1"])
    return [t.text for t in translator.translate(sources)]


def apertium(source_file: Path, mode: str) -> list[str]:
    """Apertium's translation of `source_file`, unknown-word marks dropped (-u)."""
    out = subprocess.run(["apertium", "-u", mode], stdin=open(source_file, "rb"),
                         capture_output=True, check=True)
    return out.stdout.decode("utf-8").splitlines()


def apertium_version() -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "apertium-eng-spa"],
                             capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def score(hyps: list[str], sets: dict[str, list[list[str]]]) -> dict:
    from nmt_bert.metrics import score_lines

    return {name: {s.name: {"score": round(s.score, 2), "signature": s.signature}
                   for s in score_lines(hyps, refs)} for name, refs in sets.items()}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="*", default=[], metavar="NAME=PATH",
                   help="run/checkpoint directories or hypothesis files, one per system")
    p.add_argument("--beam", type=int, help="beam size for runs (default: each run's decode config)")
    p.add_argument("--apertium", choices=("auto", "on", "off"), default="auto",
                   help="score Apertium too (auto: when the `apertium` command exists)")
    p.add_argument("--apertium-mode", default="spa-eng", help="see `apertium -l`")
    p.add_argument("--hyp-dir", type=Path, help="where hypotheses go (default: beside --out)")
    args = p.parse_args()
    common.quiet()
    smoke = common.apply_smoke(args)
    if smoke and not args.runs:
        args.runs = [f"smoke={smoke['run']}"]
    if args.data is None:
        p.error("--data is required (or --smoke)")
    common.set_threads(args.threads)
    from nmt_bert.data.prepared_dir import load_prepared

    source_file = load_prepared(args.data).source_file("test")
    sources = common.read_lines(source_file)
    sets = {name: [common.read_lines(r) for r in refs]
            for name, refs in common.reference_sets(args.data).items()}
    hyp_dir = args.hyp_dir or (args.out.parent if args.out else Path("/tmp/nmt-bert-bench-quality"))
    hyp_dir.mkdir(parents=True, exist_ok=True)

    systems = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        path = Path(path)
        start = time.perf_counter()
        hyps = common.read_lines(path) if path.is_file() else \
            translate_run(path, sources, args.device, args.beam)
        systems[name] = {"path": str(path), "hyps": hyps, "seconds": time.perf_counter() - start,
                         "kind": "hypothesis file" if path.is_file() else "nmt-bert run"}
    if args.apertium == "on" or (args.apertium == "auto" and shutil.which("apertium")):
        start = time.perf_counter()
        systems["apertium"] = {"hyps": apertium(source_file, args.apertium_mode),
                               "seconds": time.perf_counter() - start, "kind": "rule-based",
                               "mode": args.apertium_mode, "package": apertium_version()}
    elif args.apertium == "auto":
        print("apertium not installed: apt-get install -y apertium apertium-eng-spa")

    results = {}
    for name, system in systems.items():
        hyps = system.pop("hyps")
        if len(hyps) != len(sources):
            raise SystemExit(f"{name}: {len(hyps)} lines, test set has {len(sources)}")
        (hyp_dir / f"{name}.test.hyp").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        results[name] = {**system, "seconds": round(system["seconds"], 1),
                         "scores": score(hyps, sets)}
    report(results)
    common.write_json(args.out, {"benchmark": "quality", "machine": common.machine_info(common.device_of(args.device)),
                                 "data": str(args.data), "sentences": len(sources),
                                 "beam": args.beam, "systems": results})


def report(results: dict) -> None:
    rows = []
    for name, r in results.items():
        for refs, scores in r["scores"].items():
            rows.append({"system": name, "refs": refs, **{m: s["score"] for m, s in scores.items()}})
    print()
    common.print_table(rows, [("system", "system", ""), ("refs", "references", ""),
                              ("BLEU", "BLEU", ".2f"), ("chrF2", "chrF2", ".2f"), ("TER", "TER", ".2f")])
    print_signatures(results)


def print_signatures(results: dict) -> None:
    """The sacreBLEU signatures per reference set (the same for every system: the first's)."""
    first = next(iter(results.values()), None)
    if first:
        for refs, scores in first["scores"].items():
            print(f"signatures ({refs}): " + " ; ".join(s["signature"] for s in scores.values()))


if __name__ == "__main__":
    main()
