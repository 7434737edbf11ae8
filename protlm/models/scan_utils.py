"""Convert parameter trees between unrolled `layers_{i}` and scanned `layers` (leading axis).

Works on plain array trees (numpy or jax; unbox `nn.LogicallyPartitioned` first with
`flax.linen.meta.unbox`). Any dict holding `layers_0..layers_{n-1}` is converted, at any depth.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

_LAYER = re.compile(r"^layers_(\d+)$")


def _stack(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs])
                                  if isinstance(xs[0], np.ndarray) else jax.numpy.stack(xs), *trees)


def stack_layers(params: Mapping) -> dict:
    """`{..., layers_0: t0, ..., layers_{n-1}: t}` -> `{..., layers: stacked}` recursively.

    Raises:
      ValueError: when the layer indices are not exactly 0..n-1 or the subtrees differ.
    """
    out: dict = {}
    layer_keys = {}
    for key, value in params.items():
        m = _LAYER.match(str(key))
        if m:
            layer_keys[int(m.group(1))] = key
        else:
            out[key] = stack_layers(value) if isinstance(value, Mapping) else value
    if layer_keys:
        if sorted(layer_keys) != list(range(len(layer_keys))):
            raise ValueError(f"layer indices {sorted(layer_keys)} are not 0..{len(layer_keys) - 1}")
        if "layers" in out:
            raise ValueError("tree has both 'layers' and 'layers_{i}' keys")
        trees = [params[layer_keys[i]] for i in range(len(layer_keys))]
        structs = {jax.tree_util.tree_structure(t) for t in trees}
        if len(structs) != 1:
            raise ValueError("layers_{i} subtrees differ in structure; cannot stack")
        out["layers"] = _stack([dict(t) if isinstance(t, Mapping) else t for t in trees])
    return out


def unstack_layers(params: Mapping) -> dict:
    """Inverse of `stack_layers`: every `layers` subtree with leading axis n -> `layers_{i}`."""
    out: dict = {}
    for key, value in params.items():
        if key == "layers" and isinstance(value, Mapping):
            leaves = jax.tree_util.tree_leaves(value)
            n = leaves[0].shape[0]
            for i in range(n):
                out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], dict(value))
        else:
            out[key] = unstack_layers(value) if isinstance(value, Mapping) else value
    return out
