"""Feed-forward block: relu/gelu (T5 v1.0, BERT) and gated variants (T5 v1.1 gated-gelu, Ankh)."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from protlm.layers.axes import BATCH_LENGTH_MLP, constrain
from protlm.layers.dense import DenseGeneral, Initializer

# Activation names as HF configs spell them: "gelu" is the exact (erf) GELU of BERT,
# "gelu_new" the tanh approximation of T5 v1.1's gated-gelu.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Activation by name; raises naming the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MlpBlock(nn.Module):
    """`wo(dropout(prod_i act_i(wi_i(x))))`.

    One activation gives one input kernel `wi`; several give `wi_0, wi_1, ...` whose activated
    outputs are multiplied (gated). Params: `wi/kernel [embed, mlp]`, `wo/kernel [mlp, embed]`
    (+ biases when `use_bias`).

    Attributes:
      intermediate_dim: mlp width (d_ff).
      activations: e.g. `("relu",)` (T5 v1.0), `("gelu",)` (BERT), `("gelu_new", "linear")` (gated).
      intermediate_dropout_rate: dropout between wi and wo (T5; BERT has none there).
      use_bias: BERT-style biases.
    """

    intermediate_dim: int
    activations: Sequence[str] = ("relu",)
    intermediate_dropout_rate: float = 0.0
    use_bias: bool = False
    dtype: Any = jnp.float32
    wi_init: Initializer = nn.initializers.lecun_normal()
    wo_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        """`[batch, length, embed] -> [batch, length, embed]`."""
        embed = x.shape[-1]
        dense = functools.partial(DenseGeneral, dtype=self.dtype, use_bias=self.use_bias)
        hidden = None
        for i, act in enumerate(self.activations):
            name = "wi" if len(self.activations) == 1 else f"wi_{i}"
            h = dense(self.intermediate_dim, kernel_axes=("embed", "mlp"), bias_axes=("mlp",),
                      kernel_init=self.wi_init, name=name)(x)  # [batch, length, mlp]
            h = get_activation(act)(h)
            hidden = h if hidden is None else hidden * h
        hidden = checkpoint_name(hidden, "mlpwi")
        hidden = constrain(hidden, BATCH_LENGTH_MLP)
        hidden = nn.Dropout(self.intermediate_dropout_rate, broadcast_dims=())(
            hidden, deterministic=deterministic)
        out = dense(embed, kernel_axes=("mlp", "embed"), bias_axes=("embed",),
                    kernel_init=self.wo_init, name="wo")(hidden)  # [batch, length, embed]
        return checkpoint_name(out, "mlpwo")
