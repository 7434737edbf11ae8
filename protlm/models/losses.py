"""Token-level cross entropy with t5x's z-loss, and metrics from summed statistics."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy_with_z_loss(logits: jax.Array, targets: jax.Array, z_loss: float = 0.0
                              ) -> tuple[jax.Array, jax.Array]:
    """Per-token cross entropy and z-loss.

    Args:
      logits: `[batch, length, vocab]` (computed in float32).
      targets: `[batch, length]` int target ids.
      z_loss: coefficient of `log(Z)**2` (t5x: 1e-4), keeps the softmax normaliser near 1.

    Returns:
      `(ce, z)`, each `[batch, length]` float32: `ce = log Z - logit[target]` and
      `z = z_loss * log(Z)**2`.
    """
    logits = jnp.asarray(logits, jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [batch, length]
    # A one-hot contraction (not a gather) stays cheap when the vocab axis is sharded.
    target_logit = jnp.sum(logits * jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype),
                           axis=-1)
    return log_z - target_logit, z_loss * jnp.square(log_z)


def weighted_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array, z_loss: float
                  ) -> dict[str, jax.Array]:
    """Summed statistics over weighted positions (additive across micro-batches and hosts).

    Returns:
      `loss` (sum of weight x cross entropy, z-loss excluded), `z_loss` (sum of weight x z term),
      `weight_sum`, `correct` (sum of weight where argmax == target); float32 scalars.
    """
    weights = jnp.asarray(weights, jnp.float32)
    ce, z = cross_entropy_with_z_loss(logits, targets, z_loss)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return {
        "loss": jnp.sum(ce * weights),
        "z_loss": jnp.sum(z * weights),
        "weight_sum": jnp.sum(weights),
        "correct": jnp.sum(correct * weights),
    }


def objective(aux: dict[str, jax.Array]) -> jax.Array:
    """Training objective from summed aux: (cross entropy + z-loss) / sum of loss weights."""
    return (aux["loss"] + aux["z_loss"]) / jnp.maximum(aux["weight_sum"], 1.0)


def metrics_from_aux(aux: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Means from (possibly accumulated) summed aux: loss, perplexity, accuracy, z_loss."""
    denom = jnp.maximum(aux["weight_sum"], 1.0)
    loss = aux["loss"] / denom
    return {
        "loss": loss,
        "perplexity": jnp.exp(loss),
        "accuracy": aux["correct"] / denom,
        "z_loss": aux["z_loss"] / denom,
        "weight_sum": aux["weight_sum"],
    }
