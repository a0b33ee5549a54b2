"""How hypotheses are ranked: log-probability divided by length**alpha (decode.length_penalty).

Kept apart from the search so that the CTranslate2 path, which has no torch, ranks its
hypotheses by exactly the same rule.
"""

from __future__ import annotations


def normalised(logprob: float, length: int, length_penalty: float) -> float:
    """Length-normalised score; `length` counts the EOS."""
    return logprob / length**length_penalty
