"""ProtAlbert: ALBERT encoder with the MLM head (HF `AlbertForMaskedLM` layout, no pooler).

ALBERT (Lan et al. 2020; google-research/albert) is BERT with two parameter savings:

* factorised embeddings: token, position and token-type tables of width `embedding_size` (128),
  LayerNorm there, then one dense projection `embedding_hidden_mapping_in` to `hidden_size` (4096);
* cross-layer sharing: ONE transformer layer (`num_hidden_groups` = 1) applied `num_layers` (12)
  times. The layer is BERT's post-norm block (`protlm.models.bert.BertLayer`: attention with
  biases, LN(x + attn), gelu MLP, LN(x + mlp)); with `scan_layers` the repeats run as one
  `nn.scan` with the params broadcast, so the param tree is the same either way.

The MLM head maps hidden -> `embedding_size` (dense + activation + LayerNorm) and decodes with the
128-d word embeddings (tied) plus an output bias. Rostlab's config says `hidden_act: gelu`, which
transformers maps to the exact (erf) GELU, so protlm does too (google-research/albert's TF `gelu`
was the tanh approximation: set `hidden_act="gelu_new"` for that). HF's `AlbertLayer` applies no
dropout to the FFN output where google-research/albert does; protlm follows the latter (ProtAlbert's
dropouts are 0, where both agree).

Pretraining is MLM only: ALBERT's sentence-order prediction needs two segments of one document,
and ProtTrans' documents are one protein each, so the order task is degenerate (no SOP head; the
`sop_classifier` of Rostlab's `AlbertForPreTraining` file is dropped on import).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from protlm.layers.attention import make_attention_mask
from protlm.layers.axes import BATCH_LENGTH_EMBED, BATCH_LENGTH_VOCAB, constrain
from protlm.layers.blocked_attention import MaskSpec
from protlm.layers.dense import DenseGeneral, normal
from protlm.layers.embeddings import Embed
from protlm.layers.mlp import get_activation
from protlm.layers.norms import LayerNorm
from protlm.layers.repeat import check_remat_policy, repeat_shared_layer
from protlm.models.bert import BertLayer
from protlm.models.family import FeatureLengths, ModelConfig


@dataclasses.dataclass(frozen=True)
class AlbertConfig(ModelConfig):
    """ALBERT hyperparameters (HF `AlbertConfig` names where they exist); feature lengths
    `{"inputs": length}`. The field names BERT's layer reads (`num_heads`, `head_dim`,
    `intermediate_size`, ...) are BertConfig's, so the shared layer is `BertLayer`."""

    family_name: ClassVar[str] = "albert"

    vocab_size: int = 34
    embedding_size: int = 128            # width of the factorised embeddings
    hidden_size: int = 4096
    num_layers: int = 12                 # num_hidden_layers: applications of the shared layer(s)
    num_hidden_groups: int = 1           # distinct layers; group g serves num_layers/groups repeats
    num_heads: int = 64                  # num_attention_heads
    intermediate_size: int = 16384
    hidden_act: str = "gelu"             # exact erf GELU, as HF "gelu" (Rostlab's config)
    max_position_embeddings: int = 40000
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.0            # hidden_dropout_prob (ProtAlbert: 0.0)
    attention_dropout_rate: float = 0.0  # attention_probs_dropout_prob
    initializer_range: float = 0.02
    dtype: str = "bfloat16"
    scan_layers: bool = False            # nn.scan over depth (same params as unrolled)
    remat_policy: str = "none"
    z_loss: float = 0.0
    # > 0: blocked attention with query blocks of this size (see T5Config.attention_block_size).
    attention_block_size: int = 0
    attention_key_block_size: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads "
                             f"{self.num_heads}")
        if self.num_hidden_groups < 1 or self.num_layers % self.num_hidden_groups:
            raise ValueError(f"num_layers {self.num_layers} must be a multiple of "
                             f"num_hidden_groups {self.num_hidden_groups}")
        get_activation(self.hidden_act)
        check_remat_policy(self.remat_policy)
        jnp.dtype(self.dtype)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def activation_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def max_length(self) -> int:
        return self.max_position_embeddings

    @property
    def repeats_per_group(self) -> int:
        return self.num_layers // self.num_hidden_groups

    def _layer_matmul_params(self) -> int:
        d, f = self.hidden_size, self.intermediate_size
        return 4 * d * d + 2 * d * f

    def _head_params(self) -> int:
        """MLM head: dense hidden -> embedding_size, LayerNorm, output bias (decoder tied)."""
        e = self.embedding_size
        return self.hidden_size * e + e + 2 * e + self.vocab_size

    def num_params(self) -> int:
        """Parameters of `AlbertForMaskedLM` (exact; equals HF's count, no pooler)."""
        d, f, e = self.hidden_size, self.intermediate_size, self.embedding_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * e + 2 * e
        projection = e * d + d
        layer = self._layer_matmul_params() + 4 * d + f + d + 4 * d  # + biases + 2 LayerNorms
        return embeddings + projection + self.num_hidden_groups * layer + self._head_params()

    def param_counts(self) -> dict[str, int]:
        d = self.hidden_size
        pooler = d * d + d
        base = self.num_params() - self._head_params()
        return {"AlbertForMaskedLM": self.num_params(), "AlbertModel": base + pooler,
                # Rostlab's released file: model + pooler + MLM head + sentence-order head
                "AlbertForPreTraining": self.num_params() + pooler + 2 * d + 2}

    def tokens_per_example(self, lengths: FeatureLengths) -> int:
        return int(lengths["inputs"])

    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs of one example of `lengths["inputs"]` tokens: per token 6 x the matmul
        params *applied* (the shared layer counts `num_layers` times, plus the embedding projection,
        the head's dense and the tied decoder) + 12 x layers x length x hidden (attention)."""
        length, d, e = int(lengths["inputs"]), self.hidden_size, self.embedding_size
        matmul = (self.num_layers * self._layer_matmul_params() + e * d + d * e
                  + self.vocab_size * e)
        return float(length * (6 * matmul + 12 * self.num_layers * length * d))


def _zero_row_0(init):
    """HF zeroes the padding row of the word embeddings at init (`padding_idx`)."""
    def f(key, shape, dtype=jnp.float32):
        return init(key, shape, dtype).at[0].set(0)
    return f


class AlbertEmbeddings(nn.Module):
    """word + position + token type (all 0), width `embedding_size` -> LayerNorm -> dropout."""

    config: AlbertConfig

    def setup(self):
        cfg = self.config
        emb = functools.partial(Embed, features=cfg.embedding_size, dtype=cfg.activation_dtype,
                                embedding_init=normal(cfg.initializer_range))
        self.word_embeddings = emb(cfg.vocab_size, axes=("vocab", "embed"),
                                   embedding_init=_zero_row_0(normal(cfg.initializer_range)))
        self.position_embeddings = emb(cfg.max_position_embeddings, axes=("abspos", "embed"))
        self.token_type_embeddings = emb(cfg.type_vocab_size, axes=("token_type", "embed"))
        self.layer_norm = LayerNorm(cfg.layer_norm_eps, dtype=cfg.activation_dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, tokens, positions=None, deterministic=True):
        """tokens `[batch, length]` -> `[batch, length, embedding_size]`."""
        if positions is None:
            if tokens.shape[-1] > self.config.max_position_embeddings:
                raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                                 f"max_position_embeddings {self.config.max_position_embeddings}")
            positions = jnp.arange(tokens.shape[-1], dtype=jnp.int32)[None, :]
        x = (self.word_embeddings(tokens) + self.position_embeddings(positions)
             + self.token_type_embeddings(jnp.zeros_like(tokens)))
        return self.dropout(self.layer_norm(x), deterministic=deterministic)


