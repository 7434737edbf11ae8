"""ProtT5: T5 v1.0 encoder-decoder (and encoder-only) in Flax, t5x parameter names.

Layout as HF `T5ForConditionalGeneration` with `feed_forward_proj="relu"` and tied embeddings:
pre-norm RMSNorm blocks, no biases, unscaled attention with a relative position bias computed once
per stack, logits = decoder output * emb_dim**-0.5 @ shared embedding^T.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from protlm.layers.attention import MultiHeadAttention, make_attention_mask
from protlm.layers.axes import BATCH_LENGTH_EMBED, BATCH_LENGTH_VOCAB, constrain, constrain_bias
from protlm.layers.blocked_attention import MaskSpec, relative_bias_from_params
from protlm.layers.cores import attention_fn
from protlm.layers.dense import DenseGeneral, normal
from protlm.layers.embeddings import Embed
from protlm.layers.mlp import MlpBlock, get_activation
from protlm.layers.norms import RMSNorm
from protlm.layers.relative_position import RelativePositionBiases
from protlm.layers.repeat import check_remat_policy, repeat_layer
from protlm.models.family import FeatureLengths, ModelConfig


@dataclasses.dataclass(frozen=True)
class T5Config(ModelConfig):
    """T5 hyperparameters (names follow t5x; HF equivalents in comments).

    Common names (`ModelConfig`): `hidden_size` = `emb_dim`, `num_layers` = `num_encoder_layers`
    (the stack `protlm.embed` reads); feature lengths `{"inputs": encoder, "targets": decoder}`.
    """

    family_name: ClassVar[str] = "t5"

    vocab_size: int = 128            # vocab_size (ProtT5: 3 specials + 25 residues + 100 sentinels)
    emb_dim: int = 1024              # d_model
    num_heads: int = 32              # num_heads
    head_dim: int = 128              # d_kv
    mlp_dim: int = 16384             # d_ff
    mlp_activations: tuple[str, ...] = ("relu",)   # ("gelu_new", "linear") = gated-gelu (v1.1)
    num_encoder_layers: int = 24
    num_decoder_layers: int = 24
    dropout_rate: float = 0.1
    dtype: str = "bfloat16"          # activations; params, softmax and norms stay float32
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    logits_via_embedding: bool = True   # T5 v1.0 ties the output projection to the embedding
    layer_norm_eps: float = 1e-6
    scan_layers: bool = False
    remat_policy: str = "none"      # see protlm.layers.repeat.REMAT_POLICIES
    z_loss: float = 1e-4             # t5x z-loss on log(Z) of the output softmax
    # Training-loss weight of the decoder targets the encoder saw unmasked (the copied 85 % of
    # span denoising); the masked residues weigh 1. 1.0 = ProtT5's objective. Lower values put
    # the gradient on the masked residues (gin/quickstart.gin: a model too small to learn the
    # copy alignment in minutes). Evaluation always weighs every position 1.
    unmasked_loss_weight: float = 1.0
    # > 0: blocked attention (protlm.layers.blocked_attention) with query blocks of this size and
    # key blocks of `attention_key_block_size` (0 = all keys at once); the [L, L] bias and mask
    # are never materialised, so memory grows linearly with length (35,000-residue proteins).
    attention_block_size: int = 0
    attention_key_block_size: int = 0

    def __post_init__(self):
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        for act in self.mlp_activations:
            get_activation(act)
        check_remat_policy(self.remat_policy)
        jnp.dtype(self.dtype)
        if not 0.0 <= self.unmasked_loss_weight <= 1.0:
            raise ValueError(f"T5Config.unmasked_loss_weight must be in [0, 1], "
                             f"got {self.unmasked_loss_weight}")

    @property
    def activation_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def hidden_size(self) -> int:
        return self.emb_dim

    @property
    def num_layers(self) -> int:
        return self.num_encoder_layers

    # ---- parameter counts (exact; tests compare them with jax.eval_shape and transformers) ----
    def _attention_params(self) -> int:
        return 4 * self.emb_dim * self.num_heads * self.head_dim

    def _mlp_params(self) -> int:
        return (len(self.mlp_activations) + 1) * self.emb_dim * self.mlp_dim

    def _relpos_params(self) -> int:
        return self.num_heads * self.relative_attention_num_buckets

    def num_encoder_params(self) -> int:
        """Parameters of `T5EncoderOnly` (shared embedding + encoder)."""
        d = self.emb_dim
        layer = self._attention_params() + self._mlp_params() + 2 * d
        return self.vocab_size * d + self.num_encoder_layers * layer + self._relpos_params() + d

    def num_params(self) -> int:
        """Parameters of the encoder-decoder `Transformer`."""
        d = self.emb_dim
        layer = 2 * self._attention_params() + self._mlp_params() + 3 * d
        decoder = self.num_decoder_layers * layer + self._relpos_params() + d
        if not self.logits_via_embedding:
            decoder += d * self.vocab_size
        return self.num_encoder_params() + decoder

    def param_counts(self) -> dict[str, int]:
        return {"T5ForConditionalGeneration": self.num_params(),
                "T5EncoderModel": self.num_encoder_params()}

    @staticmethod
    def _lengths(lengths: FeatureLengths) -> tuple[int, int]:
        enc = int(lengths["inputs"])
        return enc, int(lengths.get("targets", enc))

    def tokens_per_example(self, lengths: FeatureLengths) -> int:
        """Encoder plus decoder tokens."""
        return sum(self._lengths(lengths))

    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs (forward + backward = 3 x forward) of one (inputs, targets) example.

        6 x matmul params per token plus attention scores and values: bidirectional encoder
        self-attention 12 x layers x S x heads x head_dim per encoder token, causal decoder
        self-attention half of that over T, cross-attention 12 x layers x S x heads x head_dim per
        decoder token. Embedding lookups are not matmuls; the tied logits matmul is.
        """
        enc_len, dec_len = self._lengths(lengths)
        d, hd = self.emb_dim, self.num_heads * self.head_dim
        enc_matmul = self.num_encoder_layers * (self._attention_params() + self._mlp_params())
        cross_kv = self.num_decoder_layers * 2 * d * hd          # runs on encoder tokens
        dec_matmul = self.num_decoder_layers * (self._attention_params() + 2 * d * hd
                                                + self._mlp_params()) + self.vocab_size * d
        enc = enc_len * (6 * (enc_matmul + cross_kv) + 12 * self.num_encoder_layers * enc_len * hd)
        dec = dec_len * (6 * dec_matmul + 6 * self.num_decoder_layers * dec_len * hd
                         + 12 * self.num_decoder_layers * enc_len * hd)
        return float(enc + dec)


