"""Repeating a layer N times: unrolled (`layers_{i}`) or `nn.scan` (`layers`, leading axis); or
one shared layer applied N times (cross-layer sharing, `shared=True`: one set of params).

Both with an optional remat policy by name.

A repeated layer class must have `__call__(self, x, *args) -> (x, None)` where `args` are the same
for every layer (biases, masks, encoder outputs); per-call options such as `deterministic` are
module attributes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

# Activations named with `jax.ad_checkpoint.checkpoint_name` in protlm.layers (MaxText's names).
QKV = ("query_proj", "key_proj", "value_proj")
MLP = ("mlpwi", "mlpwo")


def _save(*names: str):
    return jax.checkpoint_policies.save_only_these_names(*names)


def _offload(*names: str):
    """Keep nothing on device; move `names` to host memory in the forward pass, back for the
    backward one (TPU v4 and later; MaxText `*_offloaded`)."""
    return jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=list(names),
        offload_src="device", offload_dst="pinned_host")


# Remat policies by name: what a layer keeps for the backward pass (everything else is
# recomputed; the layer input is always kept). Fewer saved names = less HBM, more recompute.
#   none     keep every activation (no remat)
#   full     recompute the whole layer (only its input is kept)
#   minimal  t5x default: keep matmul outputs without batch dims (projections, MLP)
#   dots_saveable  every matmul output, attention scores included
#   save_proj  the projections and both MLP matmuls, by name
#   save_dot_except_mlpwi, save_dot_except_mlp, save_qkv_proj, save_out_proj,
#   minimal_with_context: MaxText's named policies (decoders.py)
#   minimal_offloaded, save_qkv_proj_offloaded: the same names offloaded to host memory
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "save_proj": _save(*QKV, "out_proj", *MLP),
    "minimal_with_context": _save(*QKV, "out_proj", "context", *MLP),
    "save_dot_except_mlpwi": _save(*QKV, "out_proj", "mlpwo"),
    "save_dot_except_mlp": _save(*QKV, "out_proj"),
    "save_qkv_proj": _save(*QKV),
    "save_out_proj": _save("out_proj"),
    "minimal_offloaded": _offload(*QKV, "out_proj", *MLP),
    "save_qkv_proj_offloaded": _offload(*QKV),
}


def check_remat_policy(name: str) -> None:
    """Raises ValueError naming the known policies when `name` is unknown."""
    if name not in REMAT_POLICIES:
        raise ValueError(f"unknown remat_policy {name!r}; known: {sorted(REMAT_POLICIES)}")


def repeat_layer(layer_cls: type[nn.Module], num_layers: int, *, scan: bool, remat_policy: str,
                 num_args: int, shared: bool = False, name: str | None = None
                 ) -> Callable[..., Callable[..., jax.Array]]:
    """Returns `make(**layer_kwargs)` building the layer stack inside a compact parent.

    `make` returns a callable `stack(x, *args, hidden_states=None) -> x` that applies the layers in
    order (unrolled, a list passed as `hidden_states` receives each layer's input).

    Independent layers (default) create params `layers_{i}/...` (unrolled) or `layers/...` with a
    leading axis of size `num_layers` named `'layers'` (scan).

    `shared=True` is cross-layer sharing: ONE layer, one set of params named `name` (default
    `layer`), applied `num_layers` times; the tree is the same with or without `scan` (no
    `layers` axis). Scanned, the params are broadcast (`variable_broadcast`): every step reads the
    same weights and the backward pass sums their gradients over the repeats. Dropout draws new
    masks at every repeat either way.
    """
    check_remat_policy(remat_policy)
    cls = layer_cls
    if remat_policy != "none":
        cls = nn.remat(layer_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)

    def make(**kwargs):
        if scan:
            if shared:
                lifted = nn.scan(cls, variable_broadcast="params",
                                 split_rngs={"params": False, "dropout": True},
                                 in_axes=(nn.broadcast,) * num_args, length=num_layers)
            else:
                lifted = nn.scan(cls, variable_axes={"params": 0, "cache": 0},
                                 split_rngs={"params": True, "dropout": True},
                                 in_axes=(nn.broadcast,) * num_args, length=num_layers,
                                 metadata_params={nn.PARTITION_NAME: "layers"})
            scanned = lifted(name=name or "layers", **kwargs)

            def run_scanned(x, *args, hidden_states: list | None = None):
                if hidden_states is not None:
                    raise ValueError("hidden states need the unrolled stack (scan_layers=False)")
                x, _ = scanned(x, *args)
                return x
            return run_scanned
        if shared:
            layers = [cls(name=name or "layer", **kwargs)] * num_layers
        else:
            layers = [cls(name=f"layers_{i}", **kwargs) for i in range(num_layers)]

        def run(x, *args, hidden_states: list | None = None):
            for layer in layers:
                if hidden_states is not None:
                    hidden_states.append(x)
                x, _ = layer(x, *args)
            return x
        return run
    return make
