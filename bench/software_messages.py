"""Protected spans on software messages: BLEU, chrF and exact-placeholder share, with and without.

Builds the Spanish->English gettext corpus (bench/software_corpus.py: split by hashing the
English message), then for each setting prepares, trains (same recipe, same seed), translates
the test split and scores it. "protect" is the default (data.protect's default kinds);
"plain" sets data.protect=[] so pairs are neither masked in prepare nor in translation.
Reported per setting: BLEU, chrF, and over the test lines whose source has protected spans,
the share whose translation carries exactly those spans (the `score --source` figure).

    python bench/software_messages.py --out results/software-messages.json \
        --work /tmp/sw-bench --set train.threads=2
    python bench/software_messages.py --smoke
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import common
import software_corpus

SETTINGS = {"protect": [], "plain": ["data.protect=[]"]}


def run_setting(name: str, sets: list[str], corpus: Path, work: Path, recipe: str | None,
                device: str) -> dict:
    from rich.console import Console

    from nmt_bert.config import load_config
    from nmt_bert.data.corpora import CorpusSpec
    from nmt_bert.data.prepare import prepare
    from nmt_bert.data.protected_spans import span_agreement
    from nmt_bert.decode.translator import Translator
    from nmt_bert.metrics import score_lines
    from nmt_bert.train.training import train

    config = load_config(recipe, sets)
    data, run = work / f"data-{name}", work / f"run-{name}"
    started = time.time()
    spec = CorpusSpec(tsv=corpus / "train.tsv", dev=[corpus / "dev.tsv"],
                      test=[corpus / "test.tsv"])
    manifest = prepare(spec, data, config, console=Console(file=open(os.devnull, "w")))
    train(data, run, config, device=device)
    translator = Translator.from_checkpoint(run, device=device)
    sources = common.read_lines(data / "test.src")
    refs = common.read_lines(data / "test.ref")
    hyps = [t.text for t in translator.translate(sources)]
    (work / f"test-{name}.hyp").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    bleu, chrf = score_lines(hyps, [refs], names=("BLEU", "chrF2"))
    agreement = span_agreement(sources, hyps)
    return {"setting": name, "sets": sets, "BLEU": round(bleu.score, 2),
            "chrF2": round(chrf.score, 2), "bleu_signature": bleu.signature,
            "span_lines": agreement.lines_with_spans, "span_exact": agreement.matching,
            "span_exact_share": round(agreement.share, 2),
            "masked_train_pairs": manifest["protection"]["masked_train_pairs"],
            "test_lines": len(sources), "minutes": round((time.time() - started) / 60, 1)}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], data=False)
    p.add_argument("--work", type=Path, default=Path("/tmp/nmt-bert-software-messages"),
                   help="corpus, prepared data, runs and hypotheses go here")
    p.add_argument("--recipe", default="fast-cpu", help="recipe for both settings")
    p.add_argument("--mo-dir", type=Path, action="append", default=[],
                   help="more .mo directories for the corpus (see bench/software_corpus.py)")
    args = p.parse_args()
    common.quiet()
    common.set_threads(args.threads)
    limit, recipe = 0, args.recipe
    if args.smoke:
        from nmt_bert.tiny import TINY_MODEL

        paths = common.smoke_assets()
        args.work = common.SMOKE_ROOT / "software-messages"
        args.encoder, recipe, limit = str(paths["encoder"]), None, 600
        args.sets = [*TINY_MODEL, *common.SMOKE_EXTRA_SETS, "data.tgt_vocab_size=200",
                     "train.stage1_steps=20", "train.stage2_steps=0", "train.eval_every=20",
                     "train.threads=1", "decode.beam_size=1", *args.sets]
    corpus = args.work / "corpus"
    stats = software_corpus.build(corpus, [software_corpus.SYSTEM_CATALOGS, *args.mo_dir], limit)
    print(f"corpus: {stats['messages']} messages, " + ", ".join(
        f"{k} {v}" for k, v in stats["pairs"].items()))
    rows = []
    for name, extra in SETTINGS.items():
        sets = [f"model.encoder={args.encoder}", *args.sets, *extra]
        rows.append(run_setting(name, sets, corpus, args.work, recipe, args.device))
        print(f"{name}: BLEU {rows[-1]['BLEU']}, chrF {rows[-1]['chrF2']}, spans exact "
              f"{rows[-1]['span_exact_share']}% of {rows[-1]['span_lines']} lines")
    common.print_table(rows, [("setting", "setting", ""), ("BLEU", "BLEU", ".2f"),
                              ("chrF2", "chrF2", ".2f"), ("span_exact_share", "spans exact %", ".2f"),
                              ("span_lines", "lines w/ spans", "d"), ("minutes", "min", ".1f")])
    common.write_json(args.out, {"corpus": {k: stats[k] for k in ("messages", "pairs")},
                                 "catalogs": len(stats["catalogs"]), "recipe": recipe,
                                 "results": rows, "machine": common.machine_info(args.device)})


if __name__ == "__main__":
    main()
