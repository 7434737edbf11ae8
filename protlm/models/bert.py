"""ProtBert: BERT encoder with the MLM head (HF `BertForMaskedLM` layout, no pooler).

Post-norm blocks, scaled attention with biases, absolute learned positions, exact (erf) GELU,
LayerNorm eps 1e-12, MLM decoder tied to the word embeddings plus an output bias.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from protlm.layers.attention import MultiHeadAttention, make_attention_mask
from protlm.layers.axes import BATCH_LENGTH_EMBED, BATCH_LENGTH_VOCAB, constrain
from protlm.layers.blocked_attention import MaskSpec
from protlm.layers.cores import attention_fn
from protlm.layers.dense import DenseGeneral, normal
from protlm.layers.embeddings import Embed
from protlm.layers.mlp import MlpBlock, get_activation
from protlm.layers.norms import LayerNorm
from protlm.layers.repeat import check_remat_policy, repeat_layer
from protlm.models.family import FeatureLengths, ModelConfig


@dataclasses.dataclass(frozen=True)
class BertConfig(ModelConfig):
    """BERT hyperparameters (HF `BertConfig` names where they exist); feature lengths
    `{"inputs": length}`."""

    family_name: ClassVar[str] = "bert"

    vocab_size: int = 30
    hidden_size: int = 1024
    num_layers: int = 30                 # num_hidden_layers
    num_heads: int = 16                  # num_attention_heads
    intermediate_size: int = 4096
    hidden_act: str = "gelu"             # exact erf GELU, as HF "gelu"
    max_position_embeddings: int = 40000
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.0            # hidden_dropout_prob (ProtBert: 0.0)
    attention_dropout_rate: float = 0.0  # attention_probs_dropout_prob
    initializer_range: float = 0.02
    dtype: str = "bfloat16"
    scan_layers: bool = False
    remat_policy: str = "none"
    z_loss: float = 0.0
    # > 0: blocked attention with query blocks of this size (see T5Config.attention_block_size).
    attention_block_size: int = 0
    attention_key_block_size: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads "
                             f"{self.num_heads}")
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

    def _layer_matmul_params(self) -> int:
        d, f = self.hidden_size, self.intermediate_size
        return 4 * d * d + 2 * d * f

    def num_params(self) -> int:
        """Parameters of `BertForMaskedLM` (exact; equals HF's count without a pooler)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        embeddings = (v + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d
        layer = self._layer_matmul_params() + 4 * d + f + d + 4 * d  # + biases + 2 LayerNorms
        head = d * d + d + 2 * d + v
        return embeddings + self.num_layers * layer + head

    def param_counts(self) -> dict[str, int]:
        pooler = self.hidden_size * self.hidden_size + self.hidden_size
        head = self.hidden_size * self.hidden_size + 3 * self.hidden_size + self.vocab_size
        return {"BertForMaskedLM": self.num_params(),
                "BertModel": self.num_params() - head + pooler}

    def tokens_per_example(self, lengths: FeatureLengths) -> int:
        return int(lengths["inputs"])

    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs of one example of `lengths["inputs"]` tokens: per token 6 x matmul params
        (layers, transform, tied decoder) + 12 x layers x length x hidden (bidirectional attention)."""
        length, d = int(lengths["inputs"]), self.hidden_size
        matmul = self.num_layers * self._layer_matmul_params() + d * d + self.vocab_size * d
        return float(length * (6 * matmul + 12 * self.num_layers * length * d))


def _zero_row_0(init):
    """HF zeroes the padding row of the word embeddings at init."""
    def f(key, shape, dtype=jnp.float32):
        return init(key, shape, dtype).at[0].set(0)
    return f


class BertEmbeddings(nn.Module):
    """word + position + token type (all 0) -> LayerNorm -> dropout."""

    config: BertConfig

    def setup(self):
        cfg = self.config
        emb = functools.partial(Embed, features=cfg.hidden_size, dtype=cfg.activation_dtype,
                                embedding_init=normal(cfg.initializer_range))
        self.word_embeddings = emb(cfg.vocab_size, axes=("vocab", "embed"),
                                   embedding_init=_zero_row_0(normal(cfg.initializer_range)))
        self.position_embeddings = emb(cfg.max_position_embeddings, axes=("abspos", "embed"))
        self.token_type_embeddings = emb(cfg.type_vocab_size, axes=("token_type", "embed"))
        self.layer_norm = LayerNorm(cfg.layer_norm_eps, dtype=cfg.activation_dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(self, tokens, positions=None, deterministic=True):
        """tokens `[batch, length]` -> `[batch, length, hidden]`."""
        if positions is None:
            if tokens.shape[-1] > self.config.max_position_embeddings:
                raise ValueError(f"sequence length {tokens.shape[-1]} exceeds "
                                 f"max_position_embeddings {self.config.max_position_embeddings}")
            positions = jnp.arange(tokens.shape[-1], dtype=jnp.int32)[None, :]
        x = (self.word_embeddings(tokens) + self.position_embeddings(positions)
             + self.token_type_embeddings(jnp.zeros_like(tokens)))
        x = self.layer_norm(x)
        return constrain(self.dropout(x, deterministic=deterministic), BATCH_LENGTH_EMBED)


class BertLayer(nn.Module):
    """Post-norm block: LN(x + attention(x)), LN(x + mlp(x))."""

    config: BertConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, mask):
        cfg, det = self.config, self.deterministic
        dt, init = cfg.activation_dtype, normal(cfg.initializer_range)
        dropout = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=det)
        h = MultiHeadAttention(num_heads=cfg.num_heads, head_dim=cfg.head_dim, use_bias=True,
                               scale_logits=True, dropout_rate=cfg.attention_dropout_rate,
                               dtype=dt, q_init=init, kv_init=init, out_init=init,
                               attention_fn=attention_fn(cfg.attention_block_size,
                                                         cfg.attention_key_block_size),
                               name="attention")(x, x, None, mask, deterministic=det)
        x = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="attention_layer_norm")(x + dropout(h))
        x = constrain(x, BATCH_LENGTH_EMBED)
        h = MlpBlock(intermediate_dim=cfg.intermediate_size, activations=(cfg.hidden_act,),
                     use_bias=True, dtype=dt, wi_init=init, wo_init=init, name="mlp")(
                         x, deterministic=det)
        x = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="mlp_layer_norm")(x + dropout(h))
        return constrain(x, BATCH_LENGTH_EMBED), None


class BertEncoder(nn.Module):
    """The stack of `BertLayer`s (`layers_{i}` or scanned `layers`)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x, mask, deterministic=True, output_hidden_states=False):
        """x `[batch, length, hidden]`, mask bool `[batch, 1, length, length]`.

        Returns the last layer output, or `(last, hidden_states)` with the embeddings output and
        every layer's output (layers + 1 arrays, as HF) when `output_hidden_states`.
        """
        cfg = self.config
        stack = repeat_layer(BertLayer, cfg.num_layers, scan=cfg.scan_layers,
                             remat_policy=cfg.remat_policy, num_args=1)(
                                 config=cfg, deterministic=deterministic)
        if not output_hidden_states:
            return stack(x, mask)
        if cfg.scan_layers:
            raise ValueError("output_hidden_states needs scan_layers=False; convert params with "
                             "protlm.models.scan_utils.unstack_layers")
        hidden = []
        x = stack(x, mask, hidden_states=hidden)
        return x, tuple(hidden) + (x,)


