"""The paper's downstream tasks as fine-tuning data: the splits of `protlm.downstream.datasets`
tokenised by the backbone's family into task batches (`protlm.finetune.model.TASK_KEYS`).

* `secondary_structure`: per residue, 3 states; train FLIP/NetSurfP-2.0 train, validation its
  VALIDATION=True part, test CASP12, TS115, CB513, NEW364 (metric `q3`), as
  `protlm.downstream.secondary_structure`. Unresolved residues weigh 0.
* `localization`: per protein, 10 classes on DeepLoc 1.0 (metric `q10`, test set `DeepLoc`).
* `membrane`: per protein, membrane-bound vs soluble; proteins labelled U weigh 0 (metric `q2`).

`TaskSource` is the trainer's batch source for them (rows shuffled once with `seed`, then read in
order by `protlm.data.batch_sources.ArraySource`, so the data position is the batch index).
Training rows are cropped to `max_length` tokens (the first residues); evaluation never crops.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

from protlm.data.batch_sources import ArraySource
from protlm.downstream import datasets
from protlm.models import registry


@dataclasses.dataclass(frozen=True)
class Task:
    """One downstream task.

    Attributes:
      name: task key of `TASKS`.
      level: "residue" or "protein" (what one label covers).
      num_classes: label classes.
      metric: key of the result JSON (`q3`, `q10`, `q2`), as `protlm.downstream`.
      load: `data_root -> {"train", "validation", <test set>...: records}`.
      test_sets: the split names scored for `metric`.
      label: per-protein tasks: `record -> (label, weight)`.
    """

    name: str
    level: str
    num_classes: int
    metric: str
    load: Callable[[pathlib.Path], dict]
    test_sets: tuple[str, ...]
    label: Optional[Callable[[Any], tuple[int, int]]] = None


def _load_ss(root: pathlib.Path) -> dict:
    sets = datasets.load_secondary_structure(root)
    return {"train": sets["flip_train/3"], "validation": sets["flip_validation/3"],
            **{name: sets[f"{name}/3"] for name in ("CASP12", "TS115", "CB513", "NEW364")}}


def _load_deeploc(root: pathlib.Path) -> dict:
    splits = datasets.load_deeploc(root)
    return {"train": splits["train"], "validation": splits["validation"], "DeepLoc": splits["test"]}


def _membrane(record) -> tuple[int, int]:
    if record.membrane in datasets.MEMBRANE_CLASSES:
        return datasets.MEMBRANE_CLASSES.index(record.membrane), 1
    return 0, 0


TASKS = {
    "secondary_structure": Task("secondary_structure", "residue", len(datasets.SS3_CLASSES), "q3",
                                _load_ss, ("CASP12", "TS115", "CB513", "NEW364")),
    "localization": Task("localization", "protein", len(datasets.LOCATIONS), "q10",
                         _load_deeploc, ("DeepLoc",), lambda r: (r.location, 1)),
    "membrane": Task("membrane", "protein", len(datasets.MEMBRANE_CLASSES), "q2",
                     _load_deeploc, ("DeepLoc",), _membrane),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown fine-tuning task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


def encode(records: Sequence, task: Task, family, length: int) -> dict[str, np.ndarray]:
    """Task batch arrays for `records`, every row padded (or cropped) to `length` tokens."""
    n = len(records)
    keep = length - family.num_special_tokens()
    if keep < 1:
        raise ValueError(f"max_length {length} leaves no room for residues")
    tokens = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    shape = (n, length) if task.level == "residue" else (n,)
    labels, weights = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    for i, r in enumerate(records):
        seq = r.sequence[:keep]
        ids, offset = family.tokenize(seq)
        tokens[i, :len(ids)] = ids
        mask[i, offset:offset + len(seq)] = 1
        if task.level == "residue":
            labels[i, offset:offset + len(seq)] = r.labels[:keep]
            weights[i, offset:offset + len(seq)] = r.mask[:keep]
        else:
            labels[i], weights[i] = task.label(r)
    return {"encoder_input_tokens": tokens, "residue_mask": mask, "labels": labels,
            "label_weights": weights}


@functools.lru_cache(maxsize=4)
def load_splits(task_name: str, data_root: Optional[str], limit: Optional[int]) -> dict:
    """Records of every split of a task (each split subsampled to `limit` when given)."""
    root = pathlib.Path(data_root) if data_root else datasets.default_data_root()
    splits = get_task(task_name).load(root)
    return {k: datasets.subsample(v, limit) for k, v in splits.items()}


@dataclasses.dataclass(frozen=True)
class TaskSource:
    """Trainer batch source of a downstream task (`train` / `validation` splits).

    Attributes:
      task: a `TASKS` name.
      model_config: the backbone's config (its family tokenizes).
      max_length: tokens per training row (specials included).
      data_root: the shared data folder (default `datasets.default_data_root()`).
      limit: first `limit` proteins of each split only (smoke tests).
      seed: the one shuffle of the training rows.
    """

    task: str
    model_config: Any
    max_length: int = 512
    data_root: Optional[str] = None
    limit: Optional[int] = None
    seed: int = 0

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        records = load_splits(self.task, self.data_root, self.limit)[split]
        out = encode(records, get_task(self.task), registry.get_family(self.model_config),
                     self.max_length)
        if split == "train":
            order = np.random.default_rng(self.seed).permutation(len(records))
            out = {k: v[order] for k, v in out.items()}
        return out

    def __call__(self, split, batch_size, shard_index=0, num_shards=1, repeat=True):
        source = ArraySource(self.arrays("train"), self.arrays("validation"))
        stream = source(split, batch_size, shard_index, num_shards, repeat)
        stream.description = {**stream.description, "task": self.task,
                              "max_length": self.max_length, "limit": self.limit,
                              "seed": self.seed}
        return stream

    def batch_shapes(self, model_config, batch_size: int) -> dict:
        """Shapes of a batch without reading data (dry runs)."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        del model_config
        level = get_task(self.task).level
        row = (batch_size, self.max_length)
        return {"encoder_input_tokens": jax.ShapeDtypeStruct(row, jnp.int32),
                "residue_mask": jax.ShapeDtypeStruct(row, jnp.int32),
                "labels": jax.ShapeDtypeStruct(row if level == "residue" else row[:1], jnp.int32),
                "label_weights": jax.ShapeDtypeStruct(row if level == "residue" else row[:1],
                                                      jnp.int32)}
