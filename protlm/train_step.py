"""The pure train and eval steps, and the train step jitted once with explicit shardings.

`train_step(state, batch, rng) -> (state, metrics)` is partitioned with explicit in/out shardings
and the state donated (t5x `train_with_lr`). Gradient accumulation scans over microbatches; the
objective's normalisers (`Model.loss_normalizer`, data only) are computed once on the global batch,
so the accumulated gradient equals the whole batch's for every family's objective.
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from protlm import partitioning
from protlm.train_state import TrainState

# Summed aux every Model's `loss_fn` returns (logged as window means by `Model.summarize_train`).
TRAIN_AUX_KEYS = ("loss", "z_loss", "weight_sum", "correct")


def batch_sharding(mesh) -> NamedSharding:
    """Batch arrays: the leading axis over the mesh's data-parallel axes."""
    return partitioning.data_sharding(mesh)


def make_global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding,
                      global_batch: int) -> dict:
    """Per-host numpy batch -> global jax arrays (`jax.make_array_from_process_local_data`)."""
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        out[k] = jax.make_array_from_process_local_data(sharding, v, (global_batch,) + v.shape[1:])
    return out


def _split_rows(x, num: int):
    """[B, ...] -> [num, B/num, ...], microbatch i = rows i, i+num, ... (spread over devices)."""
    if x.shape[0] % num:
        raise ValueError(f"batch size {x.shape[0]} is not divisible by accum_steps {num}")
    return x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)


def _merge_rows(x):
    """Inverse of `_split_rows`: [num, B/num, ...] -> [B, ...]."""
    x = x.swapaxes(0, 1)
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _split_microbatches(batch: Mapping, num: int, sharding) -> dict:
    """Batch arrays split into `num` microbatches (`_split_rows`), kept data-parallel."""
    spec = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
    return {k: jax.lax.with_sharding_constraint(_split_rows(v, num), spec)
            for k, v in batch.items()}


def make_train_step(model, tx: optax.GradientTransformation, schedule: Callable,
                    accum_steps: int = 1, mesh=None) -> Callable:
    """`train_step(state, batch, rng) -> (state, metrics)`; pure, for jax.jit.

    The gradient is that of the model's objective over the whole global batch (e.g. summed cross
    entropy + z-loss / total loss weight), whether or not it is accumulated over `accum_steps`
    microbatches. A step whose loss or gradient norm is not finite leaves the state unchanged and
    reports `finite = 0` so the loop can stop with a clean checkpoint. `metrics` holds the summed
    aux of `TRAIN_AUX_KEYS` (plus any others the model returns), `grad_norm`, `learning_rate`,
    `finite`. A stateful model's carry (`TrainState.carry`, rows leading) is split into the same
    microbatch rows as the batch and its next value reassembled.
    """

    def loss_and_grads(params, batch, rng, normalizer, carry):
        def objective(p):
            return model.loss_fn(p, batch, rng, normalizer=normalizer, carry=carry)
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
        aux = dict(aux)
        return (loss, grads, aux), aux.pop("carry", None)

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        normalizer = model.loss_normalizer(batch)
        if accum_steps == 1:
            (loss, grads, aux), carry = loss_and_grads(state.params, batch, rng, normalizer,
                                                       state.carry)
        else:
            micro = _split_microbatches(batch, accum_steps, partitioning.data_sharding(mesh))
            micro_carry = jax.tree_util.tree_map(lambda x: _split_rows(x, accum_steps),
                                                 state.carry)
            first = jax.tree_util.tree_map(lambda v: v[0], (micro, micro_carry))
            zeros = jax.tree_util.tree_map(
                lambda a: jnp.zeros(a.shape, a.dtype),
                jax.eval_shape(loss_and_grads, state.params, first[0], rng, normalizer,
                               first[1])[0])

            def body(sums, xs):
                mb, mb_carry, i = xs
                out, next_carry = loss_and_grads(state.params, mb, jax.random.fold_in(rng, i),
                                                 normalizer, mb_carry)
                return jax.tree_util.tree_map(jnp.add, sums, out), next_carry

            (loss, grads, aux), carries = jax.lax.scan(
                body, zeros, (micro, micro_carry, jnp.arange(accum_steps)))
            carry = jax.tree_util.tree_map(_merge_rows, carries)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, carry=carry)
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
        out = dict(aux)
        out.update(grad_norm=grad_norm, learning_rate=jnp.asarray(schedule(state.step), jnp.float32),
                   finite=finite.astype(jnp.float32))
        return new, out

    return train_step


def make_eval_step(model) -> Callable:
    """`eval_step(params, batch, carry) -> (sums, carry)`: `Model.eval_sums` (additive over
    batches and hosts) and a stateful model's next carry (None for stateless models)."""

    def eval_step(params, batch, carry):
        sums = dict(model.eval_sums(params, batch, carry=carry))
        return sums, sums.pop("carry", None)

    return eval_step


def summarize_train(model, sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Window means of summed train metrics over `count` steps."""
    out = model.summarize_train(sums)
    out.update(grad_norm=float(sums["grad_norm"]) / count,
               learning_rate=float(sums["learning_rate"]) / count)
    return out


def compile_train_step(model, tx, schedule, shardings: TrainState, mesh, rules,
                       accum_steps: int = 1) -> Callable:
    """The train step jitted once with explicit shardings and the state donated."""
    del rules   # the logical-axis rules apply through the `nn.logical_axis_rules` context
    step = make_train_step(model, tx, schedule, accum_steps, mesh)
    rep = partitioning.replicated(mesh)
    return jax.jit(step, in_shardings=(shardings, batch_sharding(mesh), rep),
                   out_shardings=(shardings, rep), donate_argnums=(0,))
