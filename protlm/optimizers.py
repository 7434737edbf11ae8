"""Optimizers and learning-rate schedules (optax), configured from gin.

Each builder takes a ``learning_rate`` schedule (``step -> lr``) and returns an
``optax.GradientTransformation``; the trainer keeps the schedule separately to log
the learning rate. gin files refer to these functions through
``from __gin__ import dynamic_registration`` so no gin decorator is needed here::

    from protlm import optimizers
    trainer.train.learning_rate = @optimizers.rsqrt_schedule()
    optimizers.rsqrt_schedule.peak_value = 0.01
    trainer.train.optimizer = @optimizers.adafactor

Recipes (PROTTRANS_FACTS section 3): ProtT5 = Adafactor (factored second moments,
decay 0.8, update clipping 1.0, no momentum) with the T5 inverse-square-root schedule
at lr 0.01 (= 1/sqrt(10k warm-up steps)); ProtBert = LAMB lr 0.002, weight decay
0.01, linear warm-up then linear decay.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from protlm import partitioning

Schedule = Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------- schedules
def constant_schedule(value: float) -> Schedule:
    """A constant learning rate."""
    return optax.constant_schedule(value)


def rsqrt_schedule(peak_value: float = 0.01, warmup_steps: int = 10_000,
                   linear_warmup: bool = False) -> Schedule:
    """The T5 inverse-square-root schedule.

    ``lr(step) = peak_value * sqrt(warmup_steps / max(step, warmup_steps))``, i.e. constant
    ``peak_value`` for the first ``warmup_steps`` steps then ``~ 1/sqrt(step)``. With
    ``peak_value = 1/sqrt(warmup_steps)`` this is exactly T5's ``rsqrt_decay`` (lr 0.01 at
    10k warm-up steps). ``linear_warmup=True`` ramps linearly from 0 to the peak instead
    of holding it constant during warm-up (safer for small models trained from scratch).

    Args:
      peak_value: learning rate during (or at the end of) warm-up.
      warmup_steps: steps before the 1/sqrt decay starts; must be >= 1.
      linear_warmup: ramp up linearly during warm-up.
    """
    if warmup_steps < 1:
        raise ValueError(f"rsqrt_schedule: warmup_steps must be >= 1, got {warmup_steps}")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        decay = jnp.sqrt(warmup_steps / jnp.maximum(step, warmup_steps))
        lr = peak_value * decay
        if linear_warmup:
            lr = lr * jnp.minimum(1.0, (step + 1.0) / warmup_steps)
        return lr

    return schedule


def linear_warmup_linear_decay(peak_value: float, warmup_steps: int, total_steps: int,
                               end_value: float = 0.0) -> Schedule:
    """BERT's schedule: 0 -> ``peak_value`` over ``warmup_steps``, then linear to ``end_value``.

    Args:
      peak_value: learning rate at the end of warm-up.
      warmup_steps: length of the linear warm-up.
      total_steps: step at which ``end_value`` is reached (the run's TRAIN_STEPS).
      end_value: final learning rate.
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"linear_warmup_linear_decay: total_steps ({total_steps}) must exceed "
                         f"warmup_steps ({warmup_steps})")
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_value, warmup_steps),
         optax.linear_schedule(peak_value, end_value, total_steps - warmup_steps)],
        [warmup_steps])


def warmup_cosine_schedule(peak_value: float, warmup_steps: int, total_steps: int,
                           end_value: float = 0.0) -> Schedule:
    """Transformer-XL's schedule (`--scheduler cosine --warmup_step N`): linear warm-up to
    ``peak_value``, then cosine annealing to ``end_value`` (``eta_min``) at ``total_steps``."""
    if total_steps <= warmup_steps:
        raise ValueError(f"warmup_cosine_schedule: total_steps ({total_steps}) must exceed "
                         f"warmup_steps ({warmup_steps})")
    return optax.warmup_cosine_decay_schedule(0.0, peak_value, warmup_steps, total_steps,
                                              end_value)


# ----------------------------------------------------------------------------- optimizers
def decay_mask(params) -> object:
    """Weight-decay mask: decay matrices and embeddings, not biases or norm scales (BERT)."""
    return jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)


def _maybe_clip(tx: optax.GradientTransformation,
                max_grad_norm: Optional[float]) -> optax.GradientTransformation:
    if max_grad_norm is None or max_grad_norm <= 0:
        return tx
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)


