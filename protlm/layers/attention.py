"""Multi-head attention for T5 (no biases, no 1/sqrt(d) scaling, relative bias) and BERT.

The attention core is one function, `dot_product_attention(q, k, v, bias, mask, ...)`; a blocked /
memory-efficient variant with the same signature can be passed as `attention_fn` (long proteins).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from protlm.layers.axes import BATCH_LENGTH_HEADS_KV, constrain
from protlm.layers.dense import DenseGeneral, Initializer

# Added to masked logits. Large but finite so that a fully masked row (a padding query) stays a
# well-defined uniform softmax instead of NaN, and bias + mask cannot overflow float32.
MASK_VALUE = -1e10


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          bias: jax.Array | None = None, mask: jax.Array | None = None, *,
                          scale: float | None = None, dropout_rate: float = 0.0,
                          dropout_rng: jax.Array | None = None, deterministic: bool = True,
                          dtype: Any = jnp.float32) -> jax.Array:
    """softmax(q k^T * scale + bias, masked) v, logits and softmax in float32.

    Args:
      query: `[batch, q_len, heads, head_dim]`.
      key, value: `[batch, kv_len, heads, head_dim]`.
      bias: additive float bias broadcastable to `[batch, heads, q_len, kv_len]` or None.
      mask: bool, True = attend, broadcastable to `[batch, heads, q_len, kv_len]`, or None.
      scale: multiplies the logits (BERT: head_dim**-0.5); None = no scaling (T5).
      dropout_rate, dropout_rng, deterministic: dropout on the attention weights.
      dtype: dtype of the weights @ value matmul and of the result.

    Returns:
      `[batch, q_len, heads, head_dim]` in `dtype`.
    """
    if query.ndim != 4 or key.shape != value.shape or query.shape[-1] != key.shape[-1]:
        raise ValueError(f"attention shapes q {query.shape} k {key.shape} v {value.shape} "
                         "must be [batch, length, heads, head_dim]")
    # Batched matmuls over a leading [batch, heads]: on XLA:CPU the einsum forms
    # "bqhd,bkhd->bhqk" / "bhqk,bkhd->bqhd" (heads inside) ran 1.7x slower for the forward
    # (prot_t5_small encoder layer at 64 x 128 tokens: 124 -> 73 ms); same arithmetic.
    query, value = jnp.swapaxes(query, 1, 2), jnp.swapaxes(value, 1, 2)   # [b, h, len, d]
    logits = jnp.matmul(query, jnp.transpose(key, (0, 2, 3, 1)),
                        preferred_element_type=jnp.float32)                 # [b, h, q, k]
    if scale is not None:
        logits = logits * scale
    if bias is not None:
        logits = logits + jnp.asarray(bias, jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, MASK_VALUE)
    # Softmax normalised after the weights @ value product (exp(l - max) @ v / row sum): the
    # division touches [q, d] instead of [q, k]; equal to softmax(l) @ v up to rounding (and
    # dropout commutes with the per-row division). On XLA:CPU 10-25 % faster per core.
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    weights = jnp.exp(logits - row_max)                       # [batch, heads, q, k] float32
    row_sum = jnp.sum(weights, axis=-1, keepdims=True)
    if not deterministic and dropout_rate > 0.0:
        if dropout_rng is None:
            raise ValueError("dropout_rng is required when deterministic=False")
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    out = jnp.matmul(jnp.asarray(weights, dtype), jnp.asarray(value, dtype),
                     preferred_element_type=jnp.float32) / row_sum
    return jnp.swapaxes(out, 1, 2).astype(dtype)


class MultiHeadAttention(nn.Module):
    """Projections `query/key/value [embed, heads, kv]`, `out [heads, kv, embed]` + attention core.

    Attributes:
      num_heads, head_dim: heads x d_kv.
      use_bias: BERT biases on all four projections.
      scale_logits: multiply logits by head_dim**-0.5 (BERT); T5 folds it into the query init.
      dropout_rate: dropout on the attention weights.
      q_init, kv_init, out_init: kernel initializers.
      attention_fn: the core, `dot_product_attention` by default.
      decode: autoregressive self-attention with a key/value cache (collection `cache`). A call
        with `decode_index=None` on a full-length input creates the cache (zeros, full length);
        each later call with one new position writes its key/value at `decode_index` and
        attends over the whole cache (the caller masks positions > decode_index).
    """

    num_heads: int
    head_dim: int
    use_bias: bool = False
    scale_logits: bool = False
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    q_init: Initializer = nn.initializers.lecun_normal()
    kv_init: Initializer = nn.initializers.lecun_normal()
    out_init: Initializer = nn.initializers.lecun_normal()
    attention_fn: Callable[..., jax.Array] = dot_product_attention
    decode: bool = False

    @nn.compact
    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, bias: jax.Array | None = None,
                 mask: jax.Array | None = None, deterministic: bool = True,
                 decode_index: jax.Array | None = None) -> jax.Array:
        """`[batch, q_len, embed]`, `[batch, kv_len, embed]` -> `[batch, q_len, embed]`."""
        embed = inputs_q.shape[-1]
        proj = functools.partial(DenseGeneral, features=(self.num_heads, self.head_dim),
                                 kernel_axes=("embed", "heads", "kv"), bias_axes=("heads", "kv"),
                                 use_bias=self.use_bias, dtype=self.dtype)
        query = proj(kernel_init=self.q_init, name="query")(inputs_q)  # [b, q, heads, kv]
        key = proj(kernel_init=self.kv_init, name="key")(inputs_kv)  # [b, k, heads, kv]
        value = proj(kernel_init=self.kv_init, name="value")(inputs_kv)
        query = constrain(checkpoint_name(query, "query_proj"), BATCH_LENGTH_HEADS_KV)
        key = constrain(checkpoint_name(key, "key_proj"), BATCH_LENGTH_HEADS_KV)
        value = constrain(checkpoint_name(value, "value_proj"), BATCH_LENGTH_HEADS_KV)
        if self.decode:
            key, value = self._update_cache(key, value, decode_index)
        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        x = self.attention_fn(
            query, key, value, bias, mask,
            scale=self.head_dim ** -0.5 if self.scale_logits else None,
            dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
            deterministic=deterministic, dtype=self.dtype)  # [b, q, heads, kv]
        x = constrain(checkpoint_name(x, "context"), BATCH_LENGTH_HEADS_KV)
        out = DenseGeneral(embed, axis=(-2, -1), kernel_axes=("heads", "kv", "embed"),
                           bias_axes=("embed",), use_bias=self.use_bias, dtype=self.dtype,
                           kernel_init=self.out_init, name="out")(x)
        return checkpoint_name(out, "out_proj")

    def _update_cache(self, key, value, decode_index):
        """Writes `[b, 1, heads, kv]` at `decode_index`; returns the full cached key, value."""
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        if decode_index is None:  # cache creation pass
            return key, value
        if key.shape[1] != 1:
            raise ValueError(f"decode step expects one position, got keys {key.shape}")
        start = (0, decode_index, 0, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        return cached_key.value, cached_value.value


def make_attention_mask(query_valid: jax.Array | None, key_valid: jax.Array,
                        query_segment_ids: jax.Array | None = None,
                        key_segment_ids: jax.Array | None = None,
                        causal: bool = False) -> jax.Array:
    """Bool mask `[batch, 1, q_len, kv_len]` (True = attend).

    Args:
      query_valid: `[batch, q_len]` bool or None (padding queries only see garbage, harmless).
      key_valid: `[batch, kv_len]` bool, False at padding keys.
      query_segment_ids, key_segment_ids: `[batch, len]` packing segments; attend within a segment.
      causal: keys at later indices than the query are hidden (self-attention only).
    """
    mask = key_valid[:, None, None, :]
    if query_valid is not None:
        mask = mask & query_valid[:, None, :, None]
    if query_segment_ids is not None and key_segment_ids is not None:
        mask = mask & (query_segment_ids[:, None, :, None] == key_segment_ids[:, None, None, :])
    if causal:
        length = key_valid.shape[-1]  # self-attention: queries and keys share indices
        idx = jnp.arange(length)
        mask = mask & (idx[None, :] <= idx[:, None])[None, None]
    return mask
