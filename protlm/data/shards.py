"""The shard format: TFRecord files of `tf.train.Example` {"id": bytes, "sequence": bytes}.

Written by `protlm.data.shard_pipeline` (Apache Beam), read natively by tf.data
(`tf.data.TFRecordDataset`), so a training iterator over them can be checkpointed: restoring
seeks each open file to its saved offset instead of re-reading what came before.

A shard directory holds
  {split}-{index:05d}-of-{num:05d}.tfrecord   for split in train, validation (empty shards absent)
  shard_report.json                           counts and the configuration that wrote it
Records inside a shard are in input order; sequences are upper case, residue letters only.
TensorFlow is imported lazily: the names and report helpers work without it.
"""
from __future__ import annotations

import json
import os
import posixpath
from typing import Iterator, Mapping

SUFFIX = ".tfrecord"
REPORT_FILE = "shard_report.json"
FEATURES = ("id", "sequence")


def shard_name(split: str, index: int, num_shards: int) -> str:
    """`train-00003-of-00016.tfrecord`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}{SUFFIX}"


def _join(directory: str, name: str) -> str:
    return posixpath.join(directory, name) if "://" in directory else os.path.join(directory, name)


def _gfile():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.io.gfile


def is_shard_dir(path: str) -> bool:
    """True when `path` is a directory written by the shard pipeline (it has a report)."""
    if "://" in path:
        return _gfile().exists(_join(path, REPORT_FILE))
    return os.path.isfile(_join(path, REPORT_FILE))


def split_files(directory: str, split: str) -> list[str]:
    """The shard files of `split` in a shard directory, sorted."""
    pattern = _join(directory, f"{split}-*-of-*{SUFFIX}")
    if "://" in directory:
        return sorted(_gfile().glob(pattern))
    import glob  # pylint: disable=import-outside-toplevel

    return sorted(glob.glob(pattern))


def read_report(directory: str) -> dict:
    """The shard report of a shard directory."""
    path = _join(directory, REPORT_FILE)
    if "://" in path:
        with _gfile().GFile(path, "r") as fh:
            return json.load(fh)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def encode(record_id: str, sequence: str) -> bytes:
    """One serialized `tf.train.Example` record."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8")]))
               for k, v in (("id", record_id), ("sequence", sequence))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode(serialized):
    """tf.data map function: serialized Example -> {"id": tf.string, "sequence": tf.string}."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in FEATURES}
    return tf.io.parse_single_example(serialized, spec)


def read_records(files: str | list[str]) -> Iterator[tuple[str, str]]:
    """(id, sequence) of every record of the given shard files (or glob), in file order.

    For tests and tools; training reads the shards through `protlm.data.sources`.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    paths = sorted(_gfile().glob(files)) if isinstance(files, str) else list(files)
    for path in paths:
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
            ex = tf.train.Example.FromString(raw)
            f: Mapping = ex.features.feature
            yield f["id"].bytes_list.value[0].decode(), f["sequence"].bytes_list.value[0].decode()
