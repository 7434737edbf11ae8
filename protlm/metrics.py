"""Throughput, model FLOPs utilisation (MFU) and metric writers (console + TensorBoard).

MFU = achieved model FLOP/s per device / peak FLOP/s of that device, where model FLOPs
are the config's ``flops_per_token()`` (6 x matmul params + attention terms, forward +
backward; see PROTTRANS_FACTS section 5) times the tokens processed. Rematerialisation
is not counted (that would be hardware FLOPs utilisation).

TensorBoard events are written with tensorboardX (TensorFlow is absent on GPU machines).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Mapping, Optional

log = logging.getLogger(__name__)

# Peak dense bf16 FLOP/s per *JAX device* (vendor datasheets). TPU v2/v3 expose each
# TensorCore as a device (half a chip); v4 and v5p "megacore" chips are one device.
# Matched as a case-insensitive substring of ``jax.Device.device_kind``, longest first.
PEAK_BF16_FLOPS_PER_DEVICE: dict[str, float] = {
    "tpu v2": 45e12 / 2,
    "tpu v3": 123e12 / 2,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,
    "tpu v6e": 918e12,
    "tpu7x": 2307e12,
    "h100 pcie": 756e12,
    "h100 nvl": 835e12,
    "h100": 989e12,
    "h200": 989e12,
    "gh200": 989e12,
    "h800": 989e12,
    "b200": 2250e12,
    "a100": 312e12,
    "a800": 312e12,
    "l40s": 362e12,
    "a10g": 70e12,
    "l4": 121e12,
    "v100": 125e12,
    "t4": 65e12,
}


def _lookup(table: Mapping[str, Any], device_kind: str):
    """The table entry whose key is the longest case-insensitive substring of the kind."""
    kind = device_kind.lower()
    for key in sorted(table, key=len, reverse=True):
        if key in kind:
            return table[key]
    return None


def peak_flops_per_device(device_kind: str) -> Optional[float]:
    """Peak dense bf16 FLOP/s of one device of this kind, or None when unknown (e.g. CPU).

    Args:
      device_kind: ``jax.devices()[0].device_kind``, e.g. "TPU v4", "NVIDIA H100 80GB HBM3".
    """
    return _lookup(PEAK_BF16_FLOPS_PER_DEVICE, device_kind)


@dataclasses.dataclass(frozen=True)
class TpuSpec:
    """Memory and interconnect of one TPU generation, per JAX device unless named per chip.

    Attributes:
      generation: "v3", "v4", "v5e", "v5p", "v6e".
      devices_per_chip: JAX devices per chip (v2/v3: each of the 2 TensorCores, with its own
        half of the HBM; v4/v5p megacore and v5e/v6e: 1).
      hbm_bytes: HBM capacity of one device.
      hbm_usable_bytes: what XLA may allocate of it (libtpu 0.0.42's out-of-memory message
        "exceeds available HBM (15.48G)" on v3, 30.75G v4, 15.75G v5e, 95.74G v5p, 31.25G v6e).
      hbm_bandwidth: HBM bytes/s of one device.
      ici_link_bandwidth: one-way bytes/s of one ICI link (a chip's links are shared by its
        devices).
      torus_dims: 2 (4 links per chip) or 3 (6 links per chip).
      wrap_multiple: an ICI axis is a ring (wraparound links) when its length is a multiple of
        this (v4/v5p: 4; v5e/v6e: only the full 16; v3: only the full pod side, 32).
      dcn_bandwidth_per_chip: data-centre network bytes/s per chip (multi-slice).
    """

    generation: str
    devices_per_chip: int
    hbm_bytes: float
    hbm_usable_bytes: float
    hbm_bandwidth: float
    ici_link_bandwidth: float
    torus_dims: int
    wrap_multiple: int
    dcn_bandwidth_per_chip: float


GiB = 2 ** 30
# Sources: Cloud TPU system-architecture pages (docs.cloud.google.com/tpu/docs/v3, /v4, /v5e,
# /v5p, /v6e: HBM capacity and bandwidth per chip; v5e/v5p/v6e: bidirectional ICI per chip,
# DCN per chip or per host) and the JAX scaling book (jax-ml.github.io/scaling-book/tpus:
# one-way ICI bandwidth per link, DCN ~2.5e10 B/s per host where Google gives no figure).
# v3: 32 GiB, 900 GB/s per chip = 2 cores; ICI 1e11 B/s per link (scaling book).
# v4: 32 GiB, 1200 GB/s; ICI 4.5e10 B/s per link, 6 links (scaling book); DCN 2.5e10 / 4 chips.
# v5e: 16 GB (16 GiB: XLA may use 15.75 GiB of it), 819 GB/s; 400 GB/s bidirectional ICI over 4 ports = 5e10 per link one way;
#   DCN 2 x 100 Gbps NIC per 8-chip host.
# v5p: 95 GiB (XLA may use 95.74 GiB), 2765 GB/s; 1200 GB/s bidirectional ICI over 6 ports = 1e11 one way; DCN 50 Gbps.
# v6e: 32 GB (32 GiB: XLA may use 31.25 GiB), 1638 GB/s; 800 GB/s bidirectional ICI over 4 ports = 1e11 one way; DCN as v5e
#   per chip (scaling book: 2.5e10 per host of 8).
TPU_SPECS: dict[str, TpuSpec] = {
    "tpu v3": TpuSpec("v3", 2, 16 * GiB, 15.48 * GiB, 900e9 / 2, 1e11, 2, 32, 2.5e10 / 4),
    "tpu v4": TpuSpec("v4", 1, 32 * GiB, 30.75 * GiB, 1200e9, 4.5e10, 3, 4, 2.5e10 / 4),
    "tpu v5 lite": TpuSpec("v5e", 1, 16 * GiB, 15.75 * GiB, 819e9, 5e10, 2, 16, 200e9 / 8 / 8),
    "tpu v5e": TpuSpec("v5e", 1, 16 * GiB, 15.75 * GiB, 819e9, 5e10, 2, 16, 200e9 / 8 / 8),
    "tpu v5p": TpuSpec("v5p", 1, 95 * GiB, 95.74 * GiB, 2765e9, 1e11, 3, 4, 50e9 / 8),
    "tpu v5": TpuSpec("v5p", 1, 95 * GiB, 95.74 * GiB, 2765e9, 1e11, 3, 4, 50e9 / 8),
    "tpu v6 lite": TpuSpec("v6e", 1, 32 * GiB, 31.25 * GiB, 1638e9, 1e11, 2, 16, 2.5e10 / 8),
    "tpu v6e": TpuSpec("v6e", 1, 32 * GiB, 31.25 * GiB, 1638e9, 1e11, 2, 16, 2.5e10 / 8),
}


def tpu_spec(device_kind: str) -> Optional[TpuSpec]:
    """Memory / interconnect figures of a TPU device kind ("TPU v4", "TPU v5 lite"), or None."""
    return _lookup(TPU_SPECS, device_kind)


def throughput(tokens_per_step: float, flops_per_token: float, step_seconds: float,
               num_devices: int, peak_flops: Optional[float]) -> dict[str, float]:
    """Per-step throughput numbers.

    Args:
      tokens_per_step: tokens the model processed in one optimizer step (global batch).
      flops_per_token: model FLOPs per token for forward + backward.
      step_seconds: wall time of one step.
      num_devices: devices sharing the step.
      peak_flops: peak FLOP/s per device (None: MFU is NaN).

    Returns:
      tokens_per_second, tokens_per_second_per_device, tflops_per_device (achieved model
      TFLOP/s per device) and mfu (fraction of peak, NaN when the peak is unknown).
    """
    if step_seconds <= 0 or num_devices <= 0:
        raise ValueError(f"throughput: step_seconds ({step_seconds}) and num_devices "
                         f"({num_devices}) must be positive")
    tokens_per_second = tokens_per_step / step_seconds
    flops_per_device = tokens_per_second * flops_per_token / num_devices
    mfu = flops_per_device / peak_flops if peak_flops else math.nan
    return {"tokens_per_second": tokens_per_second,
            "tokens_per_second_per_device": tokens_per_second / num_devices,
            "tflops_per_device": flops_per_device / 1e12,
            "mfu": mfu}


def format_seconds(seconds: float) -> str:
    """``3725 -> '1h02m05s'`` for ETAs."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class MetricWriter:
    """Writes scalars to TensorBoard event files and JSON lines (the trainer prints its own line).

    Only process 0 writes. Events go to ``MODEL_DIR/tensorboard/<name>`` for each
    ``name`` used (``train``, ``eval``); the same scalars are appended as JSON lines to
    ``MODEL_DIR/metrics/<name>.jsonl`` for scripts and plots.
    """

    def __init__(self, model_dir: str | os.PathLike, enabled: bool = True):
        self._root = os.path.join(os.fspath(model_dir), "tensorboard")
        self._enabled = enabled
        self._writers = {}

    @property
    def logdir(self) -> str:
        return self._root

    def _writer(self, name: str):
        if name not in self._writers:
            from tensorboardX import SummaryWriter
            self._writers[name] = SummaryWriter(logdir=os.path.join(self._root, name),
                                                flush_secs=30)
        return self._writers[name]

    def write(self, name: str, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` at ``step`` under ``name`` (TensorBoard + JSON lines; a debug log line)."""
        if not self._enabled:
            return
        parts = []
        jsonl = os.path.join(os.path.dirname(self._root), "metrics", f"{name}.jsonl")
        os.makedirs(os.path.dirname(jsonl), exist_ok=True)
        with open(jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
                    + "\n")
        for key, value in scalars.items():
            value = float(value)
            if math.isfinite(value):
                self._writer(name).add_scalar(key, value, step)
            parts.append(f"{key}={value:.4g}")
        log.debug("[%s] step %d: %s", name, step, " ".join(parts))

    def text(self, name: str, step: int, tag: str, text: str) -> None:
        """Log a text blob (e.g. the gin config) to TensorBoard."""
        if self._enabled:
            self._writer(name).add_text(tag, text, step)

    def flush(self) -> None:
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers = {}


class StepTimer:
    """Wall time per step over a logging window, and the ETA to the last step."""

    def __init__(self, start_step: int, total_steps: int):
        self.total_steps = total_steps
        self._t0 = time.perf_counter()
        self._step0 = start_step

    def lap(self, step: int) -> tuple[float, float]:
        """(seconds per step since the previous lap, ETA seconds); resets the window."""
        now = time.perf_counter()
        steps = max(1, step - self._step0)
        per_step = (now - self._t0) / steps
        self._t0, self._step0 = now, step
        return per_step, per_step * max(0, self.total_steps - step)