class MlmHead(nn.Module):
    """transform (dense + act) -> LayerNorm -> tied decoder + `bias [vocab]`."""

    config: BertConfig
    word_embeddings: nn.Module

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dt = cfg.activation_dtype
        h = DenseGeneral(cfg.hidden_size, kernel_axes=("embed", "mlp"), use_bias=True,
                         bias_axes=("mlp",), dtype=dt, kernel_init=normal(cfg.initializer_range),
                         name="transform")(x)
        h = LayerNorm(cfg.layer_norm_eps, dtype=dt, name="layer_norm")(
            get_activation(cfg.hidden_act)(h))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("vocab",)),
                          (cfg.vocab_size,), jnp.float32)
        logits = jnp.asarray(self.word_embeddings.attend(h), jnp.float32) + bias
        return constrain(logits, BATCH_LENGTH_VOCAB)


class BertForMaskedLM(nn.Module):
    """ProtBert with params `embeddings`, `encoder`, `mlm_head`."""

    config: BertConfig

    def setup(self):
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = BertEncoder(self.config)
        self.mlm_head = MlmHead(self.config, word_embeddings=self.embeddings.word_embeddings)

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
    "prot_bert_tiny": dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                           max_position_embeddings=512, dtype="float32"),
    "prot_bert_small": dict(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048),
    # Rostlab/prot_bert and prot_bert_bfd.
    "prot_bert": dict(hidden_size=1024, num_layers=30, num_heads=16, intermediate_size=4096,
                      max_position_embeddings=40000),
}