def _attention(cfg: T5Config, name: str, decode: bool = False) -> MultiHeadAttention:
    d, hd = cfg.emb_dim, cfg.num_heads * cfg.head_dim
    return MultiHeadAttention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, dropout_rate=cfg.dropout_rate,
        dtype=cfg.activation_dtype, q_init=normal((d * cfg.head_dim) ** -0.5),
        kv_init=normal(d ** -0.5), out_init=normal(hd ** -0.5), decode=decode,
        attention_fn=attention_fn(cfg.attention_block_size, cfg.attention_key_block_size),
        name=name)


def _mlp(cfg: T5Config) -> MlpBlock:
    return MlpBlock(intermediate_dim=cfg.mlp_dim, activations=cfg.mlp_activations,
                    intermediate_dropout_rate=cfg.dropout_rate, dtype=cfg.activation_dtype,
                    wi_init=normal(cfg.emb_dim ** -0.5), wo_init=normal(cfg.mlp_dim ** -0.5),
                    name="mlp")


def _norm(cfg: T5Config, name: str) -> RMSNorm:
    return RMSNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.activation_dtype, name=name)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + MLP block."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, bias, mask):
        """x `[batch, length, embed]`, bias `[b|1, heads, length, length]`, mask bool."""
        cfg, det = self.config, self.deterministic
        dropout = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=det)
        h = _norm(cfg, "pre_attention_layer_norm")(x)
        h = _attention(cfg, "attention")(h, h, bias, mask, deterministic=det)
        x = constrain(x + dropout(h), BATCH_LENGTH_EMBED)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, deterministic=det)
        x = constrain(x + dropout(h), BATCH_LENGTH_EMBED)
        return x, None


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention + cross-attention + MLP block.

    With `decode`, self-attention keeps a key/value cache (see `MultiHeadAttention`).
    """

    config: T5Config
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(self, x, encoded, self_bias, self_mask, cross_mask, decode_index=None):
        """x `[batch, dec_len, embed]`, encoded `[batch, enc_len, embed]`."""
        cfg, det = self.config, self.deterministic
        dropout = functools.partial(nn.Dropout(cfg.dropout_rate), deterministic=det)
        h = _norm(cfg, "pre_self_attention_layer_norm")(x)
        h = _attention(cfg, "self_attention", decode=self.decode)(
            h, h, self_bias, self_mask, deterministic=det, decode_index=decode_index)
        x = constrain(x + dropout(h), BATCH_LENGTH_EMBED)
        h = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        h = _attention(cfg, "encoder_decoder_attention")(h, encoded, None, cross_mask,
                                                         deterministic=det)
        x = constrain(x + dropout(h), BATCH_LENGTH_EMBED)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = _mlp(cfg)(h, deterministic=det)
        x = constrain(x + dropout(h), BATCH_LENGTH_EMBED)
        return x, None


def _positions(tokens: jax.Array, positions: jax.Array | None) -> jax.Array:
    """Per-token positions `[b|1, length]`: packed positions when given, else 0..length-1."""
    if positions is not None:
        return positions
    return jnp.arange(tokens.shape[-1], dtype=jnp.int32)[None, :]


def _bias(cfg: T5Config, query_positions, key_positions, bidirectional: bool):
    """Relative bias `[b|1, heads, q, k]`, or a per-block `RelativeBias` spec when blocked."""
    relpos = _relpos(cfg)
    if cfg.attention_block_size > 0:
        table = relpos(query_positions, key_positions, bidirectional, materialize=False)
        return relative_bias_from_params(
            table, query_positions, key_positions, bidirectional=bidirectional,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance)
    # Offsets inside a packed segment equal index differences and cross-segment pairs are
    # masked, so 0..L-1 gives the packed bias as one [1, heads, q, k] (a per-row bias cost
    # 8 GiB per TPU v3 core for ProtT5-XL at 32 x 512: heads-minor gather layout).
    q, k = (jnp.arange(p.shape[-1], dtype=jnp.int32)[None] for p in (query_positions,
                                                                      key_positions))
    return constrain_bias(relpos(q, k, bidirectional))


def _mask(cfg: T5Config, key_valid, query_segment_ids, key_segment_ids, causal: bool = False):
    """Bool mask `[b, 1, q, k]`, or a per-block `MaskSpec` when blocked."""
    if cfg.attention_block_size > 0:
        return MaskSpec(key_valid=key_valid, query_segment_ids=query_segment_ids,
                        key_segment_ids=key_segment_ids, causal=causal)
    return make_attention_mask(None, key_valid, query_segment_ids, key_segment_ids, causal=causal)


def _relpos(cfg: T5Config) -> RelativePositionBiases:
    return RelativePositionBiases(
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance, num_heads=cfg.num_heads,
        embedding_init=normal(cfg.emb_dim ** -0.5), name="relpos_bias")


class Encoder(nn.Module):
    """Embedding (shared) -> dropout -> layers -> `encoder_norm` -> dropout."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens, segment_ids=None, positions=None, deterministic=True,
                 output_hidden_states=False):
        """tokens `[batch, length]` int (0 = padding) -> `[batch, length, embed]`.

        With `output_hidden_states`, returns `(encoded, hidden_states)` where hidden_states are
        the inputs of every layer followed by the final normed output (as HF: layers + 1 arrays).
        """
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        x = dropout(self.shared_embedding(tokens), deterministic=deterministic)
        x = constrain(x, BATCH_LENGTH_EMBED)
        pos = _positions(tokens, positions)
        bias = _bias(cfg, pos, pos, bidirectional=True)  # [b|1, heads, len, len]
        mask = _mask(cfg, tokens > 0, segment_ids, segment_ids)
        stack = repeat_layer(EncoderLayer, cfg.num_encoder_layers, scan=cfg.scan_layers,
                             remat_policy=cfg.remat_policy, num_args=2)(
                                 config=cfg, deterministic=deterministic)
        hidden = None
        if output_hidden_states:
            if cfg.scan_layers:
                raise ValueError("output_hidden_states needs scan_layers=False; convert params "
                                 "with protlm.models.scan_utils.unstack_layers")
            hidden = []
            x = stack(x, bias, mask, hidden_states=hidden)
        else:
            x = stack(x, bias, mask)
        x = _norm(cfg, "encoder_norm")(x)
        x = dropout(x, deterministic=deterministic)
        if output_hidden_states:
            return x, tuple(hidden) + (x,)
        return x