def adafactor(learning_rate: Schedule, decay_rate: float = 0.8,
              clipping_threshold: Optional[float] = 1.0, factored: bool = True,
              min_dim_size_to_factor: int = 128, multiply_by_parameter_scale: bool = True,
              momentum: Optional[float] = None, weight_decay_rate: Optional[float] = None,
              eps: float = 1e-30) -> optax.GradientTransformation:
    """Adafactor as in T5 / ProtT5 (optax.adafactor).

    Factored second moments for every matrix whose two trailing dims are >=
    ``min_dim_size_to_factor``, second-moment decay ``1 - step**-decay_rate``, update
    clipping at RMS ``clipping_threshold`` and relative step size (updates scaled by the
    parameter's RMS). No first moment unless ``momentum`` is set.
    """
    return optax.adafactor(
        learning_rate=learning_rate, min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate, multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=clipping_threshold, momentum=momentum,
        weight_decay_rate=weight_decay_rate, eps=eps, factored=factored,
        weight_decay_mask=decay_mask if weight_decay_rate else None)


def lamb(learning_rate: Schedule, weight_decay: float = 0.01, b1: float = 0.9,
         b2: float = 0.999, eps: float = 1e-6,
         max_grad_norm: Optional[float] = 1.0) -> optax.GradientTransformation:
    """LAMB (ProtBert): Adam moments, decoupled weight decay, layer-wise trust ratio.

    Biases and layer-norm parameters are excluded from weight decay (``decay_mask``);
    gradients are clipped to global norm ``max_grad_norm`` first (None disables it).
    """
    tx = optax.lamb(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                    weight_decay=weight_decay, mask=decay_mask)
    return _maybe_clip(tx, max_grad_norm)


def adamw(learning_rate: Schedule, weight_decay: float = 0.01, b1: float = 0.9,
          b2: float = 0.98, eps: float = 1e-8,
          max_grad_norm: Optional[float] = 1.0) -> optax.GradientTransformation:
    """AdamW with the same weight-decay mask and optional global-norm clipping."""
    tx = optax.adamw(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                     weight_decay=weight_decay, mask=decay_mask)
    return _maybe_clip(tx, max_grad_norm)


# ----------------------------------------------------------------------------- state sharding
def _dict_path(path) -> tuple:
    return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def state_partition_specs(opt_state, params, param_specs, mesh):
    """PartitionSpecs for an optimizer state (abstract or concrete), following the params.

    optax states hold param-shaped subtrees (Adam/LAMB moments) or, for Adafactor,
    factored statistics with one axis of the param removed. Each state leaf is matched to
    the param with the same dict path: same shape -> the param's spec; one axis fewer ->
    the param's spec without that axis; anything else (counters, placeholders) is
    replicated. Mesh axes that do not divide a dim are dropped.

    Args:
      opt_state: ``tx.init(params)`` or its ``jax.eval_shape``.
      params: the (unboxed) params or their shapes.
      param_specs: ``PartitionSpec`` per param (same structure as ``params``).
      mesh: the mesh the specs refer to.

    Returns:
      A tree of ``PartitionSpec`` with the structure of ``opt_state``.
    """
    from jax.sharding import PartitionSpec

    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree_util.tree_leaves(param_specs,
                                       is_leaf=lambda x: isinstance(x, PartitionSpec))
    table = {_dict_path(path): (tuple(p.shape), tuple(s)) for (path, p), s in zip(flat_p, flat_s)}

    def spec_for(path, leaf):
        keys = _dict_path(path)
        shape = tuple(jnp.shape(leaf))
        for start in range(len(keys)):
            if keys[start:] in table:
                p_shape, p_spec = table[keys[start:]]
                p_spec = p_spec + (None,) * (len(p_shape) - len(p_spec))
                if shape == p_shape:
                    return PartitionSpec(*partitioning.fit_spec(p_spec, shape, mesh))
                if len(shape) == len(p_shape) - 1:
                    for axis in range(len(p_shape)):
                        if p_shape[:axis] + p_shape[axis + 1:] == shape:
                            spec = p_spec[:axis] + p_spec[axis + 1:]
                            return PartitionSpec(*partitioning.fit_spec(spec, shape, mesh))
                break
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(spec_for, opt_state)
