"""LoRA as a parameter transform: low-rank deltas on chosen projection kernels, merged on demand.

A target kernel `W` (any DenseGeneral kernel: `[*layers, *in, *out]`) gets two trainable factors,
`a [*layers, *in, rank]` and `b [*layers, rank, *out]`, and the model runs on
`W + (alpha / rank) * a @ b` (Hu et al. 2021). `b` starts at zero, so a fresh LoRA model computes
exactly what its base does. Nothing in the network changes: `merge` builds the effective params the
family's Model consumes, so LoRA works for every family through the one interface, scanned or not,
and `merge` is also the export (plain weights, an ordinary model directory).

Targets are matched on the param path: a kernel whose owning module's name is in `targets`
(default `query`, `key`, `value`, `out`: q/k/v/o as the ProtTrans LoRA notebooks). The split of a
kernel into input and output dims comes from its logical axis names (`embed` is the input of the
q/k/v and `wi` projections and the output of `out` / `wo`); a leading `layers` axis (scan) is kept.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LAYERS_AXIS = "layers"
DEFAULT_TARGETS = ("query", "key", "value", "out")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which kernels get a low-rank delta and how big it is.

    Attributes:
      rank: inner dimension r of `a @ b` (the ProtTrans notebooks use 4).
      alpha: the delta is scaled by `alpha / rank` (so changing the rank keeps the scale of the
        update at a fixed learning rate, as in the LoRA paper and PEFT).
      targets: names of the modules whose `kernel` gets a delta (the path component before
        `kernel`, e.g. `query` in `encoder/layers_3/attention/query/kernel`).
    """

    rank: int = 4
    alpha: float = 4.0
    targets: Sequence[str] = DEFAULT_TARGETS

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoraConfig.rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("LoraConfig.targets is empty: name at least one projection "
                             "(e.g. 'query', 'key', 'value', 'out')")

    @property
    def scale(self) -> float:
        return float(self.alpha) / float(self.rank)


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def _is_target(names: tuple[str, ...], config: LoraConfig) -> bool:
    return len(names) >= 2 and names[-1] == "kernel" and names[-2] in tuple(config.targets)


def _split(axes: tuple, shape: tuple) -> tuple[int, int]:
    """(number of leading `layers` dims, number of input dims) of a kernel with these axis names."""
    lead = 0
    while lead < len(axes) and axes[lead] == LAYERS_AXIS:
        lead += 1
    core = axes[lead:]
    if len(core) < 2:
        raise ValueError(f"LoRA target kernel with axes {axes} (shape {shape}) has fewer than 2 "
                         "non-layer dims; it is not a projection")
    # DenseGeneral kernels are [*in, *out]; the model width `embed` is either the one input
    # (q/k/v, wi) or the one output (out, wo).
    n_in = len(core) - 1 if core[-1] == "embed" and core[0] != "embed" else 1
    return lead, n_in


def lora_shapes(boxed_params: Any, config: LoraConfig) -> dict:
    """The LoRA tree for a boxed (`nn.LogicallyPartitioned`) base params tree, as boxed
    `jax.ShapeDtypeStruct`s: `{...path...: {"a": [*layers, *in, r], "b": [*layers, r, *out]}}`.

    The tree mirrors the base paths (so `layers_{i}` / scanned `layers` layouts convert with the
    same `scan_utils` functions) and carries logical axis names: `a` keeps the kernel's input
    axes, `b` its output axes, the rank axis is replicated.
    """
    flat = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    out: dict = {}
    for path, leaf in flat:
        names = _names(path)
        if not _is_target(names, config):
            continue
        if not isinstance(leaf, nn.LogicallyPartitioned):
            raise ValueError(f"LoRA target {'/'.join(names)} has no logical axis names")
        axes, value = tuple(leaf.names), leaf.unbox()
        shape = tuple(value.shape)
        lead, n_in = _split(axes, shape)
        r = config.rank
        a = jax.ShapeDtypeStruct(shape[:lead + n_in] + (r,), jnp.float32)
        b = jax.ShapeDtypeStruct(shape[:lead] + (r,) + shape[lead + n_in:], jnp.float32)
        node = out
        for n in names[:-2]:
            node = node.setdefault(n, {})
        node[names[-2]] = {
            "a": nn.LogicallyPartitioned(a, axes[:lead + n_in] + (None,)),
            "b": nn.LogicallyPartitioned(b, axes[:lead] + (None,) + axes[lead + n_in:])}
    if not out:
        raise ValueError(f"LoRA targets {tuple(config.targets)} match no kernel of the model; "
                         "param paths look like encoder/layers_0/attention/query/kernel")
    return out


