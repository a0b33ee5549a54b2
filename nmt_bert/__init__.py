"""nmt-bert: translation with a pretrained multilingual BERT encoder and a Transformer decoder."""

__version__ = "0.1.0"
