"""Vocabulary coverage of a prepared corpus: unknown-token rate, tokens per word, ids used."""

from __future__ import annotations

def coverage(splits: dict, tokenizer) -> dict:
    """How well the vocabularies fit the corpus, per split, straight from the Arrow columns.

    unk_rate: source tokens that are the encoder's unknown token (specials excluded);
    src/tgt_tokens_per_word: encoder tokens / SentencePiece pieces per whitespace word;
    encoder_ids_used: distinct encoder ids in train+dev sources (what vocabulary pruning keeps).
    """
    import numpy as np
    import pyarrow.compute as pc

    # [CLS]/[SEP]-like markers are not text; the unknown token is, so it stays counted.
    specials = np.array(sorted(set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}))
    used = np.zeros(len(tokenizer), dtype=bool)
    report: dict = {}
    for name, split in splits.items():
        counts = dict.fromkeys(("src_tokens", "unk", "src_words", "tgt_tokens", "tgt_words"), 0)
        for column, words in (("src", "src_words"), ("tgt", "tgt_words")):
            for chunk in split.data.column(column).chunks:  # normalised: words = spaces + 1
                spaces = pc.sum(pc.count_substring(chunk, " ")).as_py() or 0
                counts[words] += int(spaces) + len(chunk)
        for chunk in split.data.column("src_ids").chunks:
            ids = chunk.flatten().to_numpy(zero_copy_only=False)
            counts["src_tokens"] += int((~np.isin(ids, specials)).sum())
            counts["unk"] += int((ids == tokenizer.unk_token_id).sum())
            if name in ("train", "dev"):
                used[ids] = True
        for chunk in split.data.column("tgt_ids").chunks:
            counts["tgt_tokens"] += len(chunk.flatten())
        report[name] = {
            "unk_rate": round(counts["unk"] / max(counts["src_tokens"], 1), 6),
            "src_tokens_per_word": round(counts["src_tokens"] / max(counts["src_words"], 1), 4),
            "tgt_tokens_per_word": round(counts["tgt_tokens"] / max(counts["tgt_words"], 1), 4),
        }
    report["encoder_ids_used"] = int(used.sum())
    report["encoder_vocab_size"] = len(tokenizer)
    return report
