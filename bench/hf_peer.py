"""Train the Hugging Face peer for a wall-clock budget, translate the test set, score it.

The peer (bench/peer.py): EncoderDecoderModel = the full-vocabulary pretrained encoder + a
random 6-layer BERT decoder of the encoder's width, everything trainable, HF's own loss;
with --bert2bert the decoder is the checkpoint's first --layers layers instead
(`from_encoder_decoder_pretrained`, its target rows those of the prepared data).
Training: the same token-budget batches as nmt-bert (train.batch_tokens, train.seed),
AdamW (lr 5e-5, weight decay 0.01), gradient clipping 1.0, a linear warmup over the first
--warmup-fraction of the time budget, then constant. Test: generate(num_beams=5) on
length-sorted batches of decode.batch_size, max_new_tokens = a * source tokens + b (nmt-bert's
rule, per batch), scored with sacreBLEU against each reference.

    python bench/hf_peer.py --data /tmp/prep-bible --minutes 60 --out results/hf-peer/result.json
    python bench/hf_peer.py --smoke
"""

from __future__ import annotations

import time
from pathlib import Path

import common
from _measure import peak_rss_mb


def train(model, data, config, minutes: float, lr: float, warmup_fraction: float, device,
          log_every: int) -> dict:
    """Train until the budget is spent (the step in progress finishes); returns the curve."""
    import torch

    from nmt_bert.devices import autocast_context
    from peer import peer_loss

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    stream = common.batch_stream(data, config.train.batch_tokens, config.train.seed,
                                 config.train.accumulate)
    budget, warmup = minutes * 60, max(minutes * 60 * warmup_fraction, 1e-9)
    model.train()
    curve, steps, tokens, start = [], 0, 0, time.perf_counter()
    window_loss, window_steps = 0.0, 0
    while (elapsed := time.perf_counter() - start) < budget:
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, elapsed / warmup)
        group_batches = next(stream)
        loss_sum = 0.0
        for index in group_batches:
            batch = data.collate(index).to(device)
            with autocast_context(device, "auto"):
                loss = peer_loss(model, batch) / len(group_batches)
            loss.backward()
            loss_sum += loss.item()
            tokens += batch.tokens
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        window_loss, window_steps = window_loss + loss_sum, window_steps + 1
        if steps % log_every == 0:
            common.sync(device)
            seconds = time.perf_counter() - start
            curve.append({"step": steps, "seconds": round(seconds, 1),
                          "loss": round(window_loss / window_steps, 4),
                          "tokens_per_s": round(tokens / seconds, 1)})
            print(f"step {steps}  {seconds:.0f}s  loss {curve[-1]['loss']:.3f}  "
                  f"{curve[-1]['tokens_per_s']:.0f} tok/s", flush=True)
            window_loss, window_steps = 0.0, 0
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds": round(seconds, 1), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "curve": curve}


