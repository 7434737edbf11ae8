"""Segment-level recurrence: the fixed-size memory Transformer-XL and XLNet carry between steps.

The originals grow the memory from empty (`init_mems` returns length-0 tensors) and keep its last
`mem_len` positions (`_update_mems`, `_cache_mem`). Under `jit` every step has the same shapes,
so protlm keeps `mem_len` slots per layer and counts, per batch row, how many of them hold real
states (`valid`, right-aligned: slots `mem_len - valid .. mem_len - 1`); attention masks the
others. The outputs equal the originals' on the real slots.

Memory `[batch, layers, mem_len, embed]` with logical names `MEMORY_AXES` is sharded like
activations (batch over the data axes); `valid` is `[batch]` int32.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

MEMORY_AXES = ("batch", "layers", "length", "embed")


def init_memory(batch: int, num_layers: int, mem_len: int, d_model: int, dtype) -> dict:
    """Empty memory as `{"mems", "valid"}` of `nn.LogicallyPartitioned` zeros (`init_carry`)."""
    return {"mems": nn.LogicallyPartitioned(
                jnp.zeros((batch, num_layers, mem_len, d_model), dtype), MEMORY_AXES),
            "valid": nn.LogicallyPartitioned(jnp.zeros((batch,), jnp.int32), ("batch",))}


def memory_key_valid(valid: jax.Array, mem_len: int) -> jax.Array:
    """Bool `[batch, mem_len]`: which memory slots hold real states."""
    return jnp.arange(mem_len)[None, :] >= (mem_len - valid)[:, None]


def update_memory(mem: jax.Array, valid: jax.Array, layer_input: jax.Array,
                  reuse_len: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Next memory: the last `mem_len` of `[mem, layer_input[..., :reuse_len, :]]` (axis -2).

    Args:
      mem: `[batch, ..., mem_len, embed]` current memory (right-aligned real slots), e.g.
        `[batch, layers, mem_len, embed]`.
      valid: `[batch]` real slots in `mem`.
      layer_input: `[batch, ..., qlen, embed]` this segment's inputs to the layers.
      reuse_len: XLNet caches only the first `reuse_len` positions (None/0: all).

    Returns:
      `(memory, valid)`: the memory (same shape as `mem`) under stop-gradient, `[batch]` int32.
    """
    mem_len = mem.shape[-2]
    new = layer_input if not reuse_len else layer_input[..., :reuse_len, :]
    cat = jnp.concatenate([mem, new.astype(mem.dtype)], axis=-2)[..., -mem_len:, :]
    return jax.lax.stop_gradient(cat), jnp.minimum(valid + new.shape[-2], mem_len)
