"""Layer norms: T5's RMSNorm (scale only, eps 1e-6) and BERT's LayerNorm (eps 1e-12).

Both compute in float32 and return `dtype`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _init(init):
    return nn.with_logical_partitioning(init, ("embed",))


class RMSNorm(nn.Module):
    """T5LayerNorm: `x * rsqrt(mean(x**2) + eps) * scale`, no mean subtraction, no bias."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., embed] -> [..., embed]`."""
        scale = self.param("scale", _init(nn.initializers.ones_init()), (x.shape[-1],),
                           self.param_dtype)
        x = jnp.asarray(x, jnp.float32)
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(var + self.epsilon) * jnp.asarray(scale, jnp.float32)
        return jnp.asarray(y, self.dtype)


class LayerNorm(nn.Module):
    """BERT LayerNorm: `(x - mean) * rsqrt(var + eps) * scale + bias`.

    `scale_init` defaults to ones (Transformer-XL draws it from N(1, init_std)).
    """

    epsilon: float = 1e-12
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., embed] -> [..., embed]`."""
        features = (x.shape[-1],)
        scale = self.param("scale", _init(self.scale_init), features, self.param_dtype)
        bias = self.param("bias", _init(nn.initializers.zeros_init()), features, self.param_dtype)
        x = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        y = y * jnp.asarray(scale, jnp.float32) + jnp.asarray(bias, jnp.float32)
        return jnp.asarray(y, self.dtype)
