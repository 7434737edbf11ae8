"""`ProteinDataSource`: the seqio DataSource of every pretraining task, {"id", "sequence"} records.

It reads TFRecord shards (`protlm.data.shards`) with native tf.data ops, so the training iterator
can be checkpointed and restored without re-reading what it consumed. A pattern may name
  * a shard directory written by `tools/shard_fasta.py` (train and validation splits from it),
  * shard files (`*.tfrecord`; validation from the validation pattern or their shard directory),
  * plain FASTA files or globs (small data, the demo): converted once, by the same Beam pipeline
    and rules as `tools/shard_fasta.py` (id-hash split, no dedup), into shards under
    `$PROTLM_DATA_CACHE` (default `~/.cache/protlm/fasta_shards`), keyed by the files' paths, sizes
    and modification times. Without a validation pattern the validation split is the 1 % id-hash
    held-out split (`protlm.data.splits`); with one, each pattern is read whole. Every host converts
    its own copy unless the cache is on a shared file system: for pod-scale data run
    `tools/shard_fasta.py` once instead.
Patterns are resolved when a dataset is built (env vars and gin can be set late).

Sharding: seqio passes a `ShardInfo` when there are at least as many files as shards; each host
then reads every `num_shards`-th file; with fewer files, seqio shards the example stream.
Shuffling: file order is shuffled per epoch (seeded) and up to `cycle_length` files are
interleaved one record at a time; the task then shuffles examples in a buffer.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from typing import Callable, Sequence

import seqio
import tensorflow as tf

from protlm.data import shards
from protlm.data import splits as splits_lib
from protlm.data.fasta import expand_paths

log = logging.getLogger(__name__)
PatternLike = str | Sequence[str] | Callable[[], str | Sequence[str] | None] | None
FASTA_CACHE_SHARDS = 16   # train shards of a converted FASTA glob: enough files for 16 hosts
_CACHE_FORMAT = 1         # bump when the conversion changes


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The TFRecord files of each split."""

    train: tuple[str, ...]
    validation: tuple[str, ...]


