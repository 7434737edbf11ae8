"""The network Transformer-XL and XLNet share: relative attention layers with memory.

zihangdai/xlnet implements both as one function (`modeling.transformer_xl`, `attn_type` "uni" for
Transformer-XL, "bi" for XLNet); protlm does the same: `XLConfig` holds the common
hyperparameters and exact counts/FLOPs, `XLTransformer` the Flax network. The families
(`protlm.models.txl`, `protlm.models.xlnet`) set the differences as config traits:

| trait | ProtTXL | ProtXLNet |
|---|---|---|
| `causal` (attention) | yes ("uni") | no ("bi", masks from the permutation) |
| `embedding_scale` | sqrt(d_model) (`AdaptiveEmbedding.emb_scale`) | 1 |
| `segments` (relative segment encoding) | no | yes (`r_s_bias`, `seg_embed`) |
| `two_stream` (query stream, `mask_emb`) | no | yes |
| LayerNorm scale init | N(1, init_std) | ones |

Post-LN layers: `LN(x + attention(x, mems))`, `LN(x + W2 act(W1 x))`; output logits tied to the
word embedding plus a bias (Transformer-XL `crit.out_layers[0]`, XLNet `lm_loss`).

Param tree (unscanned; scanned: one `layers` subtree with a leading `layers` axis):
```
word_embedding/embedding            [vocab, embed]          ('vocab', 'embed')
mask_emb                            [embed]                 two-stream only
r_w_bias, r_r_bias (, r_s_bias)     [heads, kv]             tied biases (untie_r=False)
layers_{i}/attention/{query,key,value,pos,out}/kernel|out [embed, heads, kv]
layers_{i}/attention/{r_w_bias,r_r_bias(,r_s_bias)}       [heads, kv]   (untie_r=True)
layers_{i}/attention/seg_embed      [token_type, heads, kv] segments only
layers_{i}/attention/layer_norm/{scale,bias}
layers_{i}/ff/{wi,wo}/{kernel,bias}, layers_{i}/ff/layer_norm/{scale,bias}
lm_bias                             [vocab]
```
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from protlm.layers import memory as memory_lib
from protlm.layers.axes import BATCH_LENGTH_EMBED, BATCH_LENGTH_VOCAB, constrain
from protlm.layers.dense import normal
from protlm.layers.embeddings import Embed
from protlm.layers.mlp import MlpBlock, get_activation
from protlm.layers.norms import LayerNorm
from protlm.layers.relative_attention import (HEADS_KV, RelativeAttention, relative_positions,
                                              segment_mismatch, sinusoid)
from protlm.layers.repeat import REMAT_POLICIES, check_remat_policy
from protlm.models.family import FeatureLengths, ModelConfig


@dataclasses.dataclass(frozen=True)
class XLConfig(ModelConfig):
    """Hyperparameters common to ProtTXL and ProtXLNet (XLNet / Transformer-XL names in comments).

    Subclasses set `family_name` and the class traits below.
    """

    causal: ClassVar[bool]
    segments: ClassVar[bool]
    two_stream: ClassVar[bool]

    vocab_size: int = 37
    hidden_size: int = 1024              # d_model
    num_layers: int = 30                 # n_layer
    num_heads: int = 16                  # n_head
    head_dim: int = 64                   # d_head
    intermediate_size: int = 4096        # d_inner
    activation: str = "relu"             # ff_activation
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.1            # dropout
    attention_dropout_rate: float = 0.1  # dropatt
    initializer_range: float = 0.02      # init_std
    mem_len: int = 512                   # memory slots carried between steps (0 = none)
    clamp_len: int = -1                  # distances beyond it share one embedding (-1 = none)
    untie_r: bool = False                # per-layer r_w_bias / r_r_bias (/ r_s_bias)
    dtype: str = "bfloat16"
    scan_layers: bool = False
    remat_policy: str = "none"
    z_loss: float = 0.0

    def __post_init__(self):
        get_activation(self.activation)
        check_remat_policy(self.remat_policy)
        jnp.dtype(self.dtype)
        if self.mem_len < 0:
            raise ValueError(f"mem_len must be >= 0, got {self.mem_len}")

    # ---- traits the families may override ----
    @property
    def embedding_scale(self) -> float:
        return 1.0

    @property
    def reuse_len(self) -> int:
        """Positions of a segment cached as memory (0 = all; XLNet caches the first `reuse_len`)."""
        return 0

    @property
    def layer_norm_scale_std(self) -> float:
        """Std of the LayerNorm scale init around 1 (0 = ones)."""
        return 0.0

    @property
    def activation_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def heads_span_hidden(self) -> bool:
        """num_heads x head_dim == hidden_size: what transformers' XLNetConfig can express
        (Transformer-XL allows other head widths, e.g. ProtTXL-BFD's 14 x 128 on 1024)."""
        return self.num_heads * self.head_dim == self.hidden_size

    # ---- sizes ----
    def _bias_params(self) -> int:
        """r_w_bias, r_r_bias (and r_s_bias) of one layer (or of the tied set)."""
        return (3 if self.segments else 2) * self.num_heads * self.head_dim

    def _layer_params(self) -> int:
        d, nh, f = self.hidden_size, self.num_heads * self.head_dim, self.intermediate_size
        attention = 5 * d * nh + 2 * d + (2 * nh if self.segments else 0)   # + seg_embed
        ff = d * f + f + f * d + d + 2 * d
        return attention + ff + (self._bias_params() if self.untie_r else 0)

    def num_params(self) -> int:
        """Exact parameter count (tied output: the embedding is counted once)."""
        v, d = self.vocab_size, self.hidden_size
        top = v * d + v + (d if self.two_stream else 0)
        return top + self.num_layers * self._layer_params() + (
            0 if self.untie_r else self._bias_params())

    # ---- FLOPs ----
    def _klen(self, qlen: int) -> int:
        return self.mem_len + qlen

    def _stream_flops(self, queries: int, qlen: int, klen: int) -> float:
        """Forward FLOPs of one stream's attention + FF per layer, for `queries` rows."""
        d, nh, f = self.hidden_size, self.num_heads * self.head_dim, self.intermediate_size
        r = klen + (1 if self.causal else qlen)                   # relative position rows
        attention_rows = qlen                                      # scores for every position
        proj = queries * d * nh * 2                                # q and o
        scores = attention_rows * (2 * klen + r) * nh              # ac, bd, weights @ v
        return 2.0 * (proj + scores + queries * 2 * d * f)

    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs (3 x forward) of one row of `lengths["inputs"]` tokens with the
        memory: keys/values over `mem_len + length` positions every step (the memory is
        re-projected, as in both originals), scores against memory and segment, the tied
        logits of the predicted positions. The positional projection (shared by the batch) is
        left out."""
        qlen = int(lengths["inputs"])
        klen = self._klen(qlen)
        d, nh, v = self.hidden_size, self.num_heads * self.head_dim, self.vocab_size
        predicted = self.predicted_per_example(lengths)
        per_layer = 2.0 * klen * d * nh * 2 + self._stream_flops(qlen, qlen, klen)
        if self.two_stream:   # query stream: its rows placed at their positions and back
            per_layer += self._stream_flops(predicted, qlen, klen) + 2.0 * 2 * predicted * qlen * nh
        return 3.0 * (self.num_layers * per_layer + 2.0 * predicted * d * v)

    def predicted_per_example(self, lengths: FeatureLengths) -> int:
        """Positions with a loss in one row (logits computed)."""
        return int(lengths["inputs"])

    def tokens_per_example(self, lengths: FeatureLengths) -> int:
        return int(lengths["inputs"])


class FeedForward(nn.Module):
    """`LN(x + dropout(W2 dropout(act(W1 x))))` (Transformer-XL `PositionwiseFF`, XLNet
    `positionwise_ffn`); params `wi`, `wo`, `layer_norm`."""

    config: XLConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        cfg, init = self.config, normal(self.config.initializer_range)
        h = MlpBlock(cfg.intermediate_size, activations=(cfg.activation,),
                     intermediate_dropout_rate=cfg.dropout_rate, use_bias=True,
                     dtype=cfg.activation_dtype, wi_init=init, wo_init=init, name="mlp")(
                         x, deterministic=self.deterministic)
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
        return constrain(_layer_norm(cfg, "layer_norm")(x + h), BATCH_LENGTH_EMBED)


def _ln_scale_init(cfg: XLConfig):
    std = cfg.layer_norm_scale_std
    if std <= 0:
        return nn.initializers.ones_init()
    return lambda key, shape, dtype=jnp.float32: 1.0 + std * jax.random.normal(key, shape, dtype)


def _layer_norm(cfg: XLConfig, name: str) -> LayerNorm:
    return LayerNorm(cfg.layer_norm_eps, dtype=cfg.activation_dtype, name=name,
                     scale_init=_ln_scale_init(cfg))


class XLLayer(nn.Module):
    """Attention (with memory, and the query stream) then the feed-forward block."""

    config: XLConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, streams, mem, pos_emb, mask_h, mask_g, seg_mismatch, target_mapping,
                 biases):
        """`(h, g)` -> `((h, g), h)`: the new streams and this layer's input (memory material)."""
        cfg, det = self.config, self.deterministic
        h, g = streams
        attention = RelativeAttention(
            num_heads=cfg.num_heads, head_dim=cfg.head_dim, segments=cfg.segments,
            own_biases=cfg.untie_r, dropout_rate=cfg.dropout_rate,
            attention_dropout_rate=cfg.attention_dropout_rate, layer_norm_eps=cfg.layer_norm_eps,
            dtype=cfg.activation_dtype, kernel_init=normal(cfg.initializer_range),
            bias_init=normal(cfg.initializer_range), deterministic=det,
            ln_scale_init=_ln_scale_init(cfg), name="attention")
        h_new, g_new = attention(h, pos_emb, mask_h, mems=mem, biases=biases,
                                 seg_mismatch=seg_mismatch, g=g, mask_g=mask_g,
                                 target_mapping=target_mapping)
        ff = FeedForward(cfg, det, name="ff")
        return (ff(h_new), None if g_new is None else ff(g_new)), h


class XLTransformer(nn.Module):
    """Embedding, the layer stack with memory, and the tied LM head (see the module doc)."""

    config: XLConfig

    def _layers(self, deterministic: bool):
        cfg = self.config
        cls = XLLayer
        if cfg.remat_policy != "none":
            cls = nn.remat(XLLayer, policy=REMAT_POLICIES[cfg.remat_policy],
                           prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            scanned = nn.scan(cls, variable_axes={"params": 0},
                              split_rngs={"params": True, "dropout": True},
                              in_axes=(1,) + (nn.broadcast,) * 6, out_axes=1,
                              length=cfg.num_layers,
                              metadata_params={nn.PARTITION_NAME: "layers"})
            return scanned(cfg, deterministic, name="layers")
        return [cls(cfg, deterministic, name=f"layers_{i}") for i in range(cfg.num_layers)]

    def positional_embedding(self, qlen: int, klen: int, reverse=None) -> jax.Array:
        """`[1, R, embed]` (or `[b, R, embed]` with per-row `reverse` flags: XLNet's `bi_data`,
        whose backward rows use the negated distances)."""
        cfg = self.config
        pos = relative_positions(qlen, klen, cfg.causal, cfg.clamp_len)
        fwd = sinusoid(pos, cfg.hidden_size)[None]
        if reverse is None:
            return fwd
        bwd = sinusoid(-pos, cfg.hidden_size)[None]
        return jnp.where(jnp.asarray(reverse).reshape(-1, 1, 1) > 0, bwd, fwd)

    @nn.compact
    def __call__(self, tokens, mask_h, mems=None, mem_valid=None, *, mask_g=None, seg_ids=None,
                 target_mapping=None, reverse=None, deterministic: bool = True,
                 output_hidden_states: bool = False, logits: bool = True):
        """The stack over one segment.

        Args:
          tokens: `[b, q]` int ids.
          mask_h: bool `[b, 1, q, mlen + q]` content-stream mask (memory slots first).
          mems, mem_valid: `[b, layers, mlen, embed]` and `[b]` (None: no memory).
          mask_g, target_mapping: the query stream's mask and `[b, m, q]` placement (two-stream).
          seg_ids: `[b, q]` segment ids (segments; memory counts as segment 0, as XLNet's).
          reverse: `[b, 1]` per-row backward flags (`bi_data`) or None.
          output_hidden_states: also return every layer's input and the last output.
          logits: compute the tied LM head's logits of `hidden`.

        Returns:
          `{"hidden": [b, q|m, embed] (query stream when two-stream), "logits": float32 or None,
            "mems": next memory, "mem_valid": [b], "hidden_states": tuple or None}`.
        """
        cfg = self.config
        init = normal(cfg.initializer_range)
        b, qlen = tokens.shape
        mlen = 0 if mems is None else mems.shape[2]
        dropout = nn.Dropout(cfg.dropout_rate)
        word_embedding = Embed(cfg.vocab_size, cfg.hidden_size, axes=("vocab", "embed"),
                               dtype=cfg.activation_dtype, embedding_init=init,
                               name="word_embedding")
        emb = word_embedding(tokens)
        if cfg.embedding_scale != 1.0:
            emb = emb * jnp.asarray(cfg.embedding_scale, emb.dtype)
        h = constrain(dropout(emb, deterministic=deterministic), BATCH_LENGTH_EMBED)
        g = None
        if cfg.two_stream:
            mask_emb = self.param("mask_emb", nn.with_logical_partitioning(init, ("embed",)),
                                  (cfg.hidden_size,), jnp.float32)
            if target_mapping is not None:
                g = dropout(jnp.broadcast_to(jnp.asarray(mask_emb, h.dtype),
                                             (b, target_mapping.shape[1], cfg.hidden_size)),
                            deterministic=deterministic)
        biases = None
        if not cfg.untie_r:
            names = ("r_w_bias", "r_r_bias") + (("r_s_bias",) if cfg.segments else ())
            biases = {n: self.param(n, nn.with_logical_partitioning(init, HEADS_KV),
                                    (cfg.num_heads, cfg.head_dim), jnp.float32) for n in names}
        pos_emb = dropout(self.positional_embedding(qlen, mlen + qlen, reverse),
                          deterministic=deterministic)
        mismatch = None
        if cfg.segments:
            seg_ids = jnp.zeros_like(tokens) if seg_ids is None else jnp.asarray(seg_ids)
            key_seg = jnp.concatenate([jnp.zeros((b, mlen), seg_ids.dtype), seg_ids], axis=1)
            mismatch = segment_mismatch(seg_ids, key_seg)
        layers = self._layers(deterministic)
        args = (pos_emb, mask_h, mask_g, mismatch, target_mapping, biases)
        if cfg.scan_layers:
            if output_hidden_states:
                raise ValueError("output_hidden_states needs scan_layers=False; convert params "
                                 "with protlm.models.scan_utils.unstack_layers")
            (h, g), inputs = layers((h, g), mems, *args)      # inputs [b, layers, q, embed]
            hidden_states = None
        else:
            per_layer = []
            for i, layer in enumerate(layers):
                (h, g), layer_in = layer((h, g), None if mems is None else mems[:, i], *args)
                per_layer.append(layer_in)
            inputs = jnp.stack(per_layer, axis=1) if mems is not None else None
            hidden_states = tuple(per_layer) + (h,) if output_hidden_states else None
        hidden = dropout(h if g is None else g, deterministic=deterministic)
        lm_bias = self.param("lm_bias", nn.with_logical_partitioning(
            nn.initializers.zeros_init(), ("vocab",)), (cfg.vocab_size,), jnp.float32)
        out = {"hidden": hidden, "logits": None, "mems": None, "mem_valid": None,
               "hidden_states": hidden_states}
        if logits:   # tied output: hidden @ word_embedding.T + lm_bias, float32
            out["logits"] = constrain(
                jnp.asarray(word_embedding.attend(hidden), jnp.float32) + lm_bias,
                BATCH_LENGTH_VOCAB)
        if mems is not None:
            out["mems"], out["mem_valid"] = memory_lib.update_memory(mems, mem_valid, inputs,
                                                                     cfg.reuse_len)
        return out


def embedding_scale(d_model: int) -> float:
    """Transformer-XL's input scale `d_model ** 0.5` (`AdaptiveEmbedding.emb_scale`)."""
    return math.sqrt(d_model)
