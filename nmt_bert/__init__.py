"""nmt-bert: translation with a pretrained multilingual BERT encoder and a Transformer decoder.

For programs that embed it: `from nmt_bert import load_translator` (nmt_bert.decode.api).
Imported lazily, so that `import nmt_bert` (and `nmt-bert --help`) loads no torch.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_translator"]


def __getattr__(name: str):
    if name == "load_translator":
        from nmt_bert.decode.api import load_translator

        return load_translator
    raise AttributeError(f"module 'nmt_bert' has no attribute {name!r}")
