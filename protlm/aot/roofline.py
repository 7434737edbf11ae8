"""A roofline bound on one compiled step: compute, HBM and interconnect times at peak rates.

Nothing here is measured. The times are what the compiler's program needs at the chip's peak
FLOP/s, HBM bandwidth and ICI/DCN link bandwidths (``protlm.metrics``), so the step can be no
faster than the largest of them (perfect overlap) and is no slower than their sum under this
model (no overlap). The MFU bound is the model's FLOPs over peak x that step time. It leaves
out: imperfect overlap of collectives with compute, MXU efficiency below peak on small or
oddly shaped matmuls, the input pipeline, host overhead and DCN latency.

Collective time follows the JAX scaling book ("sharding" chapter): a ring collective whose
device group spans ``k`` torus axes moves its bytes over ``2k`` links at once; an axis without
wraparound links (shorter than a full ring) gives half the bandwidth of one with them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from protlm.aot.counts import Collective, StepCounts
from protlm.metrics import TpuSpec


@dataclasses.dataclass(frozen=True)
class Link:
    """Where a collective's bytes travel and at what per-device rate (bytes/s)."""

    network: str        # "ici" or "dcn"
    bandwidth: float
    axes: int           # torus axes the group spans (0: both devices on one chip)


def _coords(device) -> tuple[int, ...]:
    return tuple(int(c) for c in getattr(device, "coords", (0,)))


def group_link(group: Sequence[int], devices: Sequence[Any], spec: TpuSpec) -> Link:
    """The network and per-device bandwidth a collective over ``group`` uses.

    Args:
      group: device ids of one replica group (indices into ``devices``).
      devices: the mesh's devices in flat order (``mesh.devices.flat``).
      spec: the TPU generation.
    """
    members = [devices[i] for i in group]
    if len({getattr(d, "slice_index", 0) for d in members}) > 1:
        return Link("dcn", spec.dcn_bandwidth_per_chip / spec.devices_per_chip, 0)
    slice_id = getattr(members[0], "slice_index", 0)
    same_slice = [d for d in devices if getattr(d, "slice_index", 0) == slice_id]
    coords = np.asarray([_coords(d) for d in members])
    extent_all = np.asarray([_coords(d) for d in same_slice]).max(axis=0) + 1
    per_link = spec.ici_link_bandwidth / spec.devices_per_chip   # a chip's devices share links
    bandwidth, axes = 0.0, 0
    for k in range(coords.shape[1]):
        extent = len(set(coords[:, k].tolist()))
        if extent <= 1:
            continue
        axes += 1
        ring = (extent == extent_all[k] and extent_all[k] % spec.wrap_multiple == 0)
        bandwidth += (2.0 if ring else 1.0) * per_link
    if axes == 0:                 # the two TensorCores of one v2/v3 chip
        bandwidth = 2.0 * per_link
    return Link("ici", bandwidth, axes)


def collective_seconds(c: Collective, devices: Sequence[Any], spec: TpuSpec,
                       cache: dict | None = None) -> tuple[str, float]:
    """(network, seconds per step) of one collective: bytes sent / group bandwidth."""
    if c.bytes <= 0 or not c.groups:
        return "ici", 0.0
    cache = {} if cache is None else cache
    group = tuple(c.groups[0])
    if group not in cache:
        cache[group] = group_link(group, devices, spec)
    link = cache[group]
    bandwidth = link.bandwidth
    if c.kind == "collective-permute" and link.network == "ici":
        bandwidth = spec.ici_link_bandwidth / spec.devices_per_chip   # one link, one way
    return link.network, c.bytes / bandwidth


def bound(counts: StepCounts, model_flops: float, peak_flops: float, devices: Sequence[Any],
          spec: TpuSpec, top: int = 5) -> dict:
    """Roofline times and the MFU upper bound of one step, per device.

    Args:
      counts: per-device counts of the compiled step (``counts.count_step``).
      model_flops: the model's training FLOPs per device per step (no recompute).
      peak_flops: peak bf16 FLOP/s of one device.
      devices: the mesh's devices in flat order (collective groups index them).
      spec: the TPU generation's memory and interconnect figures.
      top: how many of the most expensive collectives to list.

    Returns:
      ``compute_seconds`` (the program's matmul FLOPs at peak), ``hbm_seconds``,
      ``ici_seconds``, ``dcn_seconds``, ``step_seconds_overlap`` (their max),
      ``step_seconds_no_overlap`` (their sum), ``mfu_bound`` / ``mfu_bound_no_overlap``
      and ``top_collectives`` (kind, network, bytes, seconds, op name).
    """
    compute = counts.matmul_flops / peak_flops
    hbm = counts.hbm_bytes / spec.hbm_bandwidth
    net = {"ici": 0.0, "dcn": 0.0}
    per_collective, links = [], {}
    for c in counts.collectives:
        network, seconds = collective_seconds(c, devices, spec, links)
        net[network] += seconds
        per_collective.append((seconds, network, c))
    per_collective.sort(key=lambda t: -t[0])
    times = [compute, hbm, net["ici"], net["dcn"]]
    overlap, no_overlap = max(times), sum(times)
    ideal = model_flops / peak_flops
    return {
        "compute_seconds": compute, "hbm_seconds": hbm, "ici_seconds": net["ici"],
        "dcn_seconds": net["dcn"], "step_seconds_overlap": overlap,
        "step_seconds_no_overlap": no_overlap,
        "mfu_bound": ideal / overlap if overlap > 0 else 0.0,
        "mfu_bound_no_overlap": ideal / no_overlap if no_overlap > 0 else 0.0,
        "top_collectives": [
            {"kind": c.kind, "network": network, "bytes": c.bytes, "seconds": seconds,
             "group_size": len(c.groups[0]) if c.groups else 0, "op_name": c.op_name}
            for seconds, network, c in per_collective[:top]],
    }
