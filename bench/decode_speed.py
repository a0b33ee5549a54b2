"""Decoding speed: nmt-bert's Translator, its CTranslate2 exports and HF generate(), greedy and beam 5.

nmt-bert: `Translator.from_checkpoint(--model).translate(test.src)`, the `translate` command's
path, timed end to end (tokenize, encode, search, detokenize) after one warm-up batch.

CTranslate2 fp32 / int8: the same model exported (`nmt-bert export --quantization float32 /
int8`, written under --hyp-dir before timing) and read through `Ct2Translator`, the path
`translate --model EXPORT_DIR` takes: same sentences, batches, decode options and timing,
with --threads shared out among --ct2-workers batches searched side by side (CTranslate2's
inter_threads; 0: the translator's own choice, `cpu_workers`; several values give one row
each). Only models with an
exportable adapter (model.adapter affine or none) get these systems; --smoke trains a tiny
affine twin of the smoke run for them and uses it for every system.

Peer: an EncoderDecoderModel with the checkpoint's own (pruned) encoder weights and a BERT
decoder of the checkpoint's decoder size (layers, d_model, heads, ffn, target vocabulary);
the encoder->decoder width change is transformers' `enc_to_dec_proj` Linear. The peer is
untrained, so it is forced (ForcedLengths) to emit exactly as many tokens per sentence as
nmt-bert's output at the same beam size: same sentences, same length-sorted batches of
decode.batch_size, same max-length rule (max_new_tokens = max over the batch of
a * source + b, + 1 for EOS), same tokens generated. Quality is compared only between
nmt-bert's own beam and greedy outputs.

    python bench/decode_speed.py --model runs/fast-affine/run --data runs/fast-affine/data \
        --threads 2 --out results/decode.json
    python bench/decode_speed.py --smoke
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import common
from _measure import measure


def _sources(data: str, limit: int) -> list[str]:
    return common.read_lines(Path(data) / "test.src", limit)


def _rate(sentences: int, tokens: int, seconds: float) -> dict:
    return {"sentences": sentences, "tgt_tokens": tokens, "seconds": round(seconds, 3),
            "sentences_per_s": round(sentences / seconds, 2),
            "tgt_tokens_per_s": round(tokens / seconds, 1)}


# --- child processes ----------------------------------------------------------------------
def ours(model: str, data: str, beam: int, limit: int, device: str, hyp_path: str) -> dict:
    """nmt-bert's Translator; writes hypotheses and per-sentence token counts."""
    from nmt_bert.decode.translator import TranslateStats, Translator

    translator = Translator.from_checkpoint(Path(model), device=device,
                                            overrides=[f"decode.beam_size={beam}", "decode.nbest=1"])
    lines = _sources(data, limit)
    translator.translate(lines[: translator.config.batch_size])  # warm-up
    translator.stats = TranslateStats()
    start = time.perf_counter()
    results = translator.translate(lines)
    seconds = time.perf_counter() - start
    lengths = [len(t.candidates[0].tokens) for t in results]
    Path(hyp_path).write_text("".join(t.text + "\n" for t in results), encoding="utf-8")
    Path(hyp_path + ".lengths.json").write_text(json.dumps(lengths))
    cfg = translator.config
    return {**_rate(len(lines), sum(lengths), seconds), "beam": beam,
            "src_tokens": translator.stats.source_tokens, "batch_size": cfg.batch_size,
            "max_len_a": cfg.max_len_a, "max_len_b": cfg.max_len_b,
            "length_penalty": cfg.length_penalty}


def ct2(model: str, export: str, data: str, beam: int, limit: int, device: str, threads: int,
        workers: int, hyp_path: str) -> dict:
    """`model`'s CTranslate2 export (`export`) through Ct2Translator; writes hypotheses."""
    from nmt_bert.decode.line_translator import TranslateStats
    from nmt_bert.export.ct2_translator import Ct2Translator

    translator = Ct2Translator.from_export(Path(export), device=device, threads=threads,
                                           workers=workers,
                                           overrides=[f"decode.beam_size={beam}", "decode.nbest=1"])
    lines = _sources(data, limit)
    translator.translate(lines[: translator.config.batch_size])  # warm-up
    translator.stats = TranslateStats()
    start = time.perf_counter()
    results = translator.translate(lines)
    seconds = time.perf_counter() - start
    lengths = [len(t.candidates[0].tokens) for t in results]
    Path(hyp_path).write_text("".join(t.text + "\n" for t in results), encoding="utf-8")
    return {**_rate(len(lines), sum(lengths), seconds), "beam": beam,
            "src_tokens": translator.stats.source_tokens, "ct2_threads": threads,
            "ct2_workers": translator.model.num_translators}


def export_systems(model: Path, hyp_dir: Path) -> dict[str, Path]:
    """{system name: export directory} for fp32 and int8, or {} when the adapter cannot be
    exported (said on stdout)."""
    from nmt_bert.errors import UserError
    from nmt_bert.export.exporter import export_model

    systems = {}
    for name, quantization in (("CTranslate2 fp32", "float32"), ("CTranslate2 int8", "int8")):
        try:
            systems[name] = export_model(model, hyp_dir / f"export-{quantization}",
                                         quantization).path
        except UserError as err:
            print(f"CTranslate2 systems skipped: {err}", flush=True)
            return {}
    return systems


