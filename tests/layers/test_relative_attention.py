"""Relative attention, rel-shift and memory against direct (slow) definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm.layers import memory, relative_attention as ra


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("qlen,mlen", [(5, 0), (4, 3), (1, 6)])
def test_rel_shift_pairs_query_and_key_with_their_distance(causal, qlen, mlen):
    klen = mlen + qlen
    pos = np.asarray(ra.relative_positions(qlen, klen, causal))
    # scores against the position list: x[i, r] = 1000 * i + pos[r]
    x = (1000.0 * np.arange(qlen)[:, None] + pos[None, :])[None, None]
    out = np.asarray(ra.rel_shift(jnp.asarray(x), klen))[0, 0]
    for i in range(qlen):
        for j in range(klen):
            if causal and j > mlen + i:
                continue   # future keys: masked, any value
            assert out[i, j] == 1000 * i + (mlen + i - j), (i, j)


def test_relative_positions_clamp_and_ranges():
    np.testing.assert_array_equal(ra.relative_positions(2, 3, True), [3, 2, 1, 0])
    np.testing.assert_array_equal(ra.relative_positions(2, 3, False), [3, 2, 1, 0, -1])
    np.testing.assert_array_equal(ra.relative_positions(2, 3, False, clamp_len=1),
                                  [1, 1, 1, 0, -1])


def test_sinusoid_matches_transformer_xl_formula():
    pos = np.array([0.0, 3.0, 17.0])
    d = 8
    inv_freq = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    want = np.concatenate([np.sin(pos[:, None] * inv_freq), np.cos(pos[:, None] * inv_freq)], -1)
    np.testing.assert_allclose(ra.sinusoid(jnp.asarray(pos), d), want, atol=1e-6)


def _slow_scores(q, k, r_of_distance, r_w, r_r, mlen, seg=None):
    """score[b, n, i, j] by the definition: content + position (+ segment) terms, per pair."""
    b, qlen, n, dh = q.shape
    klen = k.shape[1]
    out = np.zeros((b, n, qlen, klen))
    for i in range(qlen):
        for j in range(klen):
            r = r_of_distance(mlen + i - j)                                   # [n, dh]
            s = np.einsum("bnd,bnd->bn", q[:, i] + r_w, k[:, j]) + np.einsum(
                "bnd,nd->bn", q[:, i] + r_r, r)
            if seg is not None:
                mismatch, r_s, seg_embed = seg
                s = s + np.einsum("bnd,bnd->bn", q[:, i] + r_s, seg_embed[mismatch[:, i, j].astype(int)])
            out[:, :, i, j] = s
    return out * dh ** -0.5


@pytest.mark.parametrize("causal", [True, False])
def test_core_equals_slow_definition_with_memory_and_segments(causal):
    rng = np.random.default_rng(0)
    b, qlen, mlen, n, dh, d = 2, 5, 3, 2, 4, 6
    klen = mlen + qlen
    q = rng.normal(size=(b, qlen, n, dh))
    k, v = rng.normal(size=(2, b, klen, n, dh))
    w_r = rng.normal(size=(d, n, dh))
    r_w, r_r, r_s = rng.normal(size=(3, n, dh))
    seg_embed = rng.normal(size=(2, n, dh))
    seg_ids = rng.integers(0, 2, size=(b, qlen))
    mismatch = np.asarray(ra.segment_mismatch(
        jnp.asarray(seg_ids), jnp.concatenate([jnp.zeros((b, mlen), int), seg_ids], 1)))
    pos = ra.relative_positions(qlen, klen, causal)
    k_r = np.einsum("rh,hnd->rnd", np.asarray(ra.sinusoid(pos, d)), w_r)[None]
    mask = np.ones((b, 1, qlen, klen), bool)
    if causal:
        mask &= (np.arange(klen)[None, :] <= mlen + np.arange(qlen)[:, None])[None, None]
    out = ra.rel_attention_core(
        jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(v, jnp.float32),
        jnp.asarray(k_r, jnp.float32), jnp.asarray(r_w, jnp.float32),
        jnp.asarray(r_r, jnp.float32), jnp.asarray(mask),
        seg=(jnp.asarray(mismatch), jnp.asarray(r_s, jnp.float32),
             jnp.asarray(seg_embed, jnp.float32)))

    def r_of(dist):
        return np.einsum("h,hnd->nd", np.asarray(ra.sinusoid(jnp.asarray([float(dist)]), d))[0], w_r)

    score = _slow_scores(q, k, r_of, r_w, r_r, mlen, (mismatch, r_s, seg_embed))
    score = np.where(mask, score, -np.inf)
    w = np.exp(score - score.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = np.einsum("bnij,bjnd->bind", w, v)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_memory_keeps_the_last_mem_len_states_right_aligned():
    mem = jnp.zeros((2, 1, 4, 1))
    valid = jnp.zeros((2,), jnp.int32)
    x = (2.0 * jnp.arange(3, dtype=jnp.float32)).reshape(1, 1, 3, 1) * jnp.ones((2, 1, 1, 1))
    mem, valid = memory.update_memory(mem, valid, x)
    np.testing.assert_array_equal(valid, [3, 3])
    np.testing.assert_array_equal(mem[0, 0, :, 0], [0, 0, 2, 4])   # slot 0 not yet real
    np.testing.assert_array_equal(memory.memory_key_valid(valid, 4)[0], [False, True, True, True])
    mem, valid = memory.update_memory(mem, valid, x + 10)
    np.testing.assert_array_equal(valid, [4, 4])
    np.testing.assert_array_equal(mem[0, 0, :, 0], [4, 10, 12, 14])
    # XLNet caches only the first reuse_len positions of a segment
    mem2, valid2 = memory.update_memory(jnp.zeros((1, 1, 4, 1)), jnp.zeros((1,), jnp.int32),
                                        x[:1], reuse_len=2)
    np.testing.assert_array_equal(mem2[0, 0, :, 0], [0, 0, 0, 2])
    np.testing.assert_array_equal(valid2, [2])


def test_memory_is_stop_gradient():
    def f(x):
        mem, _ = memory.update_memory(jnp.zeros((1, 1, 2, 1)), jnp.zeros((1,), jnp.int32), x)
        return jnp.sum(mem)
    np.testing.assert_array_equal(jax.grad(f)(jnp.ones((1, 1, 2, 1))), 0.0)