class AlbertEncoder(nn.Module):
    """`embedding_hidden_mapping_in` then the shared layer group(s) `layer_groups_{g}`."""

    config: AlbertConfig

    @nn.compact
    def __call__(self, x, mask, deterministic=True, output_hidden_states=False):
        """x `[batch, length, embedding_size]`, mask bool `[batch, 1, length, length]` (or a
        `MaskSpec`).

        Returns the last layer output `[batch, length, hidden]`, or `(last, hidden_states)` with
        the projected embeddings and every application's output (layers + 1 arrays, as HF) when
        `output_hidden_states` (which runs the repeats unrolled: the params are the same).
        """
        cfg = self.config
        x = DenseGeneral(cfg.hidden_size, kernel_axes=("embed", "mlp"), use_bias=True,
                         bias_axes=("mlp",), dtype=cfg.activation_dtype,
                         kernel_init=normal(cfg.initializer_range),
                         name="embedding_hidden_mapping_in")(x)
        x = constrain(x, BATCH_LENGTH_EMBED)
        hidden = [] if output_hidden_states else None
        for g in range(cfg.num_hidden_groups):
            stack = repeat_shared_layer(BertLayer, cfg.repeats_per_group,
                                        scan=cfg.scan_layers and not output_hidden_states,
                                        remat_policy=cfg.remat_policy, num_args=1,
                                        name=f"layer_groups_{g}")(
                                            config=cfg, deterministic=deterministic)
            x = stack(x, mask, hidden_states=hidden)
        if not output_hidden_states:
            return x
        return x, tuple(hidden) + (x,)


