"""Model classes (t5x `BaseModel` style): the network plus its loss, eval, score and predict.

`params` below is always the content of the flax `params` collection (boxed or unboxed).
Batches use the seqio feature-converter keys of docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from protlm.models import losses

Batch = Mapping[str, Any]


def int_zeros(batch: Batch, key: str) -> jax.Array:
    """An int32 zero array shaped like batch[key] (arrays or jax.ShapeDtypeStruct)."""
    if key not in batch:
        raise KeyError(f"batch has no {key!r}; keys: {sorted(batch)}")
    return jnp.zeros(batch[key].shape, jnp.int32)


def dropout_rngs(dropout_rng):
    return {} if dropout_rng is None else {"dropout": dropout_rng}


class BaseModel(abc.ABC):
    """Shared API. Subclasses set `self.module` and implement the per-family parts.

    The training objective is a sum over the batch divided by normalisers that depend on the
    data only (`loss_normalizer`: the total loss weight). The train step computes the normalisers
    once on the global batch and passes them to every microbatch, so the gradient accumulated over
    microbatches equals the gradient of the whole batch, for any number of loss terms.
    """

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

    @abc.abstractmethod
    def encode(self, params, tokens, segment_ids=None, positions=None,
               output_hidden_states: bool = False):
        """The representation `protlm.embed` writes: `[batch, length, hidden]` of the last layer,
        or `(last, hidden_states)` (layers + 1 arrays, HF layout) with `output_hidden_states`."""

    def init_carry(self, batch_shapes: Batch) -> Any:
        """State carried from one train step to the next (Transformer-XL / XLNet memory), or None.

        Stateful models return a pytree of `nn.LogicallyPartitioned` zeros whose leaves have the
        batch as their leading axis (row i continues row i of the previous step); their `loss_fn`
        takes it as `carry=` and returns the next one as `aux["carry"]`, their `eval_sums` as
        `sums["carry"]`. The trainer keeps it in `TrainState.carry` and checkpoints it.
        """
        del batch_shapes
        return None

    def loss_weights(self, batch: Batch) -> jax.Array:
        """Per-target weights of evaluation (every target of the objective weighs 1)."""
        if self.weights_key in batch:
            return jnp.asarray(batch[self.weights_key], jnp.float32)
        return (jnp.asarray(batch[self.target_key]) > 0).astype(jnp.float32)

    def masked_residue_weights(self, batch: Batch, weights: jax.Array) -> jax.Array:
        """`weights` restricted to the residues the objective hid from the model."""
        return weights

    def train_loss_weights(self, batch: Batch) -> jax.Array:
        """Loss weights of the training objective (evaluation uses `loss_weights`)."""
        return self.loss_weights(batch)

    def loss_normalizer(self, batch: Batch, training: bool = True) -> dict[str, jax.Array]:
        """Data-only denominators of the objective (here: the total loss weight, at least 1)."""
        weights = self.train_loss_weights(batch) if training else self.loss_weights(batch)
        return {"weight_sum": jnp.maximum(jnp.sum(weights), 1.0)}

    def loss_fn(self, params, batch: Batch, dropout_rng: jax.Array | None = None,
                training: bool = True, normalizer: Mapping[str, jax.Array] | None = None,
                carry: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar objective and summed aux (`loss`, `z_loss`, `weight_sum`, `correct`).

        The objective is (sum weighted cross entropy + z-loss) / `normalizer["weight_sum"]`
        (default: this batch's total loss weight); padding and packing enter through the weights
        and the masks built from segment ids. `dropout_rng=None` runs deterministically.
        `training=False` weighs every target 1 (no objective-specific reweighting such as
        `T5Config.unmasked_loss_weight`). `carry` is unused by stateless models (`init_carry`).
        """
        del carry
        logits = self.logits(params, batch, dropout_rng)
        weights = self.train_loss_weights(batch) if training else self.loss_weights(batch)
        aux = losses.weighted_sums(logits, jnp.asarray(batch[self.target_key]), weights,
                                   self.config.z_loss)
        if normalizer is None:
            normalizer = self.loss_normalizer(batch, training)
        return (aux["loss"] + aux["z_loss"]) / normalizer["weight_sum"], aux

    def eval_sums(self, params, batch: Batch, carry: Any = None) -> dict[str, jax.Array]:
        """Summed evaluation statistics of a batch (additive over batches and hosts): all loss
        positions, and the masked residues alone (`masked_*`). (`carry`: see `init_carry`.)"""
        del carry
        logits = self.logits(params, batch, None)
        targets = jnp.asarray(batch[self.target_key])
        weights = self.loss_weights(batch)
        all_pos = losses.weighted_sums(logits, targets, weights, 0.0)
        masked = losses.weighted_sums(logits, targets,
                                      self.masked_residue_weights(batch, weights), 0.0)
        return {"loss": all_pos["loss"], "weight_sum": all_pos["weight_sum"],
                "correct": all_pos["correct"], "masked_loss": masked["loss"],
                "masked_weight_sum": masked["weight_sum"], "masked_correct": masked["correct"]}

    def summarize_eval(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Host-side metrics from accumulated `eval_sums`."""
        d = max(float(sums["weight_sum"]), 1.0)
        dm = max(float(sums["masked_weight_sum"]), 1.0)
        loss = float(sums["loss"]) / d
        return {"loss": loss, "perplexity": float(np.exp(min(loss, 50.0))),
                "accuracy": float(sums["correct"]) / d,
                "masked_residue_loss": float(sums["masked_loss"]) / dm,
                "masked_residue_accuracy": float(sums["masked_correct"]) / dm}

    def summarize_train(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Host-side means of the summed train aux over a logging window."""
        denom = max(float(sums["weight_sum"]), 1.0)
        return {"loss": float(sums["loss"]) / denom, "z_loss": float(sums["z_loss"]) / denom,
                "accuracy": float(sums["correct"]) / denom}

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
        return -jnp.sum(ce * self.loss_weights(batch), axis=-1)


class MaskedLMModel(BaseModel):
    """Masked LM (ProtBert, ProtAlbert, ...): cross entropy on the selected (loss-weighted)
    positions only.

    Args:
      config: the family's config (`z_loss` field).
      module: the network: `__call__(tokens, segment_ids, positions, deterministic) -> logits`
        and `encode(tokens, segment_ids, positions, deterministic, output_hidden_states)`.
      mask_id: the vocabulary's [MASK] id (`predict_batch` fills those without loss weights).
    """

    target_key = "encoder_target_tokens"
    weights_key = "encoder_loss_weights"

    def __init__(self, config, module: nn.Module, mask_id: int):
        self.config = config
        self.module = module
        self.mask_id = mask_id

    def init(self, rng, batch):
        return self.module.init({"params": rng}, int_zeros(batch, "encoder_input_tokens"),
                                deterministic=True)

    def logits(self, params, batch, dropout_rng=None):
        return self.module.apply(
            {"params": params}, jnp.asarray(batch["encoder_input_tokens"]),
            segment_ids=batch.get("encoder_segment_ids"),
            positions=batch.get("encoder_positions"),
            deterministic=dropout_rng is None, rngs=dropout_rngs(dropout_rng))

    def loss_weights(self, batch):
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
                                 method="encode")

    def predict_batch(self, params, batch: Batch) -> jax.Array:
        """Input tokens with the loss positions (else the [MASK] tokens) filled by the argmax."""
        tokens = jnp.asarray(batch["encoder_input_tokens"])
        logits = self.logits(params, batch, None)
        if self.weights_key in batch:
            fill = jnp.asarray(batch[self.weights_key]) > 0
        else:
            fill = tokens == self.mask_id
        return jnp.where(fill, jnp.argmax(logits, axis=-1).astype(tokens.dtype), tokens)


__all__ = ["BaseModel", "MaskedLMModel", "int_zeros", "dropout_rngs"]
