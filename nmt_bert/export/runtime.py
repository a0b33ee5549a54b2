"""The CTranslate2 package: imported in this one place, with one clear line when it is missing.

Serving an export needs only this, numpy, sentencepiece and the tokenizer's backend: no torch.
"""

from __future__ import annotations

from nmt_bert.errors import UserError


def import_ctranslate2():
    """The ctranslate2 module, or a one-line UserError saying how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise UserError("exports need the ctranslate2 package: pip install "
                        "'nmt-bert[export]' (or pip install 'ctranslate2>=4.5,<5')") from None
    return ctranslate2
