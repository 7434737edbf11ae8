"""Device mesh, logical-axis rule tables and sharded initialisation (t5x style, on flax.linen.spmd).

Mesh axes are always `('data', 'fsdp', 'model')`; a size of 1 switches an axis off. Parameters and
activations carry logical names (`batch, length, embed, mlp, heads, kv, vocab, relpos_buckets,
abspos, token_type, layers`); a rule table maps them to mesh axes. Flax applies the rules per array
in order and skips a mesh axis already used by an earlier dim, so `batch` (listed first) takes
`data`+`fsdp` on activations while `embed -> fsdp` shards only the parameters.

Typical use (trainer):
    mesh = create_mesh(data=-1, model=2)
    rules = standard_logical_axis_rules()
    variables, shardings = sharded_init(lambda rng: model.init(rng, batch), mesh, rules, rng)
    with activate(mesh, rules):   # the activation constraints apply while tracing
        step = jax.jit(train_step, in_shardings=..., out_shardings=...)
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from protlm.errors import ConfigError

MESH_AXES = ("data", "fsdp", "model")
LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]


_MESH_FIX = ("set --gin.MESH_DATA / MESH_FSDP / MESH_MODEL so that they multiply to the number of "
             "devices (-1 for one of them: the remaining devices)")


def create_mesh(data: int = -1, fsdp: int = 1, model: int = 1,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `('data', 'fsdp', 'model')` mesh; one size may be -1 (= the remaining devices).

    Raises:
      ConfigError (a ValueError): when the sizes do not multiply to the number of devices; the
        message names the gin macros (MESH_DATA, MESH_FSDP, MESH_MODEL) to change.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, model]
    if sizes.count(-1) > 1:
        raise ConfigError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} "
                          f"model={model}: {_MESH_FIX}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if known <= 0 or len(devices) % known:
            raise ConfigError(f"{len(devices)} devices do not divide into data={data} "
                              f"fsdp={fsdp} model={model}: {_MESH_FIX}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ConfigError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x model={sizes[2]} = "
                          f"{int(np.prod(sizes))} != {len(devices)} devices: {_MESH_FIX}")
    from jax.experimental import mesh_utils
    num_slices = len({getattr(d, "slice_index", None) for d in devices})
    if num_slices > 1:
        # Multi-slice (DCN between slices): the slices split the data axis, so the slow
        # network carries only the once-per-step gradient reduction (MaxText's default
        # dcn_data_parallelism); fsdp and model stay inside a slice on ICI.
        if sizes[0] % num_slices:
            raise ValueError(f"{num_slices} slices need the data axis ({sizes[0]}) to be a "
                             f"multiple of {num_slices}: set MESH_DATA (e.g. "
                             f"--gin.MESH_DATA={num_slices}) and MESH_FSDP/MESH_MODEL per slice")
        ici = [sizes[0] // num_slices, sizes[1], sizes[2]]
        grid = mesh_utils.create_hybrid_device_mesh(ici, [num_slices, 1, 1], devices)
        return Mesh(grid, MESH_AXES)
    try:
        grid = mesh_utils.create_device_mesh(sizes, devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES)


_COMMON: tuple = (
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("relpos_buckets", None),
    ("abspos", None),
    ("token_type", None),
)


def standard_logical_axis_rules() -> tuple:
    """1-D model parallelism (t5x default): batch -> data(+fsdp); vocab/mlp/heads -> model;
    embed replicated."""
    return (("batch", ("data", "fsdp")),) + _COMMON + (("embed", None),)


def two_d_logical_axis_rules() -> tuple:
    """2-D parameter sharding (t5x `parameter_partitioning_dims=2`): as standard, and parameter
    `embed` dims also sharded over `data` (activations keep embed replicated: batch holds data)."""
    return (("batch", ("data", "fsdp")),) + _COMMON + (("embed", "data"),)


def fsdp_logical_axis_rules() -> tuple:
    """FSDP: parameters' `embed` dims sharded over `fsdp` (gathered per layer by XLA), with
    model parallelism over `model` as in the standard table."""
    return (("batch", ("data", "fsdp")),) + _COMMON + (("embed", "fsdp"),)


RULE_TABLES: dict[str, Callable[[], tuple]] = {
    "standard": standard_logical_axis_rules,
    "2d": two_d_logical_axis_rules,
    "fsdp": fsdp_logical_axis_rules,
}


def get_logical_axis_rules(name: str) -> tuple:
    """Rule table by name: `standard`, `2d` or `fsdp`."""
    if name not in RULE_TABLES:
        raise ValueError(f"unknown logical axis rules {name!r}; known: {sorted(RULE_TABLES)}")
    return RULE_TABLES[name]()


@contextlib.contextmanager
def activate(mesh: Mesh, rules: LogicalRules) -> Iterator[None]:
    """Mesh and rule table for tracing, so that `nn.with_logical_constraint` (every activation
    constraint in protlm.layers) takes effect.

    flax >= 0.11 applies a logical constraint only under `jax.set_mesh` (it reads
    `jax.sharding.get_abstract_mesh()`); under a bare `with mesh:` every constraint is a
    silent no-op and XLA's sharding propagation alone decides the activations' layout (for
    ProtBert with FSDP rules on a TPU v3-32 it replicated the batch: 129 GiB per core).
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def fit_spec(spec: Sequence, shape: Sequence[int], mesh: Mesh) -> tuple:
    """`spec` without the mesh axes that do not divide their dim (those dims are replicated:
    a 37-token vocabulary over `model=2`, factored optimizer statistics of odd sizes)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
        out.append(axes if size > 1 and dim % size == 0 else None)
    return tuple(out)


def logical_to_mesh_sharding(abstract_tree: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """`NamedSharding`s for a (possibly abstract) tree of `nn.LogicallyPartitioned` leaves.

    The result has the tree's structure with the boxes removed (the structure of
    `nn.meta.unbox(tree)`); unboxed leaves are replicated. Mesh axes that do not divide a dim
    are dropped for that dim (`fit_spec`).
    """
    specs = nn.get_partition_spec(abstract_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    return jax.tree_util.tree_map(
        lambda sh, leaf: NamedSharding(mesh, PartitionSpec(*fit_spec(sh.spec, leaf.shape, mesh))),
        shardings, nn.meta.unbox(abstract_tree))


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, rules: LogicalRules, *args,
                 unbox: bool = True) -> tuple[Any, Any]:
    """Initialises directly into sharded arrays: eval_shape -> specs -> jit(out_shardings).

    Args:
      init_fn: `(*args) -> variables` with `nn.LogicallyPartitioned` leaves (e.g. `model.init`).
      mesh, rules: where and how to shard.
      *args: passed to `init_fn` (rngs, shapes).
      unbox: return plain arrays (default) instead of boxed leaves.

    Returns:
      `(variables, shardings)`: shardings match the unboxed variables' structure.
    """
    abstract = jax.eval_shape(init_fn, *args)
    shardings = logical_to_mesh_sharding(abstract, mesh, rules)

    def init_unboxed(*a):
        out = init_fn(*a)
        return nn.meta.unbox(out) if unbox else out

    with activate(mesh, rules):
        variables = jax.jit(init_unboxed, out_shardings=shardings)(*args)
    return variables, shardings


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on `mesh` (scalars, rngs, step counters)."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays `[batch, ...]`: leading axis over `data` and `fsdp`."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """Mesh sizes (``-1`` = the remaining devices) and the logical-axis rule table name."""

    data: int = -1
    fsdp: int = 1
    model: int = 1
    rules: str = "standard"     # RULE_TABLES: standard | 2d | fsdp
    num_devices: int = 0        # use only the first N devices (0 = all)
    devices: tuple | None = None   # None = jax.devices(); a TPU topology's (--topology dry runs)

    def mesh(self):
        devices = list(self.devices) if self.devices is not None else jax.devices()
        if self.num_devices:
            if self.num_devices > len(devices):
                raise ValueError(f"num_devices={self.num_devices} but only {len(devices)} devices")
            devices = devices[:self.num_devices]
        return create_mesh(self.data, self.fsdp, self.model, devices=devices)

    def logical_rules(self) -> tuple:
        return get_logical_axis_rules(self.rules)