class AlbertMlmHead(nn.Module):
    """dense (hidden -> embedding_size) + act -> LayerNorm -> tied decoder + `bias [vocab]`."""

    config: AlbertConfig
    word_embeddings: nn.Module

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dt = cfg.activation_dtype
        h = DenseGeneral(cfg.embedding_size, kernel_axes=("embed", "mlp"), use_bias=True,
                         bias_axes=("mlp",), dtype=dt, kernel_init=normal(cfg.initializer_range),
                         name="dense")(x)
        h = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="layer_norm")(
            get_activation(cfg.hidden_act)(h))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("vocab",)),
                          (cfg.vocab_size,), jnp.float32)
        logits = jnp.asarray(self.word_embeddings.attend(h), jnp.float32) + bias
        return constrain(logits, BATCH_LENGTH_VOCAB)


class AlbertForMaskedLM(nn.Module):
    """ProtAlbert with params `embeddings`, `encoder`, `mlm_head`."""

    config: AlbertConfig

    def setup(self):
        self.embeddings = AlbertEmbeddings(self.config)
        self.encoder = AlbertEncoder(self.config)
        self.mlm_head = AlbertMlmHead(self.config, word_embeddings=self.embeddings.word_embeddings)

    def encode(self, tokens, segment_ids=None, positions=None, deterministic=True,
               output_hidden_states=False):
        """tokens `[batch, length]` (0 = padding) -> last layer `[batch, length, hidden]`.

        Attention sees tokens != 0 within the same packing segment.
        """
        if self.config.attention_block_size > 0:
            mask = MaskSpec(key_valid=tokens > 0, query_segment_ids=segment_ids,
                            key_segment_ids=segment_ids)
        else:
            mask = make_attention_mask(None, tokens > 0, segment_ids, segment_ids)
        x = self.embeddings(tokens, positions, deterministic=deterministic)
        return self.encoder(x, mask, deterministic=deterministic,
                            output_hidden_states=output_hidden_states)

    def __call__(self, tokens, segment_ids=None, positions=None, deterministic=True):
        """MLM logits `[batch, length, vocab]` float32."""
        return self.mlm_head(self.encode(tokens, segment_ids, positions, deterministic))


PRESETS: dict[str, dict] = {
    "prot_albert_tiny": dict(embedding_size=16, hidden_size=32, num_layers=3, num_heads=4,
                             intermediate_size=64, max_position_embeddings=512, dtype="float32"),
    "prot_albert_small": dict(embedding_size=128, hidden_size=512, num_layers=6, num_heads=8,
                              intermediate_size=2048),
    # Rostlab/prot_albert (config.json, PROTTRANS_FACTS section 7).
    "prot_albert": dict(embedding_size=128, hidden_size=4096, num_layers=12, num_heads=64,
                        intermediate_size=16384, max_position_embeddings=40000),
}
