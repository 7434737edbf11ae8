"""The model-family interface: everything the rest of protlm asks about a family, in one object.

A family (ProtT5, ProtBert, ...) is one unit of code:

* a config dataclass (`ModelConfig` subclass) with the common names `hidden_size`, `num_layers`,
  `num_heads`, `vocab_size`, `max_length`, exact `num_params()` / `param_counts()` and
  `flops_per_example(lengths)` / `flops_per_token(lengths)` with one signature, where `lengths` are
  the task feature lengths (`{"inputs": 512, "targets": 512}`; MLM: `{"inputs": 512}`);
* the Flax modules (`protlm/models/<family>.py`);
* a Model class (`protlm.models.model.BaseModel`: loss, eval, score, predict, encode);
* a `Family` object (this file's interface) naming its objectives (seqio tasks), batch keys,
  tokenizer for embedding, and where its Hugging Face conversion lives (`protlm/hf/<family>.py`,
  imported lazily: it is an optional extra).

`protlm.models.registry` holds the one table of families; trainer, embed, export, import, summary,
benchmarks and tests ask `registry.get_family(config)` instead of checking types.
Adding a family: see docs/ARCHITECTURE.md, "How to add a family".
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

FeatureLengths = Mapping[str, int]


class ModelConfig(abc.ABC):
    """Base of every family's frozen config dataclass.

    Subclasses set `family_name` (the key in `protlm.models.registry.FAMILIES` and in a protlm
    `config.json`) and expose the common names below as fields or properties.
    """

    family_name: ClassVar[str]

    # ---- common names (fields or properties of the subclass) ----
    hidden_size: int        # width of the representation `embed` returns
    num_layers: int         # layers of the stack `embed` reads (hidden states 0..num_layers)
    num_heads: int
    vocab_size: int

    @property
    def max_length(self) -> int | None:
        """Longest token sequence the model accepts (absolute positions); None = unbounded."""
        return None

    # ---- sizes ----
    @abc.abstractmethod
    def num_params(self) -> int:
        """Exact parameter count of the pretraining model protlm trains."""

    def param_counts(self) -> dict[str, int]:
        """Exact counts keyed by the Hugging Face class with the same parameters."""
        return {"total": self.num_params()}

    @abc.abstractmethod
    def flops_per_example(self, lengths: FeatureLengths) -> float:
        """Training FLOPs (forward + backward) of one example with these task feature lengths."""

    def tokens_per_example(self, lengths: FeatureLengths) -> int:
        """Tokens of one example that the throughput and MFU are counted over."""
        return int(sum(lengths.values()))

    def flops_per_token(self, lengths: FeatureLengths) -> float:
        """Training FLOPs per token: `flops_per_example / tokens_per_example`."""
        return float(self.flops_per_example(lengths)) / self.tokens_per_example(lengths)


def int_shapes(keys: Sequence[str], batch_size: int, length: int) -> dict:
    """`{key: ShapeDtypeStruct([batch_size, length], int32)}` for a group of batch keys."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    return {k: jax.ShapeDtypeStruct((batch_size, int(length)), jnp.int32) for k in keys}


class Family(abc.ABC):
    """One model family. Subclasses are stateless singletons registered in `registry.FAMILIES`.

    Attributes:
      name: family key ("t5", "bert", ...), as `ModelConfig.family_name`.
      config_cls: the config dataclass.
      presets: `{preset name: config field values}` (`protlm.models.get_config(name)`).
      tasks: the seqio tasks producing this family's batches (the first is the default).
      hf_module: module with this family's Hugging Face conversion (`SPEC`, a
        `protlm.hf.spec.HFSpec`), imported only when asked.
      pad_id: the vocabulary's padding id (0 everywhere but ProtXLNet's sentencepiece, 5).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    presets: ClassVar[Mapping[str, Mapping[str, Any]]]
    tasks: ClassVar[tuple[str, ...]]
    hf_module: ClassVar[str]
    pad_id: ClassVar[int] = 0   # the id `protlm.embed` pads token batches with

    # ---- model ----
    @abc.abstractmethod
    def model(self, config):
        """The Model object (`protlm.models.model.BaseModel`) of `config`."""

    # ---- data ----
    @abc.abstractmethod
    def batch_shapes(self, config, lengths: FeatureLengths, batch_size: int,
                     pack: bool) -> dict:
        """Batch `{key: jax.ShapeDtypeStruct}` the model consumes for these task feature lengths
        (seqio feature-converter keys; `pack` adds segment ids and positions)."""

    @abc.abstractmethod
    def feature_lengths(self, batch_shapes: Mapping) -> dict[str, int]:
        """Inverse of `batch_shapes`: task feature lengths of a batch (arrays or shapes)."""

    def default_lengths(self, length: int) -> dict[str, int]:
        """Task feature lengths for sequences of `length` tokens (summary, dry runs)."""
        return {"inputs": int(length)}

    @abc.abstractmethod
    def array_batch(self, sequences: Sequence[str], lengths: FeatureLengths,
                    seed: int = 0) -> dict[str, np.ndarray]:
        """The family's pretraining objective on `sequences` as numpy arrays (no TensorFlow):
        array-fed runs, benchmarks and tests (`protlm.data.arrays`)."""

    # ---- embedding ----
    @abc.abstractmethod
    def tokenize(self, sequence: str) -> tuple[np.ndarray, int]:
        """Token ids with the family's special tokens, and the index of the first residue.

        `protlm.embed` keeps positions `offset .. offset + len(sequence)` (the residues) and drops
        the special tokens before pooling.
        """

    def num_special_tokens(self) -> int:
        """Special tokens `tokenize` adds around a sequence."""
        return len(self.tokenize("A")[0]) - 1

    # ---- Hugging Face ----
    def hf(self):
        """This family's `protlm.hf.spec.HFSpec` (imports the conversion module)."""
        return importlib.import_module(self.hf_module).SPEC

    # ---- configs ----
    def config(self, **fields):
        """A config of this family from field values (unknown names raise, naming them)."""
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = set(fields) - names
        if unknown:
            raise ValueError(f"{self.config_cls.__name__} has no fields {sorted(unknown)}")
        return self.config_cls(**fields)

    def __repr__(self) -> str:
        return f"<family {self.name}>"
