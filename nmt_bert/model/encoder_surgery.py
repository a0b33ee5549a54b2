"""Cutting a pretrained encoder down to what translation uses: layers, vocabulary rows, pooler."""

from __future__ import annotations

from torch import Tensor, nn


def truncate_encoder(encoder: nn.Module, layers: int) -> None:
    """Keep the first `layers` Transformer layers of a BERT-style encoder (0 keeps all)."""
    if layers <= 0:
        return
    stack = encoder.encoder.layer
    if layers > len(stack):
        raise ValueError(f"model.encoder_layers={layers} but the encoder has {len(stack)} layers")
    encoder.encoder.layer = stack[:layers]
    encoder.config.num_hidden_layers = layers


def prune_embeddings(encoder: nn.Module, kept_ids: Tensor) -> None:
    """Keep only the word-embedding rows in `kept_ids` (sorted original ids, shape (K,))."""
    old = encoder.get_input_embeddings()
    new = nn.Embedding(kept_ids.numel(), old.embedding_dim)
    new.weight.data.copy_(old.weight.data.index_select(0, kept_ids))
    encoder.set_input_embeddings(new)
    encoder.config.vocab_size = kept_ids.numel()
    if getattr(encoder.config, "pad_token_id", None) is not None:
        encoder.config.pad_token_id = None  # ids are remapped; padding is masked, not looked up


def drop_pooler(encoder: nn.Module) -> None:
    """The pooler is unused for translation; dropping it keeps weights and optimizer smaller."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None


def own_memory(module: nn.Module) -> None:
    """Give every parameter and buffer of `module` memory of its own.

    `from_pretrained` reads safetensors weights as views of a memory map of the whole file.
    After truncation and pruning the few tensors kept would still hold that map, and with it
    every page loading touched (about 400 MB of multilingual-e5-small), for the whole run.
    """
    for param in module.parameters():
        param.data = param.data.clone()
    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None:
                sub._buffers[name] = buffer.clone()
