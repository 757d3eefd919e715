"""Flax models: T5, BERT and retrieval heads, pure functional init/apply."""
