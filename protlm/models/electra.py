"""ProtElectra: an ELECTRA generator (masked LM) and discriminator (replaced-token detection) that
share their embeddings, as one Flax module (google-research/electra `run_pretraining.py`).

Both networks are BERT encoders (`protlm.models.bert`: post-norm blocks, absolute positions,
exact GELU, LayerNorm eps 1e-12). As in ELECTRA's `modeling.BertModel` with tied generator
embeddings, the word, position and token-type tables and the embedding LayerNorm live once, under
`embeddings` (ELECTRA's `electra/embeddings` scope, reused by the generator); each network has its
own `embeddings_project` (`<part>_projection`, only when `embedding_size` differs from its hidden
size: ELECTRA creates it in the network's own scope, `generator/` or `electra/`), its encoder and its
head. The generator's MLM head (dense hidden -> embedding_size, GELU, LayerNorm, decoder tied to the
shared word embeddings + bias) is transformers' `ElectraGeneratorPredictions` + `generator_lm_head`;
the discriminator's (dense hidden -> hidden, activation, dense -> 1 logit) is
`ElectraDiscriminatorPredictions`. The objective (masking, sampling, the two losses) is in
`protlm.models.electra_family`.

Params (unscanned; scanned: `layers` with a leading axis):
    embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding, layer_norm
    generator_projection/{kernel [embed_size, hidden], bias}        (embedding_size != hidden)
    generator_encoder/layers_{i}/...                                  (as BERT's encoder)
    generator_head/{transform, layer_norm, bias}                      (as BERT's mlm_head)
    discriminator_projection/..., discriminator_encoder/layers_{i}/...
    discriminator_head/{dense, prediction}/{kernel, bias}
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from protlm.layers.attention import make_attention_mask
from protlm.layers.axes import BATCH_LENGTH_EMBED, constrain
from protlm.layers.blocked_attention import MaskSpec
from protlm.layers.dense import DenseGeneral, normal
from protlm.layers.mlp import get_activation
from protlm.models.bert import BertConfig, BertEmbeddings, BertEncoder, MlmHead
from protlm.models.family import FeatureLengths, ModelConfig

PARTS = ("discriminator", "generator")
# ELECTRA's default generator size (configure_pretraining.generator_hidden_size): a quarter of the
# discriminator's hidden size, same depth. The paper's ProtElectra pair fits it: a 30 x 256
# generator beside a 30 x 1024 discriminator with shared 1024-wide embeddings has 65.2 M
# parameters, the ~261 MB of its released float32 file (PROTTRANS_FACTS section 1; verify).
GENERATOR_FRACTION = 0.25


def generator_sizes(hidden_size: int, num_layers: int, fraction: float = GENERATOR_FRACTION,
                    layers_fraction: float = 1.0) -> dict[str, int]:
    """Generator config fields from the discriminator's, by ELECTRA's `get_generator_config`:
    hidden = round(hidden * fraction), layers = round(layers * layers_fraction), intermediate
    = 4 x hidden, heads = max(1, hidden // 64)."""
    hidden = int(round(hidden_size * fraction))
    return {"generator_hidden_size": hidden,
            "generator_num_layers": int(round(num_layers * layers_fraction)),
            "generator_intermediate_size": 4 * hidden,
            "generator_num_heads": max(1, hidden // 64)}


@dataclasses.dataclass(frozen=True)
class ElectraConfig(ModelConfig):
    """The joint ELECTRA model (HF `ElectraConfig` names where they exist; one set per network).

    The common names `hidden_size`, `num_layers`, `num_heads` are those of `encoder_part`, the
    network `protlm.embed` runs (the discriminator by default). Feature lengths `{"inputs": n}`.
    """

    family_name: ClassVar[str] = "electra"

    vocab_size: int = 30                 # ProtBert's vocab.txt
    embedding_size: int = 1280           # width of the shared embedding tables
    discriminator_hidden_size: int = 1280
    discriminator_num_layers: int = 32
    discriminator_num_heads: int = 20
    discriminator_intermediate_size: int = 5120
    generator_hidden_size: int = 1280    # Rostlab's BFD generator is as large as its discriminator
    generator_num_layers: int = 32
    generator_num_heads: int = 20
    generator_intermediate_size: int = 5120
    hidden_act: str = "gelu"             # both encoders and the discriminator head (HF: hidden_act)
    max_position_embeddings: int = 40000
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.0            # hidden_dropout_prob (ProtElectra: 0.0)
    attention_dropout_rate: float = 0.0
    initializer_range: float = 0.02
    dtype: str = "bfloat16"
    scan_layers: bool = False
    remat_policy: str = "none"
    z_loss: float = 0.0                  # on the generator's softmax
    attention_block_size: int = 0        # > 0: blocked attention (see BertConfig)
    attention_key_block_size: int = 0
    # ---- objective (google-research/electra configure_pretraining defaults) ----
    generator_weight: float = 1.0        # gen_weight: the generator's MLM loss
    discriminator_weight: float = 50.0   # disc_weight: the replaced-token-detection loss
    mask_prob: float = 0.15              # share of the tokens selected (0.25 for ELECTRA-Large)
    mask_token_fraction: float = 0.85    # selected positions shown as [MASK]; the rest unchanged
    temperature: float = 1.0             # of the generator softmax the replacements are drawn from
    eval_seed: int = 0                   # key of the masking/sampling when no rng is given (eval)
    encoder_part: str = "discriminator"  # the network protlm.embed runs (and the common names)

    def __post_init__(self):
        if self.encoder_part not in PARTS:
            raise ValueError(f"encoder_part must be one of {PARTS}, got {self.encoder_part!r}")
        for name in ("mask_prob", "mask_token_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if min(self.generator_weight, self.discriminator_weight) < 0:
            raise ValueError("generator_weight and discriminator_weight must be >= 0")
        for part in PARTS:
            self.tower_config(part)   # validates sizes, activation, remat policy, dtype

    # ---- the two networks as BERT encoders ----
    def _sizes(self, part: str) -> tuple[int, int, int, int]:
        if part not in PARTS:
            raise ValueError(f"ELECTRA part must be one of {PARTS}, got {part!r}")
        return tuple(getattr(self, f"{part}_{name}") for name in
                     ("hidden_size", "num_layers", "num_heads", "intermediate_size"))

    def tower_config(self, part: str) -> BertConfig:
        """The BERT encoder of one network (`discriminator` or `generator`)."""
        hidden, layers, heads, intermediate = self._sizes(part)
        return BertConfig(
            vocab_size=self.vocab_size, hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=intermediate, hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
            dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
            initializer_range=self.initializer_range, dtype=self.dtype,
            scan_layers=self.scan_layers, remat_policy=self.remat_policy,
            attention_block_size=self.attention_block_size,
            attention_key_block_size=self.attention_key_block_size)

    def embedding_space_config(self) -> BertConfig:
        """The shared embeddings and the generator's MLM head work at `embedding_size`; the head's
        activation is GELU whatever `hidden_act` says (transformers' ElectraGeneratorPredictions)."""
        return dataclasses.replace(self.tower_config("discriminator"), hidden_size=self.embedding_size,
                                   num_heads=1, num_layers=0, intermediate_size=0, hidden_act="gelu")

    # ---- common names: the encoder part ----
    @property
    def hidden_size(self) -> int:
        return self._sizes(self.encoder_part)[0]

    @property
    def num_layers(self) -> int:
        return self._sizes(self.encoder_part)[1]

    @property
    def num_heads(self) -> int:
        return self._sizes(self.encoder_part)[2]

    @property
    def max_length(self) -> int:
        return self.max_position_embeddings

    @property
    def activation_dtype(self):
        return jnp.dtype(self.dtype)

    # ---- sizes ----
    def _embedding_params(self) -> int:
        e = self.embedding_size
        return (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * e + 2 * e

    def _tower_params(self, part: str) -> int:
        """Projection (if any) + encoder layers of one network."""
        h, n, _, f = self._sizes(part)
        projection = (self.embedding_size + 1) * h if self.embedding_size != h else 0
        layer = 4 * h * h + 2 * h * f + (4 * h + f + h) + 4 * h   # matmuls, biases, 2 LayerNorms
        return projection + n * layer

    def _head_params(self, part: str) -> int:
        h, e, v = self._sizes(part)[0], self.embedding_size, self.vocab_size
        if part == "generator":
            return h * e + e + 2 * e + v     # transform, LayerNorm, output bias (decoder tied)
        return h * h + h + h + 1             # dense, dense_prediction

    def part_params(self, part: str) -> int:
        """Parameters of one network with its own copy of the shared embeddings (its HF class)."""
        return self._embedding_params() + self._tower_params(part) + self._head_params(part)

    def num_params(self) -> int:
        """Parameters of the joint model protlm trains (shared embeddings counted once)."""
        return (self._embedding_params() + sum(self._tower_params(p) + self._head_params(p)
                                               for p in PARTS))

    def param_counts(self) -> dict[str, int]:
        """`ElectraForPreTraining` (discriminator) and `ElectraForMaskedLM` (generator), the
        `encoder_part` first; the joint total is `num_params()`."""
        classes = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
        order = sorted(PARTS, key=lambda p: p != self.encoder_part)
        return {classes[p]: self.part_params(p) for p in order}

    def tokens_per_example(self, lengths: FeatureLengths) -> int:
        return int(lengths["inputs"])

    def _matmul_params(self, part: str) -> int:
        """Matmul parameters one token passes through in one network (head and tied decoder
        included: the generator computes logits at every position)."""
        h, n, _, f = self._sizes(part)
        e = self.embedding_size
        projection = e * h if e != h else 0
        head = h * e + self.vocab_size * e if part == "generator" else h * h + h
        return projection + n * (4 * h * h + 2 * h * f) + head

    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs of one example of `lengths["inputs"]` tokens, both networks: per token
        6 x matmul params + 12 x layers x length x hidden (bidirectional attention) each. The
        sampling is not differentiated, but each network has its own backward pass."""
        length = int(lengths["inputs"])
        total = 0
        for part in PARTS:
            h, n, _, _ = self._sizes(part)
            total += 6 * self._matmul_params(part) + 12 * n * length * h
        return float(length * total)


def attention_mask(config: ElectraConfig, tokens, segment_ids):
    """Attention over tokens != 0 within a packing segment (dense mask or blocked `MaskSpec`)."""
    if config.attention_block_size > 0:
        return MaskSpec(key_valid=tokens > 0, query_segment_ids=segment_ids,
                        key_segment_ids=segment_ids)
    return make_attention_mask(None, tokens > 0, segment_ids, segment_ids)


class ReplacedTokenHead(nn.Module):
    """dense (hidden -> hidden) -> activation -> dense (hidden -> 1): one logit per token
    (`[batch, length]` float32, > 0 = replaced)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dense = dict(use_bias=True, dtype=cfg.activation_dtype,
                     kernel_init=normal(cfg.initializer_range))
        h = DenseGeneral(cfg.hidden_size, kernel_axes=("embed", "mlp"), bias_axes=("mlp",),
                         name="dense", **dense)(x)
        h = get_activation(cfg.hidden_act)(h)
        # The single output unit: a logical name without a rule, i.e. replicated.
        logit = DenseGeneral(1, kernel_axes=("mlp", "logit"), bias_axes=("logit",),
                             name="prediction", **dense)(h)
        return jnp.asarray(logit[..., 0], jnp.float32)


class ElectraNetwork(nn.Module):
    """Shared embeddings, generator (encoder + MLM head), discriminator (encoder + RTD head)."""

    config: ElectraConfig

    def setup(self):
        cfg = self.config
        self.embeddings = BertEmbeddings(cfg.embedding_space_config())
        gen, disc = cfg.tower_config("generator"), cfg.tower_config("discriminator")
        if cfg.embedding_size != gen.hidden_size:
            self.generator_projection = self._projection(gen.hidden_size)
        self.generator_encoder = BertEncoder(gen)
        self.generator_head = MlmHead(cfg.embedding_space_config(),
                                      word_embeddings=self.embeddings.word_embeddings)
        if cfg.embedding_size != disc.hidden_size:
            self.discriminator_projection = self._projection(disc.hidden_size)
        self.discriminator_encoder = BertEncoder(disc)
        self.discriminator_head = ReplacedTokenHead(disc)

    def _projection(self, hidden: int) -> DenseGeneral:
        """ELECTRA's `embeddings_project`: embedding_size -> hidden, with bias."""
        cfg = self.config
        return DenseGeneral(hidden, kernel_axes=("mlp", "embed"), use_bias=True, bias_axes=("embed",),
                            dtype=cfg.activation_dtype, kernel_init=normal(cfg.initializer_range))

    def run(self, part: str, tokens, segment_ids=None, positions=None, deterministic=True,
            output_hidden_states=False):
        """tokens `[batch, length]` (0 = padding) -> last layer `[batch, length, hidden]` of `part`
        (with `output_hidden_states`: `(last, hidden_states)`, the projected embeddings first)."""
        x = self.embeddings(tokens, positions, deterministic=deterministic)
        if self.config.embedding_size != self.config.tower_config(part).hidden_size:
            x = constrain(getattr(self, f"{part}_projection")(x), BATCH_LENGTH_EMBED)
        encoder = getattr(self, f"{part}_encoder")
        return encoder(x, attention_mask(self.config, tokens, segment_ids),
                       deterministic=deterministic, output_hidden_states=output_hidden_states)

    def encode(self, tokens, segment_ids=None, positions=None, deterministic=True,
               output_hidden_states=False):
        """The `encoder_part` network's last layer (what `protlm.embed` writes)."""
        return self.run(self.config.encoder_part, tokens, segment_ids, positions, deterministic,
                        output_hidden_states)

    def generator_logits(self, tokens, segment_ids=None, positions=None, deterministic=True):
        """MLM logits `[batch, length, vocab]` float32."""
        return self.generator_head(self.run("generator", tokens, segment_ids, positions,
                                            deterministic))

    def discriminator_logits(self, tokens, segment_ids=None, positions=None, deterministic=True):
        """Replaced-token logits `[batch, length]` float32."""
        return self.discriminator_head(self.run("discriminator", tokens, segment_ids, positions,
                                                deterministic))

    def __call__(self, tokens, segment_ids=None, positions=None, deterministic=True):
        """Both networks on the same tokens (initialises every param)."""
        return (self.generator_logits(tokens, segment_ids, positions, deterministic),
                self.discriminator_logits(tokens, segment_ids, positions, deterministic))


def _pair(hidden: int, layers: int, heads: int, intermediate: int, **generator) -> dict:
    disc = dict(discriminator_hidden_size=hidden, discriminator_num_layers=layers,
                discriminator_num_heads=heads, discriminator_intermediate_size=intermediate)
    return {**disc, **(generator or generator_sizes(hidden, layers))}


_BFD = dict(embedding_size=1280, max_position_embeddings=40000,
            **_pair(1280, 32, 20, 5120, **generator_sizes(1280, 32, fraction=1.0)))

PRESETS: dict[str, dict] = {
    # Tests: generator half as wide as the discriminator (exercises its projection); 2 heads each
    # side so that 2-way model parallelism divides them.
    "prot_electra_tiny": dict(embedding_size=32, max_position_embeddings=512, dtype="float32",
                              **_pair(32, 2, 4, 64, generator_hidden_size=16, generator_num_layers=2,
                                      generator_num_heads=2, generator_intermediate_size=64)),
    # ELECTRA-Small's shape (embedding 128, 12 x 256 discriminator, 12 x 64 generator).
    "prot_electra_small": dict(embedding_size=128, max_position_embeddings=2048,
                               **_pair(256, 12, 4, 1024)),
    # The paper's pair: ~420 M discriminator (30 x 1024, as ProtBert) + a quarter-width generator.
    "prot_electra": dict(embedding_size=1024, **_pair(1024, 30, 16, 4096)),
    # Rostlab's HF pair (prot_electra_{discriminator,generator}_bfd): ONE joint model whose two
    # 32 x 1280 networks share the embeddings; the two names differ only in `encoder_part`, the
    # network that protlm.embed runs and the summary lists first.
    "prot_electra_discriminator_bfd": dict(_BFD, encoder_part="discriminator"),
    "prot_electra_generator_bfd": dict(_BFD, encoder_part="generator"),
}