def init_lora(rng: jax.Array, boxed_params: Any, config: LoraConfig) -> dict:
    """Boxed LoRA params: `a` ~ N(0, 1/fan_in) (fan_in = the kernel's input size), `b` = 0."""
    shapes = lora_shapes(boxed_params, config)
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    keys = jax.random.split(rng, len(flat))
    leaves = []
    for key, (path, box) in zip(keys, flat):
        s = box.unbox()
        if _names(path)[-1] == "a":
            lead = sum(1 for n in box.names if n == LAYERS_AXIS)
            fan_in = int(np.prod(s.shape[lead:-1]))
            value = jax.random.normal(key, s.shape, s.dtype) / np.sqrt(fan_in)
        else:
            value = jnp.zeros(s.shape, s.dtype)
        leaves.append(box.replace_boxed(value))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def delta(a: jax.Array, b: jax.Array, scale: float, kernel_ndim: int) -> jax.Array:
    """`scale * a @ b` in the kernel's shape `[*layers, *in, *out]` (layer dims batched).

    a: [*L, *in, r], b: [*L, r, *out]; the number of layer dims follows from the kernel's rank.
    """
    n_lead = a.ndim + b.ndim - 2 - kernel_ndim
    lead_shape = a.shape[:n_lead]
    in_shape, out_shape = a.shape[n_lead:-1], b.shape[n_lead + 1:]
    a2 = a.reshape(lead_shape + (int(np.prod(in_shape)), a.shape[-1]))      # [*L, in, r]
    b2 = b.reshape(lead_shape + (b.shape[n_lead], int(np.prod(out_shape))))  # [*L, r, out]
    return (scale * jnp.matmul(a2, b2)).reshape(lead_shape + in_shape + out_shape)


def merge(params: Mapping, lora: Mapping, config: LoraConfig) -> dict:
    """Base params with every LoRA target replaced by `W + scale * a @ b` (unboxed trees).

    Works on jax or numpy arrays, inside or outside jit; the result has the base tree's structure
    and dtypes, so it is what the family's Model, `save_params` and the HF export consume.
    """
    def walk(p, l, where):
        out = {}
        for k, v in p.items():
            if k in l and isinstance(v, Mapping) and "kernel" in v and \
                    set(l[k]) == {"a", "b"}:
                kernel = v["kernel"]
                d = delta(jnp.asarray(l[k]["a"]), jnp.asarray(l[k]["b"]), config.scale,
                          len(kernel.shape))
                if d.shape != tuple(kernel.shape):
                    raise ValueError(f"LoRA {where}{k}: delta {d.shape} != kernel {kernel.shape}")
                out[k] = {**v, "kernel": (kernel + d.astype(kernel.dtype))}
            elif k in l and isinstance(v, Mapping):
                out[k] = walk(v, l[k], f"{where}{k}/")
            else:
                out[k] = v
        extra = set(l) - set(p)
        if extra:
            raise ValueError(f"LoRA params {sorted(extra)} under '{where}' have no base params")
        return out

    return walk(params, lora, "")


def num_lora_params(boxed_params: Any, config: LoraConfig) -> int:
    """Parameters LoRA adds: `rank * (fan_in + fan_out)` per target kernel and layer."""
    return int(sum(np.prod(b.unbox().shape) for b in jax.tree_util.tree_leaves(
        lora_shapes(boxed_params, config), is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))))
