"""The record rules of the corpus: id-hash split, output shard, sequence identity, duplicate winner.

One definition, used by the Beam sharding pipeline (`protlm.data.shard_pipeline`, which also
converts plain FASTA globs for the seqio tasks) and by the tests, so offline shards and the
tasks always agree. Pure Python (no TensorFlow, no Beam).

- Split: a record is in the held-out validation split when the first 8 bytes of SHA-1(id), read
  as a fraction of 2**64, are below the validation fraction (1 % by default).
- Shard: bytes 8..16 of the same digest modulo the number of shards of its split, so a record's
  shard does not depend on the input order, the number of workers or the split hash.
- Identity: two sequences are the same protein sequence when they are equal after removing
  whitespace and one trailing '*' and upper-casing (`sequence_key`, a 16-byte BLAKE2b digest).
- Duplicates: of the records sharing a sequence, the first in input order (file index, then
  record index within the file) is kept (`first_occurrence`).
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Tuple

DEFAULT_VALIDATION_FRACTION = 0.01
SPLITS = ("train", "validation")
_SCALE = float(2**64)

# (file index, record index within the file): a record's position in the input, its order key.
Position = Tuple[int, int]


class EmptySplitError(ValueError):
    """A split that has no records (e.g. the held-out split of a small corpus); says the fix."""


def _digest(record_id: str) -> bytes:
    return hashlib.sha1(record_id.encode("utf-8")).digest()


def record_hash_fraction(record_id: str) -> float:
    """Maps a record id to a number in [0, 1) that is stable across machines and Python versions.

    Uses the first 8 bytes of SHA-1 of the UTF-8 id (not Python's salted `hash`).
    """
    return int.from_bytes(_digest(record_id)[:8], "big") / _SCALE


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")


def is_validation(record_id: str, fraction: float = DEFAULT_VALIDATION_FRACTION) -> bool:
    """True when `record_id` belongs to the held-out validation split of size `fraction`."""
    _check_fraction(fraction)
    return record_hash_fraction(record_id) < fraction


def split_of(record_id: str, fraction: float = DEFAULT_VALIDATION_FRACTION) -> str:
    """"validation" or "train" for `record_id`."""
    return "validation" if is_validation(record_id, fraction) else "train"


def shard_of(record_id: str, num_shards: int) -> int:
    """Output shard of `record_id` in [0, num_shards): independent of input order and of the split hash."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return int.from_bytes(_digest(record_id)[8:16], "big") % num_shards


def normalize_sequence(sequence: str) -> str:
    """Upper case, no whitespace, no trailing '*': the form sequences are compared in."""
    return "".join(sequence.split()).upper().rstrip("*")


def sequence_key(sequence: str) -> bytes:
    """Identity key of a sequence (16-byte BLAKE2b of `normalize_sequence`)."""
    return hashlib.blake2b(normalize_sequence(sequence).encode("ascii", "replace"), digest_size=16).digest()


def first_occurrence(records: Iterable[tuple]) -> tuple:
    """The record kept among duplicates: the smallest input position (records start with one)."""
    return min(records, key=lambda r: (r[0], r[1]))
