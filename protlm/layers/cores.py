"""Choosing the attention core from config: dense or blocked (memory linear in length)."""
from __future__ import annotations

from collections.abc import Callable

import jax

from protlm.layers.attention import dot_product_attention
from protlm.layers.blocked_attention import make_blocked_attention_fn


def attention_fn(block_size: int = 0, key_block_size: int = 0) -> Callable[..., jax.Array]:
    """`dot_product_attention` when `block_size <= 0`, else the blocked core with query blocks of
    `block_size` and key blocks of `key_block_size` (0 = all keys per query block)."""
    if block_size <= 0:
        return dot_product_attention
    return make_blocked_attention_fn(query_block=block_size, key_block=key_block_size or None)
