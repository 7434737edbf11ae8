"""Unit checks of the building blocks: dense, embed, norms, mlp, attention."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm.layers import (DenseGeneral, Embed, LayerNorm, MlpBlock, MultiHeadAttention, RMSNorm,
                           dot_product_attention, make_attention_mask)
from protlm.layers.repeat import check_remat_policy

KEY = jax.random.PRNGKey(0)


def test_dense_general_multi_axis_and_names():
    x = jax.random.normal(KEY, (2, 5, 3, 4))
    mod = DenseGeneral(6, axis=(-2, -1), kernel_axes=("heads", "kv", "embed"))
    v = mod.init(KEY, x)
    kernel = v["params"]["kernel"]
    assert isinstance(kernel, nn.LogicallyPartitioned) and kernel.names == ("heads", "kv", "embed")
    np.testing.assert_allclose(mod.apply(v, x), jnp.einsum("blhd,hde->ble", x, kernel.value),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kernel_axes"):
        DenseGeneral(6, kernel_axes=("embed",)).init(KEY, x)


def test_embed_lookup_and_attend_bf16():
    mod = Embed(10, 4, dtype=jnp.bfloat16)
    ids = jnp.asarray([[1, 2, 9]])
    v = mod.init(KEY, ids)
    table = v["params"]["embedding"].value
    assert table.dtype == jnp.float32
    out = mod.apply(v, ids)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), table[ids[0]][None].astype(jnp.bfloat16)
                               .astype(jnp.float32))
    logits = mod.apply(v, jnp.ones((1, 3, 4)), method=Embed.attend)
    assert logits.shape == (1, 3, 10)


def test_norms_match_formulas():
    x = jax.random.normal(KEY, (2, 3, 8)) * 3 + 1
    rms = RMSNorm().apply({"params": {"scale": jnp.full((8,), 2.0)}}, x)
    np.testing.assert_allclose(rms, 2 * x / jnp.sqrt(jnp.mean(x ** 2, -1, keepdims=True) + 1e-6),
                               rtol=1e-5)
    ln = LayerNorm().apply({"params": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}}, x)
    ref = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(ln, ref, rtol=1e-4, atol=1e-5)
    out = RMSNorm(dtype=jnp.bfloat16).apply({"params": {"scale": jnp.ones(8)}}, x)
    assert out.dtype == jnp.bfloat16


def test_gated_mlp_param_names():
    x = jnp.ones((1, 2, 4))
    v = MlpBlock(8, activations=("gelu_new", "linear")).init(KEY, x)
    assert set(v["params"]) == {"wi_0", "wi_1", "wo"}
    v = MlpBlock(8, activations=("gelu",), use_bias=True).init(KEY, x)
    assert set(v["params"]["wi"]) == {"kernel", "bias"}
    with pytest.raises(ValueError, match="unknown activation"):
        MlpBlock(8, activations=("swish2",)).init(KEY, x)
    with pytest.raises(ValueError, match="remat_policy"):
        check_remat_policy("everything")


def test_attention_core_matches_naive_softmax():
    kq, kk, kv, kb = jax.random.split(KEY, 4)
    q = jax.random.normal(kq, (2, 5, 3, 4))
    k = jax.random.normal(kk, (2, 7, 3, 4))
    v = jax.random.normal(kv, (2, 7, 3, 4))
    bias = jax.random.normal(kb, (1, 3, 5, 7))
    mask = make_attention_mask(None, jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], bool))
    out = dot_product_attention(q, k, v, bias, mask, scale=0.5)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * 0.5 + bias
    logits = jnp.where(mask, logits, -jnp.inf)
    ref = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_causal_and_segment_mask():
    seg = jnp.asarray([[1, 1, 2, 2, 0]])
    m = make_attention_mask(None, jnp.ones((1, 5), bool), seg, seg, causal=True)[0, 0]
    expected = np.array([[1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0],
                         [0, 0, 1, 0, 0],
                         [0, 0, 1, 1, 0],
                         [0, 0, 0, 0, 1]], bool)
    np.testing.assert_array_equal(m, expected)


def test_attention_dropout_needs_rng_and_changes_output():
    x = jax.random.normal(KEY, (2, 6, 8))
    mod = MultiHeadAttention(num_heads=2, head_dim=4, dropout_rate=0.5)
    v = mod.init(KEY, x, x)
    det = mod.apply(v, x, x, deterministic=True)
    drop = mod.apply(v, x, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(det, drop)
    np.testing.assert_allclose(det, mod.apply(v, x, x), rtol=0, atol=0)
