"""Logical axis names for activations, defined once.

Parameters name their axes where they are created (see dense.py, embeddings.py); activations are
constrained at sublayer boundaries with these tuples. `protlm.partitioning` maps the names to mesh
axes. Rules are applied in order per array, so `batch` (listed first in every rule table) takes the
data/fsdp mesh axes and an `embed` rule that would reuse them is skipped for activations.
"""
from __future__ import annotations

import flax.linen as nn
import jax

BATCH_LENGTH_EMBED = ("batch", "length", "embed")
BATCH_LENGTH_MLP = ("batch", "length", "mlp")
BATCH_LENGTH_HEADS_KV = ("batch", "length", "heads", "kv")
BATCH_LENGTH_VOCAB = ("batch", "length", "vocab")


def constrain(x: jax.Array, axes: tuple) -> jax.Array:
    """Sharding constraint by logical names; a no-op outside a mesh + `nn.logical_axis_rules`."""
    return nn.with_logical_constraint(x, axes)


def constrain_bias(bias: jax.Array) -> jax.Array:
    """Constrains an attention bias `[b|1, heads, q, k]`: heads like the attention logits, batch
    only when it is a real batch dim (a broadcast dim of 1 cannot be split)."""
    return constrain(bias, ("batch" if bias.shape[0] > 1 else None, "heads", "length", None))