def translate(model, tokenizer, lines: list[str], decode, beam: int, device, max_source: int,
              target_vocab) -> list[str]:
    """generate() over length-sorted batches; max_new_tokens by nmt-bert's a * src + b rule."""
    import torch

    from nmt_bert.devices import autocast_context
    from peer import generate_batch

    model.eval()
    encoded = tokenizer(lines, add_special_tokens=True, truncation=True,
                        max_length=max_source)["input_ids"]
    order = sorted(range(len(lines)), key=lambda i: -len(encoded[i]))
    out = [""] * len(lines)
    for first in range(0, len(order), decode.batch_size):
        rows = order[first: first + decode.batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
        lens = torch.tensor([len(encoded[i]) for i in rows])
        mask = torch.arange(width)[None, :] < lens[:, None]
        max_new = int((decode.max_len_a * lens.max().item() + decode.max_len_b)) + 1
        with torch.inference_mode(), autocast_context(device, "auto"):
            hyps = generate_batch(model, ids.to(device), mask.to(device), beam, max_new)
        for i, h in zip(rows, hyps):
            out[i] = " ".join(target_vocab.decode(h).split())
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-fraction", type=float, default=0.1,
                   help="linear warmup over this share of the time budget")
    p.add_argument("--layers", type=int, default=6, help="decoder layers")
    p.add_argument("--bert2bert", action="store_true",
                   help="the decoder warm-started from the encoder checkpoint too "
                        "(from_encoder_decoder_pretrained); needs data prepared with "
                        "data.target_tokenizer=encoder")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--log-every", type=int, default=10, help="steps per training log line")
    p.add_argument("--limit", type=int, default=0, help="first N test sentences (0 = all)")
    p.add_argument("--hyp", type=Path, help="hypothesis file (default: test.hyp beside --out)")
    args = p.parse_args()
    common.quiet()
    if common.apply_smoke(args):
        args.minutes, args.log_every = min(args.minutes, 0.1), 50
    if args.data is None:
        p.error("--data is required (or --smoke)")
    common.set_threads(args.threads)
    from nmt_bert.model.encoders import load_local_tokenizer

    from nmt_bert.model.encoders import load_encoder
    from nmt_bert.data.prepared_dir import load_prepared
    from nmt_bert.model.encoders import OFFSET_POSITIONS
    from nmt_bert.model.encoders import resolve_encoder
    from peer import build_bert2bert_peer, build_peer

    config = common.load_run_config(args)
    device = common.device_of(args.device)
    prepared = load_prepared(args.data)
    target_vocab = prepared.target_vocab()
    if args.bert2bert:
        if prepared.target_tokenizer != "encoder":
            p.error("--bert2bert needs data prepared with data.target_tokenizer=encoder")
        model = build_bert2bert_peer(resolve_encoder(args.encoder), target_vocab.kept_ids,
                                     args.layers, seed=config.train.seed)
        ec = model.encoder.config
    else:
        encoder, _ = load_encoder(args.encoder)
        ec = encoder.config
        model = build_peer(encoder, len(target_vocab), args.layers, ec.hidden_size,
                           ec.num_attention_heads, ec.intermediate_size, seed=config.train.seed)
    model.to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"peer: {params / 1e6:.1f}M parameters, all trainable; {args.minutes} min budget")
    data = common.token_data(Path(args.data))
    trained = train(model, data, config, args.minutes, args.lr, args.warmup_fraction, device,
                    args.log_every)
    print(f"trained {trained['steps']} steps in {trained['seconds']} s "
          f"({trained['tokens_per_s']:.0f} src+tgt tok/s)")

    tokenizer = load_local_tokenizer(prepared.tokenizer_dir)
    lines = common.read_lines(prepared.source_file("test"), args.limit)
    max_source = ec.max_position_embeddings - OFFSET_POSITIONS.get(ec.model_type, 0)
    start = time.perf_counter()
    hyps = translate(model, tokenizer, lines, config.decode, args.beam, device, max_source,
                     target_vocab)
    decode_s = time.perf_counter() - start
    hyp_path = args.hyp or (args.out.parent / "test.hyp" if args.out else Path("/tmp/hf-peer.test.hyp"))
    hyp_path.parent.mkdir(parents=True, exist_ok=True)
    hyp_path.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")

    from nmt_bert.metrics import score_lines

    scores = {}
    for name, refs in common.reference_sets(args.data).items():
        streams = [common.read_lines(r, args.limit) for r in refs]
        scores[name] = {s.name: {"score": round(s.score, 2), "signature": s.signature}
                        for s in score_lines(hyps, streams)}
        print(f"test vs {name}: " + "  ".join(f"{m} {s['score']:.2f}" for m, s in scores[name].items()))
    print(f"decoded {len(lines)} sentences in {decode_s:.1f} s (beam {args.beam}); "
          f"hypotheses: {hyp_path}; peak RSS {peak_rss_mb():.0f} MB")
    common.write_json(args.out, {
        "benchmark": "hf_peer", "machine": common.machine_info(device), "threads": args.threads,
        "data": str(args.data), "encoder": args.encoder, "minutes": args.minutes, "lr": args.lr,
        "warmup_fraction": args.warmup_fraction, "batch_tokens": config.train.batch_tokens,
        "decoder_layers": args.layers, "bert2bert": args.bert2bert, "parameters": params, "train": trained,
        "decode": {"beam": args.beam, "seconds": round(decode_s, 1), "sentences": len(lines)},
        "hypotheses": str(hyp_path), "scores": scores, "peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