class Decoder(nn.Module):
    """Embedding (shared) -> layers -> `decoder_norm` -> logits (tied or `logits_dense`)."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoded, encoder_input_tokens, decoder_input_tokens,
                 encoder_segment_ids=None, decoder_segment_ids=None, decoder_positions=None,
                 deterministic=True, decode=False, decode_index=None, max_decode_length=None):
        """Returns float32 logits `[batch, dec_len, vocab]`.

        Args:
          encoded: encoder output `[batch, enc_len, embed]`.
          encoder_input_tokens: `[batch, enc_len]` (padding mask of the cross-attention).
          decoder_input_tokens: `[batch, dec_len]`, targets shifted right (first id 0).
          decode: incremental decoding with a self-attention cache (collection `cache`, mutable).
            With `decode_index=None` the call only creates the cache for `dec_len` positions;
            then `decoder_input_tokens` is `[batch, 1]`, the token at `decode_index`, and
            `max_decode_length` the cache length.
        """
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        x = dropout(self.shared_embedding(decoder_input_tokens), deterministic=deterministic)
        x = constrain(x, BATCH_LENGTH_EMBED)
        if decode and decode_index is not None:
            if decoder_segment_ids is not None or max_decode_length is None:
                raise ValueError("decode steps need max_decode_length and no packing")
            pos = jnp.arange(max_decode_length, dtype=jnp.int32)[None, :]
            step_pos = jnp.reshape(decode_index, (1, 1)).astype(jnp.int32)
            self_bias = _relpos(cfg)(step_pos, pos, bidirectional=False)  # [1, h, 1, max_len]
            self_mask = (pos <= decode_index)[:, None, None, :]      # [1, 1, 1, max_len]
        else:
            pos = _positions(decoder_input_tokens, decoder_positions)
            self_bias = _bias(cfg, pos, pos, bidirectional=False)
            # Causality hides later positions; decoder padding only ever sees other padding.
            dec_valid = jnp.ones(decoder_input_tokens.shape, bool)
            self_mask = _mask(cfg, dec_valid, decoder_segment_ids, decoder_segment_ids,
                              causal=True)
        cross_mask = _mask(cfg, encoder_input_tokens > 0, decoder_segment_ids,
                           encoder_segment_ids)
        stack = repeat_layer(DecoderLayer, cfg.num_decoder_layers, scan=cfg.scan_layers,
                             remat_policy=cfg.remat_policy, num_args=5)(
                                 config=cfg, deterministic=deterministic, decode=decode)
        x = stack(x, encoded, self_bias, self_mask, cross_mask, decode_index)
        x = _norm(cfg, "decoder_norm")(x)
        x = dropout(x, deterministic=deterministic)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(x * cfg.emb_dim ** -0.5)
        else:
            logits = DenseGeneral(cfg.vocab_size, kernel_axes=("embed", "vocab"),
                                  dtype=cfg.activation_dtype,
                                  kernel_init=normal(cfg.emb_dim ** -0.5),
                                  name="logits_dense")(x)
        return constrain(jnp.asarray(logits, jnp.float32), BATCH_LENGTH_VOCAB)


def _token_embedder(cfg: T5Config) -> Embed:
    return Embed(num_embeddings=cfg.vocab_size, features=cfg.emb_dim, dtype=cfg.activation_dtype,
                 embedding_init=normal(1.0))


class Transformer(nn.Module):
    """Encoder-decoder ProtT5 with params `token_embedder`, `encoder`, `decoder`."""

    config: T5Config

    def setup(self):
        self.token_embedder = _token_embedder(self.config)
        self.encoder = Encoder(self.config, shared_embedding=self.token_embedder)
        self.decoder = Decoder(self.config, shared_embedding=self.token_embedder)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
               deterministic=True, output_hidden_states=False):
        """`[batch, enc_len]` -> `[batch, enc_len, embed]` (see `Encoder`)."""
        return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                            deterministic=deterministic, output_hidden_states=output_hidden_states)

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
               encoder_segment_ids=None, decoder_segment_ids=None, decoder_positions=None,
               deterministic=True, decode=False, decode_index=None, max_decode_length=None):
        """Logits `[batch, dec_len, vocab]` given the encoder output (see `Decoder`)."""
        return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                            encoder_segment_ids, decoder_segment_ids, decoder_positions,
                            deterministic=deterministic, decode=decode,
                            decode_index=decode_index, max_decode_length=max_decode_length)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids=None,
                 decoder_segment_ids=None, encoder_positions=None, decoder_positions=None,
                 deterministic=True):
        """Teacher-forced logits `[batch, dec_len, vocab]` float32."""
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              deterministic=deterministic)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           encoder_segment_ids, decoder_segment_ids, decoder_positions,
                           deterministic=deterministic)


class T5EncoderOnly(nn.Module):
    """Encoder alone (ProtT5-XL-half-enc style); params are the `token_embedder` + `encoder`
    subset of `Transformer`'s, so an encoder-decoder checkpoint's params load directly."""

    config: T5Config

    def setup(self):
        self.token_embedder = _token_embedder(self.config)
        self.encoder = Encoder(self.config, shared_embedding=self.token_embedder)

    def __call__(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                 deterministic=True, output_hidden_states=False):
        """`[batch, enc_len]` -> `[batch, enc_len, embed]` (see `Encoder`)."""
        return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                            deterministic=deterministic, output_hidden_states=output_hidden_states)


PRESETS: dict[str, dict] = {
    # Tests: seconds to compile on CPU.
    "prot_t5_tiny": dict(emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64, num_encoder_layers=2,
                         num_decoder_layers=2, dropout_rate=0.0, dtype="float32"),
    # T5 v1.0 small / base shapes with the protein vocabulary.
    "prot_t5_small": dict(emb_dim=512, num_heads=8, head_dim=64, mlp_dim=2048,
                          num_encoder_layers=6, num_decoder_layers=6),
    "prot_t5_base": dict(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=3072,
                         num_encoder_layers=12, num_decoder_layers=12),
    # ProtT5-XL-UniRef50 / BFD (t5x t5_1_0/3B.gin), ProtT5-XXL (t5_1_0/11B.gin).
    "prot_t5_xl": dict(emb_dim=1024, num_heads=32, head_dim=128, mlp_dim=16384,
                       num_encoder_layers=24, num_decoder_layers=24),
    "prot_t5_xxl": dict(emb_dim=1024, num_heads=128, head_dim=128, mlp_dim=65536,
                        num_encoder_layers=24, num_decoder_layers=24),
}
