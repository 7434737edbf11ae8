"""ProtAlbert: ALBERT encoder with the MLM head (HF `AlbertForMaskedLM` layout, no pooler).

ALBERT (Lan et al. 2020; google-research/albert) is BERT with two parameter savings:

* factorised embeddings: token, position and token-type tables of width `embedding_size` (128),
  LayerNorm there, then one dense projection `embedding_hidden_mapping_in` to `hidden_size` (4096);
* cross-layer sharing: ONE transformer layer (`num_hidden_groups` = 1) applied `num_layers` (12)
  times. The layer is BERT's post-norm block (`protlm.models.bert.BertLayer`: attention with
  biases, LN(x + attn), gelu MLP, LN(x + mlp)); with `scan_layers` the repeats run as one
  `nn.scan` with the params broadcast, so the param tree is the same either way.

The MLM head maps hidden -> `embedding_size` (dense + activation + LayerNorm) and decodes with the
128-d word embeddings (tied) plus an output bias. The embedding block and the head are BERT's at
width `embedding_size` (`AlbertConfig.embedding_block`), the layer is BERT's at `hidden_size`, and
`AlbertForMaskedLM` is `BertForMaskedLM` with ALBERT's encoder.

Rostlab's config says `hidden_act: gelu`, which transformers maps to the exact (erf) GELU, so
protlm does too (google-research/albert's TF `gelu` was the tanh approximation: set
`hidden_act="gelu_new"` for that). HF's `AlbertLayer` applies no
dropout to the FFN output where google-research/albert does; protlm follows the latter (ProtAlbert's
dropouts are 0, where both agree).

Pretraining is MLM only: ALBERT's sentence-order prediction needs two segments of one document,
and ProtTrans' documents are one protein each, so the order task is degenerate (no SOP head; the
`sop_classifier` of Rostlab's `AlbertForPreTraining` file is dropped on import).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn

from protlm.layers.axes import BATCH_LENGTH_EMBED, constrain
from protlm.layers.dense import DenseGeneral, normal
from protlm.layers.repeat import repeat_layer
from protlm.models import bert
from protlm.models.family import FeatureLengths


@dataclasses.dataclass(frozen=True)
class AlbertConfig(bert.BertConfig):
    """ALBERT hyperparameters (HF `AlbertConfig` names where they exist); feature lengths
    `{"inputs": length}`. BERT's fields (and their meaning) plus the factorised embedding width
    and the number of distinct (shared) layers; defaults are Rostlab/prot_albert's."""

    family_name: ClassVar[str] = "albert"

    vocab_size: int = 34
    hidden_size: int = 4096
    num_layers: int = 12                 # num_hidden_layers: applications of the shared layer(s)
    num_heads: int = 64                  # num_attention_heads
    intermediate_size: int = 16384
    hidden_act: str = "gelu"             # exact erf GELU, as HF "gelu" (Rostlab's config)
    embedding_size: int = 128            # width of the factorised embeddings
    num_hidden_groups: int = 1           # distinct layers; group g serves num_layers/groups repeats
    scan_layers: bool = False            # nn.scan over depth (same params as unrolled)

    def __post_init__(self):
        super().__post_init__()
        if self.num_hidden_groups < 1 or self.num_layers % self.num_hidden_groups:
            raise ValueError(f"num_layers {self.num_layers} must be a multiple of "
                             f"num_hidden_groups {self.num_hidden_groups}")

    @property
    def repeats_per_group(self) -> int:
        return self.num_layers // self.num_hidden_groups

    @property
    def embedding_block(self) -> bert.BertConfig:
        """BERT at width `embedding_size`: the config of ALBERT's embedding block and MLM head
        (`BertEmbeddings` and `MlmHead` read only the fields set here)."""
        return bert.BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.embedding_size, num_layers=0, num_heads=1,
            intermediate_size=self.embedding_size, hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
            dropout_rate=self.dropout_rate, initializer_range=self.initializer_range,
            dtype=self.dtype)

    def _head_params(self) -> int:
        """MLM head: dense hidden -> embedding_size, LayerNorm, output bias (decoder tied)."""
        e = self.embedding_size
        return self.hidden_size * e + e + 2 * e + self.vocab_size

    def num_params(self) -> int:
        """Parameters of `AlbertForMaskedLM` (exact; equals HF's count, no pooler)."""
        d, f, e = self.hidden_size, self.intermediate_size, self.embedding_size
        rows = self.vocab_size + self.max_position_embeddings + self.type_vocab_size
        embeddings = rows * e + 2 * e
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

    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs of one example of `lengths["inputs"]` tokens: per token 6 x the matmul
        params *applied* (the shared layer counts `num_layers` times, plus the embedding projection,
        the head's dense and the tied decoder) + 12 x layers x length x hidden (attention)."""
        length, d, e = int(lengths["inputs"]), self.hidden_size, self.embedding_size
        matmul = (self.num_layers * self._layer_matmul_params() + e * d + d * e
                  + self.vocab_size * e)
        return float(length * (6 * matmul + 12 * self.num_layers * length * d))


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
            stack = repeat_layer(bert.BertLayer, cfg.repeats_per_group,
                                 scan=cfg.scan_layers and not output_hidden_states,
                                 remat_policy=cfg.remat_policy, num_args=1, shared=True,
                                 name=f"layer_groups_{g}")(config=cfg, deterministic=deterministic)
            x = stack(x, mask, hidden_states=hidden)
        if not output_hidden_states:
            return x
        return x, tuple(hidden) + (x,)


class AlbertForMaskedLM(bert.BertForMaskedLM):
    """ProtAlbert with params `embeddings` (BERT's block at `embedding_size`), `encoder`
    (projection + shared layers), `mlm_head` (BERT's head at `embedding_size`: dense `transform`
    hidden -> embedding_size, LayerNorm, tied decoder + bias). `encode` / `__call__` are BERT's."""

    config: AlbertConfig

    def setup(self):
        block = self.config.embedding_block
        self.embeddings = bert.BertEmbeddings(block)
        self.encoder = AlbertEncoder(self.config)
        self.mlm_head = bert.MlmHead(block, word_embeddings=self.embeddings.word_embeddings)


PRESETS: dict[str, dict] = {
    "prot_albert_tiny": dict(embedding_size=16, hidden_size=32, num_layers=3, num_heads=4,
                             intermediate_size=64, max_position_embeddings=512, dtype="float32"),
    "prot_albert_small": dict(embedding_size=128, hidden_size=512, num_layers=6, num_heads=8,
                              intermediate_size=2048),
    # Rostlab/prot_albert (config.json, PROTTRANS_FACTS section 7).
    "prot_albert": dict(embedding_size=128, hidden_size=4096, num_layers=12, num_heads=64,
                        intermediate_size=16384, max_position_embeddings=40000),
}
