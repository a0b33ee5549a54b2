"""Preparing parallel corpora: readers, cleaning, tokenization, the prepared directory."""
