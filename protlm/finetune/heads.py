"""Task heads on top of an encoder's last layer (`Model.encode`): the paper's tasks.

Per residue (secondary structure Q3 / Q8): `linear` (one dense layer) or `cnn` (the paper's
two-layer CNN: conv k=7 to 32 channels, ReLU, dropout 0.25, conv k=7 to the classes; also the
frozen-embedding probe of `protlm.downstream.probes`).
Per protein (localization Q10, membrane Q2): `mean` (masked mean pooling, then the paper's FFN:
dense 32, dropout 0.25, ReLU, dense) or `light_attention` (Staerk et al. 2021: a conv gives values
and attention logits per residue, softmax over the residues; the attention-weighted sum and the
max over the values are concatenated and fed to the FFN).

Every head is `__call__(h [B, L, D], mask [B, L], deterministic) -> logits` ([B, L, C] per
residue, [B, C] per protein) and names the logical axes of its params (input width `embed`, the
small head dims replicated).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_kernel = nn.initializers.lecun_normal()
_zeros = nn.initializers.zeros_init()


def _dense(features: int, in_axis, name: str) -> nn.Dense:
    return nn.Dense(features, name=name,
                    kernel_init=nn.with_logical_partitioning(_kernel, (in_axis, None)),
                    bias_init=nn.with_logical_partitioning(_zeros, (None,)))


def _conv(features: int, kernel_size: int, in_axis, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel_size,), padding="SAME", name=name,
                   kernel_init=nn.with_logical_partitioning(_kernel, (None, in_axis, None)),
                   bias_init=nn.with_logical_partitioning(_zeros, (None,)))


class ResidueLinear(nn.Module):
    """One dense layer per residue."""

    num_classes: int

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        del mask, deterministic
        return _dense(self.num_classes, "embed", "out")(h)   # [B, L, C]


class ResidueCNN(nn.Module):
    """The paper's two-layer CNN over the residue axis (padding zeroed before each conv, so a
    protein's logits do not depend on its batch's padding)."""

    num_classes: int
    hidden: int = 32
    kernel_size: int = 7
    dropout: float = 0.25

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        valid = mask[..., None].astype(h.dtype)                                      # [B, L, 1]
        x = _conv(self.hidden, self.kernel_size, "embed", "conv1")(h * valid)        # [B, L, H]
        x = nn.Dropout(self.dropout)(nn.relu(x), deterministic=deterministic)
        return _conv(self.num_classes, self.kernel_size, None, "conv2")(x * valid)   # [B, L, C]


class ProteinFFN(nn.Module):
    """Dense -> dropout -> ReLU -> dense on one vector per protein (the paper's FFN)."""

    num_classes: int
    hidden: int = 32
    dropout: float = 0.25
    in_axis: str | None = "embed"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        x = _dense(self.hidden, self.in_axis, "hidden")(x)                           # [B, H]
        x = nn.relu(nn.Dropout(self.dropout)(x, deterministic=deterministic))
        return _dense(self.num_classes, None, "out")(x)                             # [B, C]


def masked_mean(h: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, L, D], [B, L] -> [B, D]: the mean over the residues (`protlm.embed`'s per-protein)."""
    m = mask[..., None].astype(h.dtype)
    return jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


class MeanPool(nn.Module):
    """Masked mean over the residues, then the FFN."""

    num_classes: int
    hidden: int = 32
    dropout: float = 0.25

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        return ProteinFFN(self.num_classes, self.hidden, self.dropout, name="ffn")(
            masked_mean(h, mask), deterministic)


class LightAttention(nn.Module):
    """Light attention (Staerk et al. 2021, Bioinformatics Advances): values and attention logits
    from two convolutions over the residues; per channel, a softmax over the residues weighs the
    values; `[attention-pooled, max-pooled]` goes to the FFN. `channels` = 1024 in the paper (its
    embedding width); 0 keeps the encoder's width."""

    num_classes: int
    channels: int = 0
    kernel_size: int = 9
    hidden: int = 32
    dropout: float = 0.25
    conv_dropout: float = 0.25

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        c = self.channels or h.shape[-1]
        valid = mask[..., None]                                                      # [B, L, 1]
        x = h * valid.astype(h.dtype)
        values = _conv(c, self.kernel_size, "embed", "values")(x)                    # [B, L, C']
        values = nn.Dropout(self.conv_dropout)(values, deterministic=deterministic)
        logits = _conv(c, self.kernel_size, "embed", "attention")(x)                 # [B, L, C']
        logits = jnp.where(valid, logits, jnp.finfo(logits.dtype).min)
        attended = jnp.sum(values * jax.nn.softmax(logits, axis=1), axis=1)          # [B, C']
        maxed = jnp.max(jnp.where(valid, values, jnp.finfo(values.dtype).min), axis=1)
        pooled = jnp.concatenate([attended, maxed], axis=-1)                         # [B, 2C']
        return ProteinFFN(self.num_classes, self.hidden, self.dropout, in_axis=None,
                          name="ffn")(pooled, deterministic)


# Head name -> (module class, level). The level says what the labels are: one per residue or one
# per protein.
HEADS = {
    "linear": (ResidueLinear, "residue"),
    "cnn": (ResidueCNN, "residue"),
    "mean": (MeanPool, "protein"),
    "light_attention": (LightAttention, "protein"),
}


def make_head(name: str, num_classes: int) -> tuple[nn.Module, str]:
    """(head module, "residue" | "protein") for a head name of `HEADS`."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; expected one of {sorted(HEADS)}")
    cls, level = HEADS[name]
    return cls(num_classes), level
