"""Model classes (t5x `BaseModel` style): the network plus its loss, eval, score and predict.

`params` below is always the content of the flax `params` collection (boxed or unboxed).
Batches use the seqio feature-converter keys of docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import abc
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from protlm.data import tokens as tok
from protlm.models import bert, losses, t5

Batch = Mapping[str, Any]


def _zeros(batch: Batch, key: str) -> jax.Array:
    """An int32 zero array shaped like batch[key] (arrays or jax.ShapeDtypeStruct)."""
    if key not in batch:
        raise KeyError(f"batch has no {key!r}; keys: {sorted(batch)}")
    return jnp.zeros(batch[key].shape, jnp.int32)


def _rngs(dropout_rng):
    return {} if dropout_rng is None else {"dropout": dropout_rng}


class BaseModel(abc.ABC):
    """Shared API. Subclasses set `self.module` and implement the per-family parts."""

    config: Any
    module: nn.Module
    target_key: str
    weights_key: str

    @abc.abstractmethod
    def init(self, rng: jax.Array, batch: Batch) -> dict:
        """Variables `{'params': ...}` (leaves `nn.LogicallyPartitioned`); batch gives shapes."""

    @abc.abstractmethod
    def logits(self, params, batch: Batch, dropout_rng=None) -> jax.Array:
        """Float32 logits `[batch, length, vocab]` aligned with `batch[self.target_key]`."""

    def _weights(self, batch: Batch) -> jax.Array:
        if self.weights_key in batch:
            return jnp.asarray(batch[self.weights_key], jnp.float32)
        return (jnp.asarray(batch[self.target_key]) > 0).astype(jnp.float32)

    def masked_residue_weights(self, batch: Batch, weights: jax.Array) -> jax.Array:
        """`weights` restricted to the residues the objective hid from the model."""
        return weights

    def _train_weights(self, batch: Batch) -> jax.Array:
        """Loss weights of the training objective (evaluation uses `_weights`)."""
        return self._weights(batch)

    def loss_fn(self, params, batch: Batch, dropout_rng: jax.Array | None = None,
                training: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar objective and summed aux (`loss`, `z_loss`, `weight_sum`, `correct`).

        The objective is (sum weighted cross entropy + z-loss) / sum of loss weights; padding and
        packing enter through the weights and the masks built from segment ids.
        `dropout_rng=None` runs deterministically. `training=False` weighs every target 1
        (no objective-specific reweighting such as `T5Config.unmasked_loss_weight`).
        """
        logits = self.logits(params, batch, dropout_rng)
        weights = self._train_weights(batch) if training else self._weights(batch)
        aux = losses.weighted_sums(logits, jnp.asarray(batch[self.target_key]), weights,
                                   self.config.z_loss)
        return losses.objective(aux), aux

    def eval_fn(self, params, batch: Batch) -> dict[str, jax.Array]:
        """Deterministic metrics: loss, perplexity, accuracy on loss positions, z_loss,
        plus the summed `weight_sum`, `correct` and `loss_sum` for aggregation."""
        _, aux = self.loss_fn(params, batch, None, training=False)
        metrics = losses.metrics_from_aux(aux)
        metrics.update(correct=aux["correct"], loss_sum=aux["loss"])
        return metrics

    def score_batch(self, params, batch: Batch) -> jax.Array:
        """Log-likelihood `[batch]` of the targets summed over weighted positions."""
        logits = self.logits(params, batch, None)
        ce, _ = losses.cross_entropy_with_z_loss(logits, jnp.asarray(batch[self.target_key]))
        return -jnp.sum(ce * self._weights(batch), axis=-1)


