"""The train state: what it holds, how it is sharded, how it is created or restored.

`TrainState` (step, params, optimizer state) lives on the mesh in the shardings the logical axis
names of the params give (`state_shardings`); `init_state` creates it there directly, and
`restore_or_init` resumes MODEL_DIR's latest readable checkpoint (a damaged newer one is moved to
MODEL_DIR/unreadable_checkpoints/ with a warning), warm-starts from another run's params, or
initialises.
"""
from __future__ import annotations

import logging
import pathlib
import shutil
from typing import Any, Mapping, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from protlm import checkpoints, optimizers, partitioning

log = logging.getLogger(__name__)
UNREADABLE_DIR = "unreadable_checkpoints"   # MODEL_DIR/unreadable_checkpoints/<step>: kept, not used


class TrainState(flax.struct.PyTreeNode):
    """Everything a checkpoint holds besides the data position.

    `carry` is the state a stateful model carries from one step to the next (Transformer-XL /
    XLNet memory; `Model.init_carry`), sharded like activations and saved with the checkpoint so a
    resumed run continues exactly; None for stateless models.
    """

    step: jax.Array        # int32 scalar: optimizer steps taken
    params: Any            # unboxed params (fp32 master weights)
    opt_state: Any
    carry: Any = None

    def to_dict(self) -> dict:
        out = {"step": self.step, "params": self.params, "opt_state": self.opt_state}
        if self.carry is not None:
            out["carry"] = self.carry
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "TrainState":
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"],
                   carry=d.get("carry"))


def state_shardings(model, tx, batch_shapes: Mapping, mesh, rules) -> tuple[TrainState, TrainState]:
    """Abstract state (ShapeDtypeStructs with shardings) and the matching NamedShardings.

    Params follow the logical-axis names the model gives every parameter; optimizer-state
    leaves follow the param they belong to (``optimizers.state_partition_specs``).
    """
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), batch_shapes)["params"])
    param_sh = partitioning.logical_to_mesh_sharding(boxed, mesh, rules)
    params = nn.meta.unbox(boxed)
    param_specs = jax.tree_util.tree_map(lambda s: s.spec, param_sh)
    opt_state = jax.eval_shape(tx.init, params)
    opt_specs = optimizers.state_partition_specs(opt_state, params, param_specs, mesh)
    opt_sh = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), opt_specs,
                                    is_leaf=lambda x: isinstance(x, PartitionSpec))
    carry, carry_sh = carry_shardings(model, batch_shapes, mesh, rules)
    shardings = TrainState(step=partitioning.replicated(mesh), params=param_sh, opt_state=opt_sh,
                           carry=carry_sh)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                          opt_state=opt_state, carry=carry)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def carry_shardings(model, batch_shapes: Mapping, mesh, rules) -> tuple[Any, Any]:
    """Abstract carry (unboxed ShapeDtypeStructs) and its NamedShardings, from the logical axis
    names of `model.init_carry` (`(None, None)` for a stateless model)."""
    boxed = jax.eval_shape(lambda: model.init_carry(batch_shapes))
    if boxed is None:
        return None, None
    return nn.meta.unbox(boxed), partitioning.logical_to_mesh_sharding(boxed, mesh, rules)


def init_state(model, tx, batch_shapes, shardings: TrainState, mesh, rules, seed: int,
               params: Any = None) -> TrainState:
    """A fresh state created directly in its shardings (params from ``params`` if given; the
    carry, if the model has one, starts from `model.init_carry`)."""

    def make(rng, given):
        p = nn.meta.unbox(model.init(rng, batch_shapes)["params"]) if given is None else given
        carry = model.init_carry(batch_shapes)
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                          carry=None if carry is None else nn.meta.unbox(carry))

    with partitioning.activate(mesh, rules):
        fn = jax.jit(make, out_shardings=shardings,
                     in_shardings=(None, None if params is None else shardings.params))
        return fn(jax.random.key(seed), params)


def restore_or_init(manager, model, tx, batch_shapes, abstract, shardings, mesh, rules, seed,
                     init_from: Optional[str]) -> tuple[TrainState, dict]:
    """Resume from MODEL_DIR's latest checkpoint, else warm-start from ``init_from``, else init."""
    if manager.latest_step() is not None:

        def read(at: int):
            if "opt_state" in checkpoints.state_keys(manager, at):
                return True, checkpoints.restore_state(manager, at, abstract.to_dict())
            return False, checkpoints.restore_state(manager, at, {"params": abstract.params})

        step, (full, (restored, data_state)) = checkpoints.restore_newest(
            manager, read, on_unreadable=lambda bad: _move_aside(manager, bad))
        if full:
            log.info("resumed from %s step %d (data position: batch %s)", manager.directory, step,
                     data_state.get("batches_consumed", "none saved"))
            return TrainState.from_dict(restored), data_state
        log.info("starting from params-only checkpoint step %d (fresh optimizer state)", step)
        state = init_state(model, tx, batch_shapes, shardings, mesh, rules, seed,
                           params=restored["params"])
        return state.replace(step=jax.device_put(jnp.int32(step), shardings.step)), data_state
    if init_from:
        # A wrapper Model (protlm.finetune: LoRA, task heads) builds its tree from the checkpoint
        # itself (`warm_start`); a family's Model takes the checkpoint's params as they are.
        warm_start = getattr(model, "warm_start", None)
        if warm_start is not None:
            params, cfg = warm_start(init_from, batch_shapes), model.config
        else:
            params, cfg = checkpoints.load_params(init_from)
        if getattr(model.config, "scan_layers", False):
            params = checkpoints.scan_layout(params, scanned=True)
        want = jax.tree_util.tree_map(lambda a: (a.shape, jnp.dtype(a.dtype)), abstract.params)
        got = jax.tree_util.tree_map(lambda a: (a.shape, jnp.dtype(a.dtype)), params)
        if want != got:
            raise ValueError(f"init_from={init_from}: its params ({type(cfg).__name__}) do not match "
                             "the model being trained; use the same model preset/config")
        params = jax.tree_util.tree_map(
            lambda a, s: jax.make_array_from_callback(a.shape, s, lambda idx, a=a: a[idx]),
            params, shardings.params)
        log.info("initial params from %s", init_from)
        return init_state(model, tx, batch_shapes, shardings, mesh, rules, seed, params=params), {}
    return init_state(model, tx, batch_shapes, shardings, mesh, rules, seed), {}


def _move_aside(manager, step: int) -> None:
    """Moves an unreadable step out of orbax's directory (kept for inspection) so that the run can
    write that step again."""
    src = pathlib.Path(str(manager.directory)) / str(step)
    if jax.process_index() == 0 and src.exists():
        dst = src.parent.parent / UNREADABLE_DIR / str(step)
        n = 1
        while dst.exists():
            dst, n = dst.with_name(f"{step}.{n}"), n + 1
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
        log.warning("moved the unreadable checkpoint step %d to %s", step, dst)
    manager.reload()
