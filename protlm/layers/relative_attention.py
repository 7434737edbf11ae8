"""Relative positional attention of Transformer-XL and XLNet, with memory and the query stream.

Shared by ProtTXL (causal, `attn_type="uni"`) and ProtXLNet (bidirectional, two-stream). The
formulation is XLNet's (zihangdai/xlnet `modeling.py`, which transformers' `XLNetModel` copies):

* `relative_positions(qlen, klen, causal, clamp_len)`: the distances `klen, klen-1, ..., end`
  (`end = -qlen + 1` bidirectional, `0` causal), clamped to `[-clamp_len, clamp_len]`;
* `sinusoid(pos, d_model)`: `[sin(pos * f), cos(pos * f)]`, `f = 10000 ** (-2k / d_model)`;
* `rel_shift(x, klen)`: the reshape trick that turns scores against the position list into
  scores against keys, so that query `i` and key `j` (memory first) meet the embedding of
  distance `mlen + i - j`. Transformer-XL's `_rel_shift` (kimiyoung/transformer-xl
  `mem_transformer.py`, positions `klen-1 .. 0`) gives the same values on every key a causal
  query may see; the other entries are masked in both.

`score = (q + r_w_bias) . k  +  rel_shift((q + r_r_bias) . r)  [+ (q + r_s_bias) . seg_embed[s]]`,
times `head_dim ** -0.5`, masked, softmax over keys (float32), weights @ values, output
projection, dropout, residual and post-LayerNorm (both originals are post-LN).

Memory (`mems`): the layer's input hidden states of earlier segments, concatenated before the
current segment's keys/values (stop-gradient is the caller's job, `protlm.layers.memory`).
Two-stream attention (XLNet pretraining): the query stream `g` (one row per predicted token,
initialised from `mask_emb`) attends with the same projections to the content stream's keys and
values under a mask that hides each target's own content; `target_mapping` places the predicted
rows at their positions and back, as in the original.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from protlm.layers.attention import MASK_VALUE
from protlm.layers.axes import BATCH_LENGTH_EMBED, BATCH_LENGTH_HEADS_KV, constrain
from protlm.layers.dense import DenseGeneral, Initializer, normal
from protlm.layers.norms import LayerNorm

HEADS_KV = ("heads", "kv")
EMBED_HEADS_KV = ("embed", "heads", "kv")


def relative_positions(qlen: int, klen: int, causal: bool, clamp_len: int = -1) -> jax.Array:
    """Distances `[R]` float32 the positional embedding is evaluated at (XLNet's `pos_seq`).

    Bidirectional: `klen, ..., -qlen + 1` (`R = klen + qlen`); causal: `klen, ..., 0`
    (`R = klen + 1`). `clamp_len > 0` clips every distance to `[-clamp_len, clamp_len]`.
    """
    end = 0 if causal else -qlen + 1
    pos = jnp.arange(klen, end - 1, -1, dtype=jnp.int32).astype(jnp.float32)
    if clamp_len > 0:
        pos = jnp.clip(pos, -float(clamp_len), float(clamp_len))
    return pos


def sinusoid(pos: jax.Array, d_model: int) -> jax.Array:
    """`[..., d_model]` float32: `concat(sin(pos * inv_freq), cos(pos * inv_freq))`."""
    freq = jnp.arange(0, d_model, 2, dtype=jnp.int32).astype(jnp.float32)
    inv_freq = 1.0 / jnp.power(jnp.float32(10000.0), freq / d_model)
    x = jnp.asarray(pos, jnp.float32)[..., None] * inv_freq
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


def rel_shift(x: jax.Array, klen: int) -> jax.Array:
    """`[b, n, q, R] -> [b, n, q, klen]`: row `i`, column `j` takes column `q - i + j` of `x`
    (XLNet's `rel_shift_bnij`: reshape, drop the first row, reshape, keep `klen` columns)."""
    b, n, q, r = x.shape
    x = x.reshape(b, n, r, q)[:, :, 1:, :]
    return x.reshape(b, n, q, r - 1)[..., :klen]


def segment_mismatch(query_seg: jax.Array, key_seg: jax.Array) -> jax.Array:
    """Bool `[b, q, k]`: True where query and key lie in different segments (XLNet's `seg_mat`)."""
    return query_seg[:, :, None] != key_seg[:, None, :]


def rel_attention_core(q, k, v, k_r, r_w_bias, r_r_bias, mask, *, seg=None,
                       dropout_rate: float = 0.0, dropout_rng=None, deterministic: bool = True,
                       dtype: Any = jnp.float32):
    """Attention weights and context of relative positional attention.

    Args:
      q: `[b, i, n, d]` queries; k, v: `[b, j, n, d]` keys/values (memory first).
      k_r: `[b|1, R, n, d]` projected positional embeddings (per row when `bi_data`).
      r_w_bias, r_r_bias: `[n, d]` content and position biases.
      mask: bool `[b, 1|n, i, j]`, True = attend.
      seg: optional `(mismatch [b, i, j] bool, r_s_bias [n, d], seg_embed [2, n, d])`.

    Returns:
      `[b, i, n, d]` in `dtype`.
    """
    scale = q.shape[-1] ** -0.5
    dot = functools.partial(jnp.einsum, preferred_element_type=jnp.float32)
    ac = dot("bind,bjnd->bnij", q + r_w_bias.astype(q.dtype), k)            # [b, n, i, j]
    rr = q + r_r_bias.astype(q.dtype)
    if k_r.shape[0] == 1:                                                   # shared by the rows
        bd = dot("bind,jnd->bnij", rr, k_r[0])                              # [b, n, i, R]
    else:
        bd = dot("bind,bjnd->bnij", rr, k_r)
    score = ac + rel_shift(bd, k.shape[1])
    if seg is not None:
        mismatch, r_s_bias, seg_embed = seg
        ef = dot("bind,snd->bnis", q + r_s_bias.astype(q.dtype), seg_embed.astype(q.dtype))
        score = score + jnp.where(mismatch[:, None], ef[..., 1:2], ef[..., 0:1])
    score = jnp.where(mask, score * scale, MASK_VALUE)
    weights = jax.nn.softmax(score, axis=-1)                                # float32
    if not deterministic and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bnij,bjnd->bind", weights.astype(dtype), v.astype(dtype),
                      preferred_element_type=jnp.float32).astype(dtype)


class RelativeAttention(nn.Module):
    """One relative multi-head attention block (content stream and, optionally, query stream).

    Params (XLNet's layout; every kernel `[embed, heads, kv]`): `query`, `key`, `value`, `pos`
    (XLNet `r`, Transformer-XL `r_net`), `out` (XLNet `o`), `layer_norm`; with `own_biases`:
    `r_w_bias`, `r_r_bias` `[heads, kv]` (Transformer-XL/XLNet `untie_r`), plus `r_s_bias` when
    `segments`; with `segments`: `seg_embed [token_type=2, heads, kv]`.

    Attributes:
      num_heads, head_dim: heads x d_head (need not multiply to d_model, as in Transformer-XL).
      segments: relative segment encoding (XLNet).
      own_biases: biases are this layer's params; otherwise the caller passes them (tied).
    """

    num_heads: int
    head_dim: int
    segments: bool = False
    own_biases: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    layer_norm_eps: float = 1e-12
    dtype: Any = jnp.float32
    kernel_init: Initializer = normal(0.02)
    bias_init: Initializer = normal(0.02)
    ln_scale_init: Initializer = nn.initializers.ones_init()
    deterministic: bool = True

    def _bias(self, name, shape, axes):
        return self.param(name, nn.with_logical_partitioning(self.bias_init, axes), shape,
                          jnp.float32)

    @nn.compact
    def __call__(self, h, pos_emb, mask_h, mems=None, biases=None, seg_mismatch=None, g=None,
                 mask_g=None, target_mapping=None):
        """Content stream (and query stream) through the attention sublayer.

        Args:
          h: `[b, q, embed]` content stream.
          pos_emb: `[b|1, R, embed]` sinusoidal embeddings of `relative_positions`.
          mask_h: bool `[b, 1, q, mlen + q]` of the content stream.
          mems: `[b, mlen, embed]` or None.
          biases: `{"r_w_bias", "r_r_bias"[, "r_s_bias"]}` when not `own_biases`.
          seg_mismatch: bool `[b, q, mlen + q]` when `segments`.
          g: `[b, m, embed]` query stream (one row per predicted token) or None.
          mask_g: bool `[b, 1, q, mlen + q]` of the query stream (targets cannot see themselves).
          target_mapping: `[b, m, q]` float one-hot rows of the predicted positions.

        Returns:
          `(h, g)` after attention, residual and LayerNorm (`g` None without a query stream).
        """
        n, dh = self.num_heads, self.head_dim
        proj = functools.partial(DenseGeneral, features=(n, dh), kernel_axes=EMBED_HEADS_KV,
                                 dtype=self.dtype, kernel_init=self.kernel_init)
        query, out_kernel = proj(name="query"), self.param(
            "out", nn.with_logical_partitioning(self.kernel_init, EMBED_HEADS_KV),
            (h.shape[-1], n, dh), jnp.float32)
        if self.own_biases:
            biases = {"r_w_bias": self._bias("r_w_bias", (n, dh), HEADS_KV),
                      "r_r_bias": self._bias("r_r_bias", (n, dh), HEADS_KV)}
            if self.segments:
                biases["r_s_bias"] = self._bias("r_s_bias", (n, dh), HEADS_KV)
        seg = None
        if self.segments:
            seg_embed = self._bias("seg_embed", (2, n, dh), ("token_type",) + HEADS_KV)
            seg = (seg_mismatch, biases["r_s_bias"], seg_embed)
        layer_norm = LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="layer_norm",
                               scale_init=self.ln_scale_init)
        dropout = nn.Dropout(self.dropout_rate)
        cat = h if mems is None else jnp.concatenate([mems.astype(h.dtype), h], axis=1)
        key = constrain(checkpoint_name(proj(name="key")(cat), "key_proj"), BATCH_LENGTH_HEADS_KV)
        value = constrain(checkpoint_name(proj(name="value")(cat), "value_proj"),
                          BATCH_LENGTH_HEADS_KV)
        k_r = proj(name="pos")(pos_emb.astype(self.dtype))                 # [b|1, R, n, d]
        core = functools.partial(
            rel_attention_core, k=key, v=value, k_r=k_r, r_w_bias=biases["r_w_bias"],
            r_r_bias=biases["r_r_bias"], seg=seg, dropout_rate=self.attention_dropout_rate,
            deterministic=self.deterministic, dtype=self.dtype)

        def rng():
            if self.deterministic or self.attention_dropout_rate <= 0.0:
                return None
            return self.make_rng("dropout")

        def post(x, context):                                              # o, dropout, LN
            out = jnp.einsum("bind,hnd->bih", context, out_kernel.astype(self.dtype))
            out = dropout(checkpoint_name(out, "out_proj"), deterministic=self.deterministic)
            return constrain(layer_norm(x + out), BATCH_LENGTH_EMBED)

        q_h = constrain(checkpoint_name(query(h), "query_proj"), BATCH_LENGTH_HEADS_KV)
        h_out = post(h, core(q_h, mask=mask_h, dropout_rng=rng()))
        if g is None:
            return h_out, None
        q_g = query(g)                                                     # [b, m, n, d]
        if target_mapping is not None:   # predicted rows -> their positions -> back
            tm = target_mapping.astype(self.dtype)
            q_g = jnp.einsum("bmnd,bml->blnd", q_g, tm)
            ctx = jnp.einsum("blnd,bml->bmnd", core(q_g, mask=mask_g, dropout_rng=rng()), tm)
        else:
            ctx = core(q_g, mask=mask_g, dropout_rng=rng())
        return h_out, post(g, ctx)
