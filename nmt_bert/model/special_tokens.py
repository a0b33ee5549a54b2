"""The target vocabulary's special ids, fixed by `prepare` (SentencePiece pad/unk/bos/eos).

A module with no dependencies: vocabularies, data, model and search all read them here.
"""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
