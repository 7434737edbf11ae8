"""Token/position embedding tables with an `attend` method for tied output logits."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from protlm.layers.dense import Initializer


class Embed(nn.Module):
    """Embedding table `[num_embeddings, features]` named `axes`.

    Attributes:
      num_embeddings: rows (vocabulary or positions).
      features: embedding width.
      axes: logical names of the table, `('vocab', 'embed')` for tokens.
      dtype: dtype of the looked-up activations (the table stays `param_dtype`).
      one_hot: look up by a one-hot matmul (friendlier to TPU sharding of the vocab axis).
      attend_dtype: dtype of the tied output projection (T5X `attend_dtype`): float32 so that
        bf16 models give cross entropy and z-loss float32 logits, not bf16-rounded ones (the
        vocabularies are 30 / 128 wide: the float32 matmul costs nothing measurable).
    """

    num_embeddings: int
    features: int
    axes: tuple[str, str] = ("vocab", "embed")
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)
    one_hot: bool = False
    attend_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(self.embedding_init, self.axes),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Looks up `ids` `[...]` (int) -> `[..., features]` in `dtype`."""
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"{self.name}: ids must be integers, got {ids.dtype}")
        table = jnp.asarray(self.embedding, self.dtype)
        if self.one_hot:
            return jax.nn.one_hot(ids, self.num_embeddings, dtype=self.dtype) @ table
        return jnp.take(table, ids, axis=0)

    def attend(self, query: jax.Array) -> jax.Array:
        """Tied output projection: `[..., features] -> [..., num_embeddings]` (query @ table.T),
        computed and returned in `attend_dtype`."""
        table = jnp.asarray(self.embedding, self.attend_dtype)
        return jnp.einsum("...d,vd->...v", jnp.asarray(query, self.attend_dtype), table)
