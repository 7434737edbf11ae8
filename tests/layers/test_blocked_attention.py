"""Blocked attention equals the dense core (float32, random inputs) without an [L, L] bias."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm.layers.attention import dot_product_attention, make_attention_mask
from protlm.layers.blocked_attention import (MaskSpec, blocked_dot_product_attention,
                                             relative_bias_from_params)
from protlm.layers.relative_position import RelativePositionBiases

BUCKETS, MAX_DISTANCE = 32, 128


def _inputs(batch=2, length=300, heads=4, head_dim=16, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(batch, length, heads, head_dim)), jnp.float32)
               for _ in range(3))
    table = jnp.asarray(rng.normal(size=(heads, BUCKETS)), jnp.float32)
    valid = np.ones((batch, length), bool)
    valid[0, length - 37:] = False  # right padding in row 0
    return q, k, v, table, jnp.asarray(valid)


def _dense_bias(table, q_pos, k_pos, bidirectional):
    module = RelativePositionBiases(num_buckets=BUCKETS, max_distance=MAX_DISTANCE,
                                    num_heads=table.shape[0])
    return module.apply({"params": {"rel_embedding": table}}, q_pos, k_pos,
                        bidirectional=bidirectional)


@pytest.mark.parametrize("query_block,key_block", [(64, 64), (128, None), (100, 48), (512, 512)])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_with_relative_bias(query_block, key_block, causal):
    q, k, v, table, valid = _inputs()
    pos = jnp.arange(q.shape[1])[None]
    dense = dot_product_attention(
        q, k, v, _dense_bias(table, pos, pos, not causal),
        make_attention_mask(None, valid, causal=causal))
    blocked = blocked_dot_product_attention(
        q, k, v, relative_bias_from_params(table, pos, pos, bidirectional=not causal,
                                           num_buckets=BUCKETS, max_distance=MAX_DISTANCE),
        MaskSpec(key_valid=valid, causal=causal), query_block=query_block, key_block=key_block)
    assert blocked.shape == dense.shape
    assert float(jnp.max(jnp.abs(blocked - dense))) <= 1e-5


def test_packed_segments_scale_and_dense_inputs():
    q, k, v, table, valid = _inputs(length=96)
    seg = jnp.asarray(np.repeat([[1, 2, 3]], 32, axis=1).repeat(2, axis=0))
    pos = jnp.tile(jnp.arange(32), 3)[None].repeat(2, axis=0)
    bias = _dense_bias(table, pos, pos, True)
    mask = make_attention_mask(None, valid, seg, seg)
    dense = dot_product_attention(q, k, v, bias, mask, scale=0.25)
    spec = blocked_dot_product_attention(
        q, k, v, relative_bias_from_params(table, pos, pos, bidirectional=True,
                                           num_buckets=BUCKETS, max_distance=MAX_DISTANCE),
        MaskSpec(valid, seg, seg), scale=0.25, query_block=40, key_block=24)
    arrays = blocked_dot_product_attention(q, k, v, bias, mask, scale=0.25, query_block=40,
                                           key_block=24)
    assert float(jnp.max(jnp.abs(spec - dense))) <= 1e-5
    assert float(jnp.max(jnp.abs(arrays - dense))) <= 1e-5


def test_fully_masked_rows_and_cross_attention():
    q, k, v, table, valid = _inputs(length=64)
    valid = valid.at[1].set(False)  # an all-padding row (batch padding in embed)
    kv = k[:, :40], v[:, :40]
    dense = dot_product_attention(q, *kv, None, make_attention_mask(None, valid[:, :40]))
    blocked = blocked_dot_product_attention(q, *kv, None, MaskSpec(valid[:, :40]),
                                            query_block=24, key_block=16)
    assert float(jnp.max(jnp.abs(blocked - dense))) <= 1e-5


def test_gradients_match_dense():
    q, k, v, table, valid = _inputs(length=80, heads=2)
    pos = jnp.arange(80)[None]

    def loss(fn, q, k, v, table):
        return jnp.sum(jnp.sin(fn(q, k, v, table)))

    def dense(q, k, v, table):
        return dot_product_attention(q, k, v, _dense_bias(table, pos, pos, True),
                                     make_attention_mask(None, valid))

    def blocked(q, k, v, table):
        bias = relative_bias_from_params(table, pos, pos, bidirectional=True,
                                         num_buckets=BUCKETS, max_distance=MAX_DISTANCE)
        return blocked_dot_product_attention(q, k, v, bias, MaskSpec(valid), query_block=32,
                                             key_block=32)

    gd = jax.grad(functools.partial(loss, dense), argnums=(0, 1, 2, 3))(q, k, v, table)
    gb = jax.grad(functools.partial(loss, blocked), argnums=(0, 1, 2, 3))(q, k, v, table)
    for a, b in zip(gd, gb):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-4


def test_dropout_keeps_shape_and_needs_rng():
    q, k, v, _, valid = _inputs(length=48)
    out = blocked_dot_product_attention(q, k, v, None, MaskSpec(valid), dropout_rate=0.5,
                                        dropout_rng=jax.random.key(0), deterministic=False,
                                        query_block=16, key_block=16)
    assert out.shape == q.shape and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match="dropout_rng"):
        blocked_dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=False)


def test_long_sequence_memory_is_linear():
    """Compiled temp memory at length 8192 stays far below one dense [L, L] logits array."""
    length, heads, hd = 8192, 4, 16
    shape = jax.ShapeDtypeStruct((1, length, heads, hd), jnp.float32)

    def fn(q, k, v, table, valid):
        pos = jnp.arange(length)[None]
        bias = relative_bias_from_params(table, pos, pos, bidirectional=True,
                                         num_buckets=BUCKETS, max_distance=MAX_DISTANCE)
        return blocked_dot_product_attention(q, k, v, bias, MaskSpec(valid), query_block=512,
                                             key_block=1024)

    compiled = jax.jit(fn).lower(shape, shape, shape,
                                 jax.ShapeDtypeStruct((heads, BUCKETS), jnp.float32),
                                 jax.ShapeDtypeStruct((1, length), bool)).compile()
    analysis = compiled.memory_analysis()
    assert analysis is not None, "the CPU backend gives a memory analysis"
    dense_logits = heads * length * length * 4
    assert analysis.temp_size_in_bytes < dense_logits / 20


def test_drop_in_attention_fn_for_multi_head_attention():
    """`MultiHeadAttention(attention_fn=...)` takes the spec pytrees unchanged (the wiring path)."""
    from protlm.layers.attention import MultiHeadAttention
    from protlm.layers.blocked_attention import make_blocked_attention_fn

    q, _, _, table, valid = _inputs(length=70)
    x = q.reshape(q.shape[0], q.shape[1], -1)  # [b, L, 64] as layer input
    pos = jnp.arange(70)[None]
    dense_mha = MultiHeadAttention(num_heads=4, head_dim=16)
    blocked_mha = MultiHeadAttention(num_heads=4, head_dim=16,
                                     attention_fn=make_blocked_attention_fn(32, 16))
    params = dense_mha.init(jax.random.key(0), x, x)
    dense = dense_mha.apply(params, x, x, _dense_bias(table, pos, pos, True),
                            make_attention_mask(None, valid))
    bias = relative_bias_from_params(table, pos, pos, bidirectional=True, num_buckets=BUCKETS,
                                     max_distance=MAX_DISTANCE)
    blocked = jax.jit(lambda p, b, m: blocked_mha.apply(p, x, x, b, m))(params, bias,
                                                                          MaskSpec(valid))
    assert float(jnp.max(jnp.abs(blocked - dense))) <= 1e-5