class EncoderDecoderModel(BaseModel):
    """ProtT5 span denoising: cross entropy over decoder targets with z-loss."""

    target_key = "decoder_target_tokens"
    weights_key = "decoder_loss_weights"

    def __init__(self, config: t5.T5Config):
        self.config = config
        self.module = t5.Transformer(config)
        self.encoder_module = t5.T5EncoderOnly(config)

    def masked_residue_weights(self, batch, weights):
        """Span length 1: every masked residue is one sentinel in the encoder input at the same
        position as its decoder target, so the masked targets are where
        `encoder_input_tokens` holds a sentinel (only when both lengths are equal; otherwise,
        e.g. for C4-style span corruption whose targets are all masked, `weights`)."""
        enc = jnp.asarray(batch["encoder_input_tokens"])
        if enc.shape != weights.shape:
            return weights
        return weights * (enc >= tok.PROTT5_LAST_SENTINEL_ID).astype(weights.dtype)

    def _train_weights(self, batch):
        weights = self._weights(batch)
        w = self.config.unmasked_loss_weight
        if w == 1.0:
            return weights
        masked = self.masked_residue_weights(batch, weights)
        return masked + w * (weights - masked)

    def init(self, rng, batch):
        enc, dec = _zeros(batch, "encoder_input_tokens"), _zeros(batch, "decoder_input_tokens")
        return self.module.init({"params": rng}, enc, dec, deterministic=True)

    def logits(self, params, batch, dropout_rng=None):
        return self.module.apply(
            {"params": params}, jnp.asarray(batch["encoder_input_tokens"]),
            jnp.asarray(batch["decoder_input_tokens"]),
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            encoder_positions=batch.get("encoder_positions"),
            decoder_positions=batch.get("decoder_positions"),
            deterministic=dropout_rng is None, rngs=_rngs(dropout_rng))

    def encode(self, params, tokens, segment_ids=None, positions=None,
               output_hidden_states: bool = False):
        """Last encoder layer `[batch, length, embed]` (after the final norm, as HF).

        Works with encoder-decoder params or the encoder-only subset. With
        `output_hidden_states`, returns `(last, hidden_states)` (layers + 1 arrays, as HF).
        """
        sub = {k: params[k] for k in ("token_embedder", "encoder")}
        return self.encoder_module.apply({"params": sub}, jnp.asarray(tokens), segment_ids,
                                         positions, deterministic=True,
                                         output_hidden_states=output_hidden_states)

    def predict_batch(self, params, batch: Batch, max_decode_length: int | None = None,
                      eos_id: int = 1) -> jax.Array:
        """Greedy decoding `[batch, max_decode_length]` int32 (pad 0 after `eos_id`).

        The length defaults to `decoder_target_tokens`' length, else the encoder length.
        Decoding is incremental: one position per step with a self-attention key/value cache.
        """
        enc_tokens = jnp.asarray(batch["encoder_input_tokens"])
        if max_decode_length is None:
            ref = batch.get("decoder_target_tokens", enc_tokens)
            max_decode_length = int(ref.shape[-1])
        if batch.get("encoder_segment_ids") is not None:
            raise ValueError("predict_batch expects unpacked batches (no encoder_segment_ids)")
        bsz, length = enc_tokens.shape[0], max_decode_length
        decode = functools.partial(self.module.apply, method=t5.Transformer.decode,
                                   mutable=["cache"])
        encoded = self.module.apply({"params": params}, enc_tokens, method=t5.Transformer.encode)
        _, cache = decode({"params": params}, encoded, enc_tokens,
                          jnp.zeros((bsz, length), jnp.int32), decode=True)

        def step(i, state):
            cache, token, out, done = state
            logits, cache = decode({"params": params, **cache}, encoded, enc_tokens,
                                   token[:, None], decode=True, decode_index=i,
                                   max_decode_length=length)
            token = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
            token = jnp.where(done, 0, token)
            return cache, token, out.at[:, i].set(token), done | (token == eos_id)

        init = (cache, jnp.zeros((bsz,), jnp.int32),  # decoder start token = 0 (pad), as T5
                jnp.zeros((bsz, length), jnp.int32), jnp.zeros((bsz,), bool))
        return jax.lax.fori_loop(0, length, step, init)[2]


class MaskedLMModel(BaseModel):
    """ProtBert MLM: cross entropy on the selected (loss-weighted) positions only."""

    target_key = "encoder_target_tokens"
    weights_key = "encoder_loss_weights"

    def __init__(self, config: bert.BertConfig):
        self.config = config
        self.module = bert.BertForMaskedLM(config)

    def init(self, rng, batch):
        return self.module.init({"params": rng}, _zeros(batch, "encoder_input_tokens"),
                                deterministic=True)

    def logits(self, params, batch, dropout_rng=None):
        return self.module.apply(
            {"params": params}, jnp.asarray(batch["encoder_input_tokens"]),
            segment_ids=batch.get("encoder_segment_ids"),
            positions=batch.get("encoder_positions"),
            deterministic=dropout_rng is None, rngs=_rngs(dropout_rng))

    def _weights(self, batch):
        if self.weights_key not in batch:
            raise KeyError(f"MLM batch needs {self.weights_key!r} (1 on the selected positions); "
                           f"keys: {sorted(batch)}")
        return jnp.asarray(batch[self.weights_key], jnp.float32)

    def encode(self, params, tokens, segment_ids=None, positions=None,
               output_hidden_states: bool = False):
        """Last encoder layer `[batch, length, embed]`; with `output_hidden_states`,
        `(last, hidden_states)` (embeddings output + every layer, as HF)."""
        return self.module.apply({"params": params}, jnp.asarray(tokens), segment_ids, positions,
                                 deterministic=True, output_hidden_states=output_hidden_states,
                                 method=bert.BertForMaskedLM.encode)

    def predict_batch(self, params, batch: Batch) -> jax.Array:
        """Input tokens with the loss positions (else the [MASK] tokens) filled by the argmax."""
        tokens = jnp.asarray(batch["encoder_input_tokens"])
        logits = self.logits(params, batch, None)
        if self.weights_key in batch:
            fill = jnp.asarray(batch[self.weights_key]) > 0
        else:
            fill = tokens == tok.PROTBERT_MASK_ID
        return jnp.where(fill, jnp.argmax(logits, axis=-1).astype(tokens.dtype), tokens)


def get_model(config) -> BaseModel:
    """The Model for a config: T5Config -> EncoderDecoderModel, BertConfig -> MaskedLMModel."""
    if isinstance(config, t5.T5Config):
        return EncoderDecoderModel(config)
    if isinstance(config, bert.BertConfig):
        return MaskedLMModel(config)
    raise TypeError(f"no model for config type {type(config).__name__}")


__all__ = ["BaseModel", "EncoderDecoderModel", "MaskedLMModel", "get_model"]
