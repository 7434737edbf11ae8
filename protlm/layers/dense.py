"""DenseGeneral with logical axis names on the kernel (and bias)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Initializer = Callable[..., jax.Array]


def _canonical(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, int) else tuple(x)


class DenseGeneral(nn.Module):
    """A linear map over the trailing `axis` of the input into `features` (one or more dims).

    The kernel has shape `[*in_dims, *features]`, is float32 (`param_dtype`) and is named with
    `kernel_axes` (one logical name per kernel dim). The matmul runs in `dtype`.

    Attributes:
      features: output dims, e.g. `(heads, head_dim)` for a query projection.
      axis: input axes contracted, e.g. `(-2, -1)` for an attention output projection.
      kernel_axes: logical names of the kernel dims.
      use_bias: add a bias of shape `features` (BERT) named `bias_axes`.
      kernel_init: initializer of the kernel; called with the kernel shape.
    """

    features: int | Sequence[int]
    axis: int | Sequence[int] = -1
    kernel_axes: tuple[str | None, ...] = ()
    use_bias: bool = False
    bias_axes: tuple[str | None, ...] = ()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Applies the map: `[..., *in_dims] -> [..., *features]`."""
        features = _canonical(self.features)
        axis = tuple(a % inputs.ndim for a in _canonical(self.axis))
        in_shape = tuple(inputs.shape[a] for a in axis)
        kernel_shape = in_shape + features
        if len(self.kernel_axes) != len(kernel_shape):
            raise ValueError(
                f"{self.name}: kernel_axes {self.kernel_axes} must name all {len(kernel_shape)} "
                f"kernel dims {kernel_shape}")
        kernel = self.param("kernel",
                            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                            kernel_shape, self.param_dtype)
        kernel = jnp.asarray(kernel, self.dtype)
        inputs = jnp.asarray(inputs, self.dtype)
        contract = (axis, tuple(range(len(axis))))
        out = lax.dot_general(inputs, kernel, (contract, ((), ())))
        if self.use_bias:
            if len(self.bias_axes) != len(features):
                raise ValueError(f"{self.name}: bias_axes {self.bias_axes} must name {features}")
            bias = self.param("bias", nn.with_logical_partitioning(self.bias_init, self.bias_axes),
                              features, self.param_dtype)
            out = out + jnp.asarray(bias, self.dtype)
        return out


def normal(stddev: float) -> Initializer:
    """Normal(0, stddev) initializer over the whole kernel (T5 / BERT style)."""
    return nn.initializers.normal(stddev=float(stddev))


def fan_in_normal(fan_in: int, scale: float = 1.0) -> Initializer:
    """Normal with std `scale * fan_in**-0.5` (T5's rule, e.g. wi: d_model**-0.5)."""
    return normal(scale * float(np.sqrt(1.0 / fan_in)))
