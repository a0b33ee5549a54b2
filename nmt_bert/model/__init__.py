"""The model: pretrained encoder, adapter, decoder, vocabularies and checkpoints."""
