"""Name + layout rules between protlm's unscanned param tree and a PyTorch state dict.

One `Rule` per tensor: the HF key, the flax path, and how the array changes layout. Layouts:

* `copy`       same array (embeddings, norm scales, biases of width embed/mlp/vocab).
* `transpose`  2-D transpose: dense kernels `[in, out]` <-> torch Linear `[out, in]`; T5's
               relative bias `[heads, buckets]` <-> `[buckets, heads]`.
* `heads_in`   attention q/k/v kernel `[embed, heads, kv]` <-> `[heads*kv, embed]`.
* `heads_out`  attention output kernel `[heads, kv, embed]` <-> `[embed, heads*kv]`.
* `flatten`    q/k/v bias `[heads, kv]` <-> `[heads*kv]`.
* `expand`     a vector `[d]` <-> `[1, 1, d]` (XLNet's `mask_emb`).

Every transform is a reshape and/or transpose, so conversions are exact in both directions
(bit-identical round trips); dtype casts happen only at the file boundary. A rule may also
`scale` the tensor it writes (Transformer-XL's input embedding, scaled by sqrt(d_model) where the
HF model has no scale); several rules may name one param: export writes every one, import reads
the first and checks the others against it (`protlm.hf.importer`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

LAYOUTS = ("copy", "transpose", "heads_in", "heads_out", "flatten", "expand")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One tensor: `hf_key` in the torch state dict <-> `path` in the flax param tree."""

    hf_key: str
    path: tuple[str, ...]
    layout: str = "copy"
    scale: float = 1.0   # the HF tensor is the param times `scale`

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; one of {LAYOUTS}")
        if self.scale <= 0:
            raise ValueError(f"{self.hf_key}: scale must be > 0, got {self.scale}")

    @property
    def flax_name(self) -> str:
        return "/".join(self.path)

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """HF shape of a flax param of `shape`."""
        shape = tuple(int(s) for s in shape)
        if self.layout == "copy":
            return shape
        if self.layout == "transpose":
            _check_rank(self, shape, 2)
            return shape[::-1]
        if self.layout == "heads_in":
            _check_rank(self, shape, 3)
            return (shape[1] * shape[2], shape[0])
        if self.layout == "heads_out":
            _check_rank(self, shape, 3)
            return (shape[2], shape[0] * shape[1])
        if self.layout == "expand":
            _check_rank(self, shape, 1)
            return (1, 1) + shape
        _check_rank(self, shape, 2)  # flatten
        return (shape[0] * shape[1],)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        """flax param -> HF tensor (a view where numpy can make one, unless scaled)."""
        y = self._layout_to_hf(np.asarray(x))
        return y if self.scale == 1.0 else y * np.asarray(self.scale, y.dtype)

    def _layout_to_hf(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "copy":
            return x
        if self.layout == "transpose":
            return x.T
        if self.layout == "heads_in":
            return x.reshape(x.shape[0], -1).T
        if self.layout == "heads_out":
            return x.reshape(-1, x.shape[-1]).T
        if self.layout == "expand":
            return x.reshape((1, 1) + x.shape)
        return x.reshape(-1)

    def from_hf(self, y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """HF tensor -> flax param of `shape`, checking the HF shape first."""
        y = np.asarray(y)
        expected = self.hf_shape(shape)
        if tuple(y.shape) != expected:
            raise ValueError(f"{self.hf_key}: shape {tuple(y.shape)} does not match {expected} "
                             f"expected for {self.flax_name} {tuple(shape)} (config mismatch?)")
        if self.scale != 1.0:
            y = y / np.asarray(self.scale, y.dtype)
        if self.layout == "copy":
            out = y
        elif self.layout == "transpose":
            out = y.T
        elif self.layout in ("heads_in", "heads_out"):
            out = y.T.reshape(shape)
        else:   # flatten, expand
            out = y.reshape(shape)
        return np.ascontiguousarray(out)


def _check_rank(rule: Rule, shape: tuple[int, ...], rank: int) -> None:
    if len(shape) != rank:
        raise ValueError(f"{rule.flax_name}: layout {rule.layout} needs a rank-{rank} param, got {shape}")


def get_path(tree: Mapping, path: tuple[str, ...]):
    """`tree[p0][p1]...`, with an error naming the missing part."""
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            have = sorted(node) if isinstance(node, Mapping) else type(node).__name__
            raise KeyError(f"param {'/'.join(path)} not found: no {key!r} under "
                           f"{'/'.join(path[:i]) or '<root>'} (has {have})")
        node = node[key]
    return node


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    """Sets `tree[p0][p1]... = value`, creating dicts."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def flatten_paths(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """`{path: leaf}` of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten_paths(value, prefix + (str(key),)))
        else:
            out[prefix + (str(key),)] = value
    return out


def check_rules_cover(rules: list[Rule], param_paths: set[tuple[str, ...]], what: str) -> None:
    """Raises unless the rules name exactly the params of the tree (both directions)."""
    ruled = {r.path for r in rules}
    missing = sorted("/".join(p) for p in param_paths - ruled)
    extra = sorted("/".join(p) for p in ruled - param_paths)
    if missing or extra:
        raise ValueError(f"{what}: HF mapping and param tree disagree; params without an HF name: "
                         f"{missing[:20]}{' ...' if len(missing) > 20 else ''}; mapped names not in "
                         f"the params: {extra[:20]}{' ...' if len(extra) > 20 else ''}")