def peer(model: str, data: str, beam: int, limit: int, device: str, lengths_path: str,
         seed: int) -> dict:
    """HF generate() on an equivalent EncoderDecoderModel, forced to the given lengths."""
    import torch

    from nmt_bert.model.checkpoint import load_checkpoint
    from nmt_bert.devices import autocast_context
    from nmt_bert.decode.translator import Translator
    from peer import build_peer, generate_batch

    dev = common.device_of(device)
    ckpt = load_checkpoint(Path(model), dev)
    # Translator only for its source encoding and max-length rule: the same inputs as ours.
    translator = Translator(ckpt.model, ckpt.tokenizer, ckpt.source_vocab, ckpt.target_vocab,
                            ckpt.config.decode, dev)
    m = ckpt.config.model
    hf = build_peer(ckpt.model.encoder, len(ckpt.target_vocab), m.decoder_layers, m.d_model,
                    m.heads, m.ffn_dim, m.max_target_positions, seed).to(dev).eval()
    forced = json.loads(Path(lengths_path).read_text())
    lines = _sources(data, limit)
    batch_size = ckpt.config.decode.batch_size

    def translate(lines: list[str], forced: list[int]) -> list[list[int]]:
        encoded = translator.encode_sources(lines)
        order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: -len(encoded[i]))
        out: list[list[int]] = [[] for _ in lines]
        texts = [""] * len(lines)  # detokenized, as ours are (then unused)
        for first in range(0, len(order), batch_size):
            rows = order[first: first + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(encoded[i])] = translator.rows[torch.tensor(encoded[i])]
            lens = torch.tensor([len(encoded[i]) for i in rows])
            mask = torch.arange(width)[None, :] < lens[:, None]
            max_new = int(translator.max_target_lengths(lens).max()) + 1
            with torch.inference_mode(), autocast_context(dev, "auto"):
                hyps = generate_batch(hf, ids.to(dev), mask.to(dev), beam, max_new,
                                      [forced[i] for i in rows])
            for i, h in zip(rows, hyps):
                out[i], texts[i] = h, ckpt.target_vocab.decode(h)
        return out

    translate(lines[:batch_size], forced[:batch_size])  # warm-up
    start = time.perf_counter()
    hyps = translate(lines, forced)
    seconds = time.perf_counter() - start
    matches = sum(len(h) == f for h, f in zip(hyps, forced))
    proj = getattr(hf, "enc_to_dec_proj", None)
    return {**_rate(len(lines), sum(len(h) for h in hyps), seconds), "beam": beam,
            "length_matches": matches, "enc_to_dec_proj": proj is not None,
            "decoder": {"layers": m.decoder_layers, "hidden": m.d_model, "heads": m.heads,
                        "ffn": m.ffn_dim}}


# --- driver -------------------------------------------------------------------------------
def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="trained run or checkpoint directory")
    p.add_argument("--beams", type=int, nargs="+", default=[5, 1], help="beam sizes (1 = greedy)")
    p.add_argument("--limit", type=int, default=0, help="first N test sentences (0 = all)")
    p.add_argument("--no-peer", action="store_true", help="skip the Hugging Face peer")
    p.add_argument("--no-ct2", action="store_true", help="skip the CTranslate2 exports")
    p.add_argument("--ct2-workers", type=int, nargs="+", default=[0],
                   help="CTranslate2 batches searched side by side (0: the translator's choice)")
    p.add_argument("--hyp-dir", type=Path, help="where hypotheses go (default: beside --out)")
    p.add_argument("--seed", type=int, default=1, help="peer decoder initialisation")
    args = p.parse_args()
    common.quiet()
    smoke = common.apply_smoke(args)
    if smoke:
        args.model = args.model or (smoke["run"] if args.no_ct2 else common.smoke_affine_run())
    if args.data is None or args.model is None:
        p.error("--data and --model are required (or --smoke)")
    hyp_dir = args.hyp_dir or (args.out.parent if args.out else Path("/tmp/nmt-bert-bench-decode"))
    hyp_dir.mkdir(parents=True, exist_ok=True)
    base = {"model": str(args.model), "data": str(args.data), "limit": args.limit,
            "device": args.device}
    exports = {} if args.no_ct2 else export_systems(args.model, hyp_dir)
    rows = []
    for beam in args.beams:
        hyp = hyp_dir / f"nmt-bert.beam{beam}.hyp"
        print(f"nmt-bert beam {beam} ...", flush=True)
        r = measure("decode_speed:ours", {**base, "beam": beam, "hyp_path": str(hyp)}, args.threads)
        rows.append({"system": "nmt-bert", **r, "hyp": str(hyp)})
        for (name, export), workers in itertools.product(exports.items(), args.ct2_workers):
            label = name if len(args.ct2_workers) == 1 else f"{name} workers={workers or 'auto'}"
            ct2_hyp = hyp_dir / f"{Path(export).name}.w{workers}.beam{beam}.hyp"
            print(f"{label} beam {beam} ...", flush=True)
            r = measure("decode_speed:ct2", {**base, "export": str(export), "beam": beam,
                                             "threads": args.threads, "workers": workers,
                                             "hyp_path": str(ct2_hyp)},
                        args.threads)
            rows.append({"system": label, **r, "hyp": str(ct2_hyp)})
        if not args.no_peer:
            print(f"HF generate beam {beam} ...", flush=True)
            r = measure("decode_speed:peer", {**base, "beam": beam, "seed": args.seed,
                                              "lengths_path": str(hyp) + ".lengths.json"},
                        args.threads)
            rows.append({"system": "HF generate (forced lengths)", **r})
    quality = score(rows, args.data, args.limit)
    report(rows, quality)
    common.write_json(args.out, {
        "benchmark": "decode_speed", "machine": common.machine_info(common.device_of(args.device)),
        "threads": args.threads, **base, "runs": rows, "quality": quality})


