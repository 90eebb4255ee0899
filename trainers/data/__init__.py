"""Readers, tokenizer, packing, mixtures and task splits. See each module."""
