"""Checks of a training run's settings and data before its first step.

Each failure is a `ConfigError` whose message names the gin macro to change and how: the run
stops before compiling, reading a checkpoint or writing anything.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

from protlm.data.splits import EmptySplitError
from protlm.errors import ConfigError


def check_train_steps(train_steps: int) -> None:
    if not isinstance(train_steps, int) or train_steps < 1:
        raise ConfigError(f"TRAIN_STEPS must be a positive number of steps, got {train_steps!r} "
                          "(it is the total a resumed run continues up to)")


def nearest_multiples(value: int, unit: int) -> tuple[int, int]:
    """The multiples of `unit` just below and above `value` (the lower one at least `unit`)."""
    below = max(unit, value // unit * unit)
    return below, (value // unit + 1) * unit


def check_batch_size(batch_size: int, mesh_shape: dict, accum_steps: int, num_processes: int) -> None:
    """The global batch must split evenly over the mesh's data-parallel devices (`data` x `fsdp`:
    the batch axis of every array), the hosts and the accumulation microbatches."""
    if batch_size < 1:
        raise ConfigError(f"BATCH_SIZE must be positive, got {batch_size}")
    if accum_steps < 1:
        raise ConfigError(f"ACCUM_STEPS must be positive, got {accum_steps}")
    parallel = int(mesh_shape.get("data", 1)) * int(mesh_shape.get("fsdp", 1))
    unit = math.lcm(parallel, accum_steps, num_processes)
    if batch_size % unit == 0:
        return
    sizes = " or ".join(str(n) for n in sorted(set(nearest_multiples(batch_size, unit))))
    parts = [f"the {parallel} data-parallel devices of mesh {dict(mesh_shape)} (data x fsdp)"]
    if accum_steps > 1:
        parts.append(f"ACCUM_STEPS={accum_steps} microbatches")
    if num_processes > 1:
        parts.append(f"{num_processes} processes")
    raise ConfigError(f"BATCH_SIZE={batch_size} does not split evenly over {' and '.join(parts)}: it must be "
                      f"a multiple of {unit}; nearest valid sizes: {sizes} (or change the mesh: "
                      "MESH_DATA / MESH_FSDP / NUM_DEVICES)")


def check_validation_split(open_validation: Callable[[], Iterator]) -> None:
    """Reads one validation batch: an empty split fails now, not at the first evaluation.

    Args:
      open_validation: opens this host's validation stream (closed again here).
    """
    it = None
    try:
        it = open_validation()      # a shard source knows its split is empty when opened
        next(it)
    except (StopIteration, EmptySplitError):
        raise ConfigError(
            "the validation split has no examples (a small corpus can put none in the 1 % id-hash "
            "held-out split); set VALIDATION_FASTA_PATTERN to a separate FASTA, use a larger corpus, or "
            "train without evaluation: EVAL_EVERY=0") from None
    finally:
        close = getattr(it, "close", None)   # None when opening failed
        if close is not None:
            close()
