"""Memory-efficient attention for very long proteins: query blocks x key blocks, online softmax.

`dot_product_attention` (protlm.layers.attention) materialises `[batch, heads, q_len, kv_len]`
logits plus a bias and a mask of the same size: for titin (35,000 residues) and the ProtT5-XL
encoder (32 heads) that is 157 GB in float32. Here the queries are cut into blocks of
`query_block` rows (a sequential `lax.map`) and, optionally, the keys into blocks of `key_block`
columns combined with an online (running max / running sum) softmax, so only
`[batch, heads, query_block, key_block]` logits exist at a time.

The bias and the mask are never materialised either. They are described by small pytrees that
this module evaluates per block:

* `RelativeBias`: T5's learned bias table `[heads, buckets]` plus query and key positions; each
  block's bias is `table[:, bucket(k_pos - q_pos)]` from `relative_position_bucket`, the same
  function the dense path uses, so the result equals the dense path to float32 rounding.
* `MaskSpec`: key validity `[batch, kv_len]` (tokens != 0), optional packing segment ids and a
  causal flag -- the inputs of `make_attention_mask` rather than its `[b, 1, q, k]` output.

Dense arrays are accepted as well (a `[.., q, k]` bias or mask is sliced per block), so
`blocked_dot_product_attention` is a drop-in `attention_fn` for `MultiHeadAttention`.
Masked logits get the dense path's `MASK_VALUE`, so even fully masked rows (all-padding queries)
give the same uniform average. With `deterministic=False` dropout is applied to the
unnormalised block weights (the normaliser is the sum without dropout), which is dropout on the
softmax as in the dense path, with a different random pattern.

Each query block is wrapped in `jax.checkpoint` (when `remat=True`), so the backward pass
recomputes a block's logits instead of storing all of them: training memory is linear in length.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from protlm.layers.attention import MASK_VALUE
from protlm.layers.relative_position import relative_position_bucket


@flax.struct.dataclass
class RelativeBias:
    """T5 relative position bias, evaluated per block.

    Attributes:
      table: `[heads, buckets]` float (the `rel_embedding` param).
      query_positions: `[b|1, q_len]` int positions of the queries (packed: `*_positions`).
      key_positions: `[b|1, kv_len]` int positions of the keys.
      bidirectional, num_buckets, max_distance: as `relative_position_bucket`.
    """

    table: jax.Array
    query_positions: jax.Array
    key_positions: jax.Array
    bidirectional: bool = flax.struct.field(pytree_node=False, default=True)
    num_buckets: int = flax.struct.field(pytree_node=False, default=32)
    max_distance: int = flax.struct.field(pytree_node=False, default=128)

    def block(self, q_start: jax.Array, q_size: int, k_start: jax.Array,
              k_size: int) -> jax.Array:
        """Bias `[b|1, heads, q_size, k_size]` float32 of one block."""
        q_pos = jax.lax.dynamic_slice_in_dim(self.query_positions, q_start, q_size, axis=1)
        k_pos = jax.lax.dynamic_slice_in_dim(self.key_positions, k_start, k_size, axis=1)
        bucket = relative_position_bucket(k_pos[:, None, :] - q_pos[:, :, None],
                                          self.bidirectional, self.num_buckets,
                                          self.max_distance)  # [b, q, k]
        bias = jnp.take(jnp.asarray(self.table, jnp.float32), bucket, axis=1)  # [h, b, q, k]
        return jnp.transpose(bias, (1, 0, 2, 3))


@flax.struct.dataclass
class MaskSpec:
    """Attention mask inputs, evaluated per block (True = attend).

    Attributes:
      key_valid: `[batch, kv_len]` bool, False at padding keys.
      query_segment_ids, key_segment_ids: `[batch, len]` packing segments or None.
      causal: hide keys at later indices than the query (self-attention).
    """

    key_valid: jax.Array
    query_segment_ids: jax.Array | None = None
    key_segment_ids: jax.Array | None = None
    causal: bool = flax.struct.field(pytree_node=False, default=False)

    def block(self, q_start: jax.Array, q_size: int, k_start: jax.Array,
              k_size: int) -> jax.Array:
        """Bool mask `[batch, 1, q_size, k_size]` of one block."""
        valid = jax.lax.dynamic_slice_in_dim(self.key_valid, k_start, k_size, axis=1)
        mask = valid[:, None, None, :]
        if self.query_segment_ids is not None and self.key_segment_ids is not None:
            qs = jax.lax.dynamic_slice_in_dim(self.query_segment_ids, q_start, q_size, axis=1)
            ks = jax.lax.dynamic_slice_in_dim(self.key_segment_ids, k_start, k_size, axis=1)
            mask = mask & (qs[:, None, :, None] == ks[:, None, None, :])
        if self.causal:
            qi = q_start + jnp.arange(q_size)
            ki = k_start + jnp.arange(k_size)
            mask = mask & (ki[None, :] <= qi[:, None])[None, None]
        return mask


def _dense_block(x: jax.Array | None, q_start, q_size: int, k_start, k_size: int):
    """Slice a dense `[..., q, k]` bias or mask (size-1 dims broadcast) to one block."""
    if x is None:
        return None
    x = jnp.asarray(x)
    if x.shape[-2] != 1:
        x = jax.lax.dynamic_slice_in_dim(x, q_start, q_size, axis=x.ndim - 2)
    if x.shape[-1] != 1:
        x = jax.lax.dynamic_slice_in_dim(x, k_start, k_size, axis=x.ndim - 1)
    return x


def _block_of(x, q_start, q_size, k_start, k_size):
    if isinstance(x, (RelativeBias, MaskSpec)):
        return x.block(q_start, q_size, k_start, k_size)
    return _dense_block(x, q_start, q_size, k_start, k_size)


def _pad_to(x: jax.Array, length: int, axis: int, value=0) -> jax.Array:
    extra = length - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def _pad_spec(x, q_len: int, k_len: int):
    """Pads the per-position inputs of a bias/mask spec or a dense array to the blocked lengths."""
    if isinstance(x, RelativeBias):
        qp = x.query_positions if x.query_positions.shape[-1] == 1 else _pad_to(
            x.query_positions, q_len, 1)
        kp = x.key_positions if x.key_positions.shape[-1] == 1 else _pad_to(
            x.key_positions, k_len, 1)
        return x.replace(query_positions=qp, key_positions=kp)
    if isinstance(x, MaskSpec):
        # Keys beyond kv_len are invalid; the caller also excludes them entirely (-inf).
        return x.replace(
            key_valid=_pad_to(x.key_valid, k_len, 1, False),
            query_segment_ids=None if x.query_segment_ids is None else _pad_to(
                x.query_segment_ids, q_len, 1),
            key_segment_ids=None if x.key_segment_ids is None else _pad_to(
                x.key_segment_ids, k_len, 1))
    if x is None:
        return None
    x = jnp.asarray(x)
    if x.shape[-2] != 1:
        x = _pad_to(x, q_len, x.ndim - 2)
    if x.shape[-1] != 1:
        x = _pad_to(x, k_len, x.ndim - 1)
    return x


def blocked_dot_product_attention(
        query: jax.Array, key: jax.Array, value: jax.Array,
        bias: RelativeBias | jax.Array | None = None, mask: MaskSpec | jax.Array | None = None, *,
        scale: float | None = None, dropout_rate: float = 0.0,
        dropout_rng: jax.Array | None = None, deterministic: bool = True,
        dtype: Any = jnp.float32, query_block: int = 512, key_block: int | None = 2048,
        remat: bool = True) -> jax.Array:
    """softmax(q k^T * scale + bias, masked) v computed block by block; logits in float32.

    Same contract as `protlm.layers.attention.dot_product_attention`, plus:

    Args:
      query: `[batch, q_len, heads, head_dim]`.
      key, value: `[batch, kv_len, heads, head_dim]`.
      bias: a `RelativeBias`, a dense bias broadcastable to `[batch, heads, q_len, kv_len]`, or None.
      mask: a `MaskSpec`, a dense bool mask broadcastable to the same shape, or None.
      scale, dropout_rate, dropout_rng, deterministic, dtype: as the dense core.
      query_block: rows per query block (lengths are padded up to a multiple).
      key_block: columns per key block with the online softmax; None = all keys at once (one
        `[b, h, query_block, kv_len]` block per query block, simpler and faster when it fits).
      remat: recompute each query block in the backward pass (training memory O(length)).

    Returns:
      `[batch, q_len, heads, head_dim]` in `dtype`.
    """
    if query.ndim != 4 or key.shape != value.shape or query.shape[-1] != key.shape[-1]:
        raise ValueError(f"attention shapes q {query.shape} k {key.shape} v {value.shape} "
                         "must be [batch, length, heads, head_dim]")
    if query_block < 1 or (key_block is not None and key_block < 1):
        raise ValueError(f"block sizes must be positive, got query_block={query_block}, "
                         f"key_block={key_block}")
    use_dropout = not deterministic and dropout_rate > 0.0
    if use_dropout and dropout_rng is None:
        raise ValueError("dropout_rng is required when deterministic=False")
    batch, q_len, heads, head_dim = query.shape
    k_len = key.shape[1]
    qb = min(query_block, q_len)
    kb = k_len if key_block is None else min(key_block, k_len)
    n_q, n_k = -(-q_len // qb), -(-k_len // kb)
    q_pad, k_pad = n_q * qb, n_k * kb
    query = _pad_to(query, q_pad, 1)
    key, value = _pad_to(key, k_pad, 1), _pad_to(jnp.asarray(value, dtype), k_pad, 1)
    bias, mask = _pad_spec(bias, q_pad, k_pad), _pad_spec(mask, q_pad, k_pad)
    key_in_range = jnp.arange(k_pad) < k_len  # padded key columns get exactly zero weight

    def logits_of(q_blk, q_start, k_start):
        k_blk = jax.lax.dynamic_slice_in_dim(key, k_start, kb, axis=1)
        s = jnp.einsum("bqhd,bkhd->bhqk", q_blk, k_blk, preferred_element_type=jnp.float32)
        if scale is not None:
            s = s * scale
        b = _block_of(bias, q_start, qb, k_start, kb)
        if b is not None:
            s = s + jnp.asarray(b, jnp.float32)
        m = _block_of(mask, q_start, qb, k_start, kb)
        if m is not None:
            s = jnp.where(m, s, MASK_VALUE)
        in_range = jax.lax.dynamic_slice_in_dim(key_in_range, k_start, kb)
        return jnp.where(in_range[None, None, None, :], s, -jnp.inf)  # [b, h, qb, kb]

    def dropped(p, qi, ki):
        if not use_dropout:
            return p
        rng = jax.random.fold_in(jax.random.fold_in(dropout_rng, qi), ki)
        keep = jax.random.bernoulli(rng, 1.0 - dropout_rate, p.shape)
        return jnp.where(keep, p / (1.0 - dropout_rate), 0.0)

    def pv(p, k_start):
        v_blk = jax.lax.dynamic_slice_in_dim(value, k_start, kb, axis=1)
        return jnp.einsum("bhqk,bkhd->bhqd", jnp.asarray(p, dtype), v_blk,
                          preferred_element_type=jnp.float32)

    def one_query_block(qi):
        q_start = qi * qb
        q_blk = jax.lax.dynamic_slice_in_dim(query, q_start, qb, axis=1)
        if n_k == 1:
            s = logits_of(q_blk, q_start, 0)
            w = jax.nn.softmax(s, axis=-1)
            out = pv(dropped(w, qi, 0), 0)  # [b, h, qb, d] float32
            return jnp.asarray(out, dtype)

        def step(carry, ki):
            acc, row_max, row_sum = carry
            k_start = ki * kb
            s = logits_of(q_blk, q_start, k_start)
            new_max = jnp.maximum(row_max, s.max(axis=-1))
            correction = jnp.exp(row_max - new_max)
            p = jnp.exp(s - new_max[..., None])
            row_sum = row_sum * correction + p.sum(axis=-1)
            acc = acc * correction[..., None] + pv(dropped(p, qi, ki), k_start)
            return (acc, new_max, row_sum), None

        init = (jnp.zeros((batch, heads, qb, head_dim), jnp.float32),
                jnp.full((batch, heads, qb), -jnp.inf, jnp.float32),
                jnp.zeros((batch, heads, qb), jnp.float32))
        (acc, _, row_sum), _ = jax.lax.scan(step, init, jnp.arange(n_k))
        return jnp.asarray(acc / row_sum[..., None], dtype)

    block_fn = jax.checkpoint(one_query_block) if remat else one_query_block
    out = jax.lax.map(block_fn, jnp.arange(n_q))  # [n_q, b, h, qb, d]
    out = jnp.transpose(out, (1, 0, 3, 2, 4)).reshape(batch, q_pad, heads, head_dim)
    return out[:, :q_len]


def make_blocked_attention_fn(query_block: int = 512, key_block: int | None = 2048,
                              remat: bool = True):
    """`blocked_dot_product_attention` with fixed block sizes, for `MultiHeadAttention.attention_fn`."""
    return functools.partial(blocked_dot_product_attention, query_block=query_block,
                             key_block=key_block, remat=remat)


def relative_bias_from_params(table: jax.Array, query_positions: jax.Array,
                              key_positions: jax.Array, *, bidirectional: bool,
                              num_buckets: int, max_distance: int) -> RelativeBias:
    """A `RelativeBias` from `relpos_bias/rel_embedding` and positions (no `[L, L]` array)."""
    return RelativeBias(table=table, query_positions=jnp.asarray(query_positions, jnp.int32),
                        key_positions=jnp.asarray(key_positions, jnp.int32),
                        bidirectional=bidirectional, num_buckets=num_buckets,
                        max_distance=max_distance)


__all__ = ["MaskSpec", "RelativeBias", "blocked_dot_product_attention",
           "make_blocked_attention_fn", "relative_bias_from_params"]
