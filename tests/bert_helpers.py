"""Shared helpers for the BERT tests: a tiny config, padded inputs and randomised parameters (non-zero biases and
norms, so that a swapped mapping cannot go unnoticed)."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import linen as nn

from distill_ret.models.bert import BertConfig


def tiny_config(**overrides) -> BertConfig:
    fields = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64)
    return BertConfig(**{**fields, **overrides})


def padded_batch(seed: int = 0, batch: int = 3, length: int = 12):
    """Token ids [batch, length] with [CLS]=1 ... [SEP]=2 and trailing padding (0), mask, segment ids."""
    rng = np.random.RandomState(seed)
    lengths = [length, length - 5, 4][:batch] + [length] * max(0, batch - 3)
    ids = np.zeros((batch, length), np.int32)
    types = np.zeros((batch, length), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.randint(3, 100, size=n)
        ids[row, 0], ids[row, n - 1] = 1, 2
        types[row, n // 2:n] = 1
    return ids, (ids != 0).astype(np.int32), types


def random_params(module, *args, seed: int = 0, scale: float = 0.1):
    """Parameters of `module` (shapes from `init` traced abstractly) drawn as N(0, scale^2), norm scales as
    1 + N(0, scale^2): cheap to build (nothing is compiled) and no bias or norm is left at its trivial value."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *[jnp.asarray(a) for a in args])["params"])
    rng = np.random.RandomState(seed)
    flat = flax.traverse_util.flatten_dict(shapes)
    return flax.traverse_util.unflatten_dict({
        path: ((1.0 if path[-1] == "scale" else 0.0) + scale * rng.randn(*leaf.shape)).astype(np.float32)
        for path, leaf in flat.items()
    })


def randomize_torch(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def hf_config(config: BertConfig, **extra) -> transformers.BertConfig:
    hf = config.to_hf()
    for key, value in extra.items():
        setattr(hf, key, value)
    return hf


def to_torch(*arrays):
    return [torch.as_tensor(np.asarray(a), dtype=torch.long) for a in arrays]


def max_abs_diff(ours, theirs) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float32) - np.asarray(theirs, np.float32))))