def cache_root() -> pathlib.Path:
    """Where converted FASTA globs live: `$PROTLM_DATA_CACHE` or ~/.cache/protlm/fasta_shards."""
    root = os.environ.get("PROTLM_DATA_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "protlm" / "fasta_shards"


def _fingerprint(files: Sequence[str], fraction: float, num_shards: int) -> str:
    entries = []
    for path in files:
        stat = tf.io.gfile.stat(path)
        entries.append([os.path.abspath(path) if "://" not in path else path, stat.length, stat.mtime_nsec])
    blob = json.dumps({"files": entries, "fraction": fraction, "shards": num_shards,
                       "format": _CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def fasta_to_shards(files: Sequence[str], validation_fraction: float, num_shards: int = FASTA_CACHE_SHARDS) -> str:
    """The shard directory of FASTA `files` (converted now unless already cached).

    Args:
      files: FASTA files.
      validation_fraction: the id-hash held-out split written beside the train shards.
      num_shards: train shards (1 keeps the input order: for validation sets read whole).
    """
    from protlm.data import shard_pipeline  # pylint: disable=import-outside-toplevel

    out = str(cache_root() / _fingerprint(files, validation_fraction, num_shards))
    if shards.is_shard_dir(out):
        return out
    log.info("converting %d FASTA file(s) (%s%s) into TFRecord shards at %s, once: training reads "
             "shards natively and checkpoints its position in them", len(files), files[0],
             ", ..." if len(files) > 1 else "", out)
    config = shard_pipeline.ShardConfig(inputs=tuple(files), output_dir=out, num_shards=num_shards,
                                        validation_fraction=validation_fraction)
    beam_log = logging.getLogger("apache_beam")
    level = beam_log.level
    beam_log.setLevel(logging.WARNING)   # its INFO lines say nothing a trainer's user can act on
    try:
        report = shard_pipeline.run(config, ["--direct_num_workers=1"])
    except FileExistsError:
        if shards.is_shard_dir(out):   # another process converted the same files first
            return out
        raise
    finally:
        beam_log.setLevel(level)
    log.info("%s", shard_pipeline.summary_line(report))
    return out


def _resolve(pattern: PatternLike):
    return pattern() if callable(pattern) else pattern


def _shard_files(value, what: str, fraction: float) -> tuple[str, tuple[str, ...]]:
    """(kind, files) of a pattern value: "dir" (a shard directory), "shards" or "fasta"."""
    if isinstance(value, str) and "," not in value and shards.is_shard_dir(value):
        return "dir", (value,)
    files = expand_paths(value)
    tfrecords = [f for f in files if f.endswith(shards.SUFFIX)]
    if tfrecords and len(tfrecords) != len(files):
        raise ValueError(f"{what} mixes TFRecord shards and other files ({files[:3]}...); "
                         "give either a FASTA glob or the shards of tools/shard_fasta.py")
    return ("shards" if tfrecords else "fasta"), tuple(files)


def resolve_shards(train_pattern: PatternLike, validation_pattern: PatternLike = None,
                   validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION,
                   hint: str = "") -> ShardSet:
    """The shard files of both splits for the patterns of a source (see the module docstring)."""
    train, validation = _resolve(train_pattern), _resolve(validation_pattern)
    if not train:
        raise ValueError(f"no FASTA pattern configured for this task. {hint}".strip())
    kind, files = _shard_files(train, "the training pattern", validation_fraction)
    own_validation: tuple[str, ...] = ()
    if kind == "dir":
        train_files = tuple(shards.split_files(files[0], "train"))
        own_validation = tuple(shards.split_files(files[0], "validation"))
    elif kind == "shards":
        train_files = files
        parents = {os.path.dirname(f) for f in files}
        if len(parents) == 1 and shards.is_shard_dir(parents.pop()):
            own_validation = tuple(shards.split_files(os.path.dirname(files[0]), "validation"))
    else:
        cached = fasta_to_shards(files, 0.0 if validation else validation_fraction)
        train_files = tuple(shards.split_files(cached, "train"))
        own_validation = tuple(shards.split_files(cached, "validation"))
    if validation:
        vkind, vfiles = _shard_files(validation, "the validation pattern", 0.0)
        if vkind == "dir":
            own_validation = tuple(shards.split_files(vfiles[0], "validation"))
        elif vkind == "shards":
            own_validation = vfiles
        else:   # a FASTA validation set is read whole: converted with no held-out split
            own_validation = tuple(shards.split_files(fasta_to_shards(vfiles, 0.0, num_shards=1), "train"))
    elif kind == "shards" and not own_validation:
        raise ValueError(f"{files[0]}...: TFRecord shards outside a shard directory have no validation "
                         "split; set the validation pattern (VALIDATION_FASTA_PATTERN)")
    return ShardSet(train=train_files, validation=own_validation)


class ProteinDataSource(seqio.DataSource):
    """Streams {"id": string, "sequence": string} (upper-case residues) from TFRecord shards."""

    def __init__(
        self,
        train_pattern: PatternLike,
        validation_pattern: PatternLike = None,
        validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION,
        cycle_length: int = 16,
        missing_pattern_hint: str = "",
    ):
        """Args:
        train_pattern: a shard directory, shard files, or FASTA glob / list / comma list, or a
          zero-argument callable returning one (resolved when the dataset is built).
        validation_pattern: the same for a separate validation set; None = the shards' own
          validation split (for FASTA: the id-hash held-out split).
        validation_fraction: size of the id-hash held-out split of a FASTA glob.
        cycle_length: number of files read in an interleaved way.
        missing_pattern_hint: how to set the pattern, shown when it resolves to nothing.
        """
        super().__init__(splits=splits_lib.SPLITS)
        self._train_pattern = train_pattern
        self._validation_pattern = validation_pattern
        self._fraction = validation_fraction
        self._cycle_length = cycle_length
        self._hint = missing_pattern_hint

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return False

    def shard_set(self) -> ShardSet:
        return resolve_shards(self._train_pattern, self._validation_pattern, self._fraction, self._hint)

    def list_shards(self, split: str) -> Sequence[str]:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {self.splits}")
        files = list(getattr(self.shard_set(), split))
        if not files:
            raise splits_lib.EmptySplitError(
                f"the {split} split of {_resolve(self._train_pattern)!r} has no records (a small corpus "
                f"puts none in the {self._fraction:.0%} id-hash held-out split); set a validation "
                "pattern (VALIDATION_FASTA_PATTERN) or use a larger corpus")
        return files

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ) -> tf.data.Dataset:
        files = self.list_shards(split)
        if shard_info is not None and shard_info.num_shards > 1:
            files = files[shard_info.index :: shard_info.num_shards]
        files_ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        records = files_ds.interleave(
            tf.data.TFRecordDataset, cycle_length=max(1, min(self._cycle_length, len(files))),
            block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return records.map(shards.decode, num_parallel_calls=tf.data.AUTOTUNE)


def env_pattern(var: str, default: str | None = None) -> Callable[[], str | None]:
    """A lazily evaluated pattern: `$var` when set (and non-empty), else `default`."""

    def resolve():
        return os.environ.get(var) or default

    resolve.__name__ = f"env_{var}"
    return resolve