def score(rows: list[dict], data: Path, limit: int) -> dict:
    """BLEU/chrF per system with outputs and beam against each reference set (nmt-bert's keys
    unprefixed), each export's agreement with nmt-bert's output, and beam vs greedy."""
    from nmt_bert.metrics import score_lines

    hyps = {r["beam"]: common.read_lines(Path(r["hyp"])) for r in rows if r["system"] == "nmt-bert"}
    others = {(r["system"], r["beam"]): common.read_lines(Path(r["hyp"]))
              for r in rows if r["system"] != "nmt-bert" and "hyp" in r}
    out = {}
    for name, refs in common.reference_sets(data).items():
        streams = [common.read_lines(ref, limit) for ref in refs]
        for beam, lines in hyps.items():
            scores = score_lines(lines, streams)
            out[f"beam{beam} vs {name}"] = {**{s.name: round(s.score, 2) for s in scores},
                                            "signature": scores[0].signature}
        for (system, beam), lines in others.items():
            scores = score_lines(lines, streams)
            out[f"{system} beam{beam} vs {name}"] = {
                **{s.name: round(s.score, 2) for s in scores}, "signature": scores[0].signature}
    for (system, beam), lines in others.items():
        if beam in hyps:
            same = sum(a == b for a, b in zip(lines, hyps[beam]))
            out[f"{system} beam{beam} vs nmt-bert output"] = {"identical_lines": same,
                                                              "lines": len(lines)}
    if 1 in hyps and len(hyps) > 1:
        for beam, lines in hyps.items():
            if beam != 1:
                bleu = score_lines(lines, [hyps[1]])[0].score
                same = sum(a == b for a, b in zip(lines, hyps[1]))
                out[f"beam{beam} vs greedy output"] = {"BLEU": round(bleu, 2), "identical_lines": same}
    return out


def report(rows: list[dict], quality: dict) -> None:
    # Each system runs in its own process (_measure); "over imports" is what the system itself
    # added to the process's peak (model, tokenizer, weights). CTranslate2 systems never import
    # torch, as `translate` on an export does not.
    table = [{**r, "peak_rss_mb": r.get("peak_rss_mb"),
              "own_rss_mb": r.get("peak_rss_mb", 0) - r.get("rss_after_imports_mb", 0),
              "match": (f"{r['length_matches']}/{r['sentences']}" if "length_matches" in r else "-"),
              "torch": "yes" if r.get("torch_imported", True) else "no"}
             for r in rows]
    print()
    common.print_table(table, [("system", "system", ""), ("beam", "beam", "d"),
                               ("sentences_per_s", "sent/s", ".2f"),
                               ("tgt_tokens_per_s", "tgt tok/s", ".1f"), ("seconds", "s", ".2f"),
                               ("peak_rss_mb", "peak RSS MB", ".0f"),
                               ("own_rss_mb", "over imports", ".0f"),
                               ("torch", "torch", ""),
                               ("match", "lengths = ours", "")])
    peer_name = "HF generate (forced lengths)"
    for beam in sorted({r["beam"] for r in rows}):
        at = {r["system"]: r for r in rows if r["beam"] == beam}
        for base_name, key in (("nmt-bert", "nmt-bert"), ("HF", peer_name)):
            base_r = at.get(key)
            if base_r is None or base_r["tgt_tokens_per_s"] <= 0:
                continue
            for name, r in at.items():
                if name not in (key, peer_name):
                    print(f"beam {beam}: {name} / {base_name} = "
                          f"{r['tgt_tokens_per_s'] / base_r['tgt_tokens_per_s']:.2f}x "
                          "target tokens/s")
    print("\nquality of the outputs (the untrained peer is timed only):")
    for name, s in quality.items():
        print(f"  {name:<44} " + "  ".join(f"{k} {v}" for k, v in s.items() if k != "signature"))
    sig = next((s["signature"] for s in quality.values() if "signature" in s), None)
    if sig:
        print(f"  BLEU signature: {sig}")


if __name__ == "__main__":
    main()
