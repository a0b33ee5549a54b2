"""Translation at scale: sentences/s and peak RSS of `nmt-bert translate` at 10k, 100k, 1M lines.

For each size N, a file of N short generated sentences (3-8 words; or the lines of --source,
cycled) is translated by the product's command, `nmt-bert translate FILE --model M -o OUT`,
in its own process (wall time and peak RSS from wait4, see _measure.run_command).
Sentences/s is the command's own summary figure: translation only (tokenize, encode,
search, detokenize), without start-up, model loading and file I/O.

The reference, at the first size only: the whole input read into memory and translated in
one `Translator.translate` call, then written (what `translate` did before it streamed), in
a process of its own. Streaming should match its sentences/s, and its peak RSS should not
grow with N.

    python bench/translate_scale.py --model runs/fast-cpu/run --threads 2 --out results/translate_scale.json
    python bench/translate_scale.py --tiny-model --threads 2 --out results/translate_scale-tiny.json
    python bench/translate_scale.py --smoke
"""

from __future__ import annotations

import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common
from _measure import measure, run_command

CLI = [sys.executable, "-m", "nmt_bert"]
SUMMARY = re.compile(r"translated (\d+) sentences in ([\d.]+) s: ([\d.]+) sentences/s")
WORDS = ("dios señor rey casa pueblo tierra día hijo padre hombre agua luz cielo dijo vino "
         "el la de y en que los las un una no se su por con para mar noche camino palabra "
         "mujer ciudad monte fuego pan vida corazón mano ojos voz grande nuevo todo").split()


def write_input(path: Path, count: int, source: Path | None, seed: int = 0) -> None:
    """`count` lines: --source's lines cycled, else 3-8 random words from WORDS."""
    rng = random.Random(seed)
    pool = None
    if source is not None:
        pool = [line for line in common.read_lines(source) if line.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            if pool:
                f.write(pool[i % len(pool)] + "\n")
            else:
                f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "\n")


# --- child process: the reference ----------------------------------------------------------
def whole_input(model: str, source: str, out: str, beam: int, device: str,
                sets: list[str]) -> dict:
    """Read everything, translate it in one call, write everything (the pre-streaming path)."""
    from nmt_bert.decode.load import open_translator
    from nmt_bert.textio import read_lines, write_lines

    translator = open_translator(Path(model), device=device,
                                 overrides=[f"decode.beam_size={beam}", "decode.nbest=1", *sets])
    start = time.perf_counter()
    lines = read_lines(Path(source))
    results = translator.translate(lines)
    write_lines(Path(out), [t.text for t in results])
    stats = translator.stats
    return {"sentences": stats.sentences, "translate_seconds": round(stats.seconds, 2),
            "sentences_per_s": round(stats.sentences_per_second, 1),
            "read_translate_write_seconds": round(time.perf_counter() - start, 2)}


# --- one size ------------------------------------------------------------------------------
def streaming(n: int, work: Path, model: Path, beam: int, device: str, sets: list[str],
              env: dict) -> dict:
    source, out, log = work / f"in-{n}.txt", work / f"out-{n}.txt", work / f"translate-{n}.log"
    result = run_command([*CLI, "translate", str(source), "--model", str(model), "-o", str(out),
                          "--beam", str(beam), "--device", device,
                          *[a for s in sets for a in ("--set", s)]], log, env)
    text = log.read_text(errors="replace")
    found = SUMMARY.search(text)
    if result["returncode"] != 0 or found is None:
        tail = "\n".join(text.splitlines()[-15:])
        raise SystemExit(f"translate of {n} lines failed (exit {result['returncode']}):\n{tail}")
    with open(out, "rb") as f:
        written = sum(1 for _ in f)
    if written != n:
        raise SystemExit(f"{out}: {written} lines for {n} input lines")
    return {"system": "streaming", "lines": n, "wall_seconds": result["seconds"],
            "translate_seconds": float(found[2]), "sentences_per_s": float(found[3]),
            "peak_rss_mb": result["peak_rss_mb"]}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], data=False)
    p.add_argument("--model", type=Path, help="run or checkpoint directory (default: as "
                   "`nmt-bert translate` picks one: $NMT_BERT_MODEL, else the newest run in runs/)")
    p.add_argument("--tiny-model", action="store_true",
                   help="translate with the --smoke run (tiny random encoder) at the full sizes")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    p.add_argument("--source", type=Path, help="lines to cycle through instead of generated ones")
    p.add_argument("--no-reference", action="store_true", help="skip the whole-input reference")
    p.add_argument("--work", type=Path, help="working directory (default: temporary, deleted)")
    args = p.parse_args()
    sets = list(args.sets)  # decode.* only: translate takes no other keys
    common.quiet()
    if args.smoke or args.tiny_model:
        paths = common.apply_smoke(args) if args.smoke else common.smoke_assets()
        args.model = paths["run"]
        if args.smoke:
            args.sizes = [s for s in args.sizes if s <= 1000] or [200, 1000]
    if args.model is None:
        from nmt_bert.decode.default_model import choose_model

        args.model, _ = choose_model(None)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} \
        if args.threads > 0 else {}
    work = args.work or Path(tempfile.mkdtemp(prefix="nmt-bert-bench-translate-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in sorted(args.sizes):
            print(f"{n:,} lines ...", flush=True)
            write_input(work / f"in-{n}.txt", n, args.source)
            rows.append(streaming(n, work, args.model, args.beam, args.device, sets, env))
            if n == min(args.sizes) and not args.no_reference:
                reference = measure("translate_scale:whole_input", {
                    "model": str(args.model), "source": str(work / f"in-{n}.txt"),
                    "out": str(work / f"reference-{n}.txt"), "beam": args.beam,
                    "device": args.device, "sets": sets}, threads=args.threads)
                rows.append({"system": "whole input (reference)", "lines": n, **reference})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(rows)
    common.write_json(args.out, {
        "benchmark": "translate_scale", "machine": common.machine_info(common.device_of(args.device)),
        "threads": args.threads, "model": str(args.model), "beam": args.beam, "sets": sets,
        "input": str(args.source) if args.source else "generated: 3-8 words from WORDS",
        "rows": rows})


def report(rows: list[dict]) -> None:
    print()
    common.print_table(rows, [("system", "system", ""), ("lines", "lines", ",d"),
                              ("sentences_per_s", "sentences/s", ",.1f"),
                              ("translate_seconds", "translate s", ".1f"),
                              ("wall_seconds", "wall s", ".1f"),
                              ("peak_rss_mb", "peak RSS MB", ",.0f")])
    stream = [r for r in rows if r["system"] == "streaming"]
    reference = next((r for r in rows if r["system"] != "streaming"), None)
    if len(stream) > 1:
        print(f"\npeak RSS from {stream[0]['lines']:,} to {stream[-1]['lines']:,} lines: "
              f"{stream[-1]['peak_rss_mb'] - stream[0]['peak_rss_mb']:+,.0f} MB")
    if reference is not None:
        print(f"streaming / whole-input sentences/s at {reference['lines']:,} lines: "
              f"{stream[0]['sentences_per_s'] / reference['sentences_per_s']:.2f}x")


if __name__ == "__main__":
    main()
