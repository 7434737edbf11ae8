"""Deterministic train/validation split by a hash of the record id.

One rule, used by both `tools/shard_fasta.py` (offline) and the seqio tasks (on the fly, when no
separate validation FASTA is given), so the two always agree. Pure Python.
"""
from __future__ import annotations

import hashlib

DEFAULT_VALIDATION_FRACTION = 0.01
_SCALE = float(2**64)


def record_hash_fraction(record_id: str) -> float:
    """Maps a record id to a number in [0, 1) that is stable across machines and Python versions.

    Uses the first 8 bytes of SHA-1 of the UTF-8 id (not Python's salted `hash`).
    """
    digest = hashlib.sha1(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_validation(record_id: str, fraction: float = DEFAULT_VALIDATION_FRACTION) -> bool:
    """True when `record_id` belongs to the held-out validation split of size `fraction`."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    return record_hash_fraction(record_id) < fraction


def split_of(record_id: str, fraction: float = DEFAULT_VALIDATION_FRACTION) -> str:
    """"validation" or "train" for `record_id`."""
    return "validation" if is_validation(record_id, fraction) else "train"


def shard_of(record_id: str, num_shards: int) -> int:
    """Output shard of `record_id` in [0, num_shards): independent of input order and of the split hash."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    digest = hashlib.sha1(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[8:16], "big") % num_shards
