"""T5 relative position buckets and the per-stack bias module.

`relative_position_bucket` is the function of transformers' `T5Attention._relative_position_bucket`
(float32 log, truncation toward zero), so biases match HF checkpoints bucket for bucket.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from protlm.layers.dense import Initializer


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> jax.Array:
    """Maps `memory_position - query_position` (int, any shape) to a bucket in [0, num_buckets).

    Half the buckets are exact offsets, the rest grow logarithmically up to `max_distance`; beyond
    it all distances share the last bucket. Bidirectional splits the buckets by sign; causal
    (decoder) maps every future offset to bucket 0.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
        relative_position = jnp.abs(relative_position)
    else:
        relative_position = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    # Same float32 arithmetic as HF; max(.,1) only avoids log(0) on the branch where() discards.
    rp = jnp.maximum(relative_position, 1).astype(jnp.float32)
    if_large = max_exact + (
        jnp.log(rp / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(jnp.int32)
    if_large = jnp.minimum(if_large, num_buckets - 1)
    return buckets + jnp.where(is_small, relative_position, if_large)


class RelativePositionBiases(nn.Module):
    """Learned bias per (head, bucket), computed once per stack and added in every layer.

    Param: `rel_embedding [heads, buckets]` named `('heads', 'relpos_buckets')`
    (HF stores it transposed as `relative_attention_bias.weight [buckets, heads]`).
    """

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: Any = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

    @nn.compact
    def __call__(self, query_positions: jax.Array, key_positions: jax.Array,
                 bidirectional: bool = True, materialize: bool = True) -> jax.Array:
        """Bias for positions `[b, q]`, `[b, k]` (b may be 1) -> `[b, heads, q, k]` float32.

        With `materialize=False` returns the `[heads, buckets]` table instead, for attention
        cores that evaluate the bias block by block (protlm.layers.blocked_attention).
        """
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(self.embedding_init, ("heads", "relpos_buckets")),
            (self.num_heads, self.num_buckets), jnp.float32)
        if not materialize:
            return table
        relative = key_positions[:, None, :] - query_positions[:, :, None]  # [b, q, k]
        bucket = relative_position_bucket(relative, bidirectional, self.num_buckets,
                                          self.max_distance)
        bias = jnp.take(jnp.asarray(table, jnp.float32), bucket, axis=1)  # [heads, b, q, k]
        return jnp.transpose(bias, (1, 0, 2, 3))
