"""The accelerator dry-run report: compile for a TPU slice or GPUs, memory per device, bounds.

``tpu_report(lowered, mesh, model_flops_per_step, base)`` compiles a lowered train step whose
mesh holds topology devices (``protlm.aot.topology``) and returns the base dry-run report
extended with ``memory`` (per device: params, optimizer state, XLA temp, total vs HBM, fits),
``counts`` (matmul FLOPs with scanned loops multiplied out, HBM bytes, collective bytes by
kind) and ``roofline`` (``protlm.aot.roofline.bound``). XLA's ``optimal_seconds`` is not used:
libtpu 0.0.42 reports it negative for whole train steps.

``gpu_report`` does the same for GPU devices (real, or XLA:GPU's compile-only devices of a
``--topology=h100:N`` dry run): ``memory`` against what JAX's GPU allocator may use, no
roofline (this package has no model of NVLink / InfiniBand collectives).
"""
from __future__ import annotations

import logging
import os
import re
import time

from protlm import metrics
from protlm.aot import counts as counts_lib
from protlm.aot import hlo, roofline, topology

log = logging.getLogger(__name__)
GiB = 2 ** 30
_SIZE = r"([\d.]+)\s*([KMGT]?)(?:i?B)?"
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def is_tpu_mesh(mesh) -> bool:
    """True when the mesh's devices are TPU devices (real or from a topology description)."""
    return getattr(mesh.devices.flat[0], "platform", "") == "tpu"


def is_gpu_mesh(mesh) -> bool:
    """True when the mesh's devices are GPU devices (real or from a topology description)."""
    return getattr(mesh.devices.flat[0], "platform", "") == "gpu"


# JAX's GPU allocator reserves this share of device memory unless XLA_PYTHON_CLIENT_MEM_FRACTION
# says otherwise (JAX's "GPU memory allocation" page); the XLA programs must fit in it.
DEFAULT_GPU_MEM_FRACTION = 0.75


def gpu_memory(device) -> tuple[float | None, float | None]:
    """(device memory, what JAX may allocate of it) in bytes of one GPU; None where unknown.

    A real GPU reports its allocator limit (``memory_stats()['bytes_limit']``); a compile-only
    device has the target config's memory and ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default 0.75)
    of it.
    """
    try:
        stats = device.memory_stats() or {}
    except Exception:  # pylint: disable=broad-except  # compile-only devices have no allocator
        stats = {}
    capacity = topology.gpu_memory_bytes(device.device_kind)
    if stats.get("bytes_limit"):
        return float(capacity or stats["bytes_limit"]), float(stats["bytes_limit"])
    if capacity is None:
        return None, None
    fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_GPU_MEM_FRACTION))
    return float(capacity), capacity * fraction


def _bytes(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_oom(message: str) -> dict:
    """Sizes in the TPU compiler's out-of-memory error, e.g. ``the total memory required for
    HLO temporaries (317.18G) exceeds available HBM (15.75G)`` or ``Used 20.5G of 15.5G hbm``.

    Returns ``required_bytes`` / ``available_bytes`` where found (possibly empty).
    """
    out = {}
    m = re.search(r"required[^(]*\(" + _SIZE + r"\)[^(]*available HBM\s*\(" + _SIZE + r"\)",
                  message)
    if m:
        out = {"required_bytes": _bytes(m.group(1), m.group(2)),
               "available_bytes": _bytes(m.group(3), m.group(4))}
    m = m or re.search(r"Used\s+" + _SIZE + r"\s+of\s+" + _SIZE + r"\s+hbm", message)
    if m and not out:
        out = {"required_bytes": _bytes(m.group(1), m.group(2)),
               "available_bytes": _bytes(m.group(3), m.group(4))}
    return out


def _memory(compiled, base: dict, capacity: float | None, usable: float | None) -> dict:
    mem = compiled.memory_analysis()
    fields = {name: int(getattr(mem, name + "_size_in_bytes", 0) or 0)
              for name in ("argument", "output", "alias", "temp", "generated_code")}
    # Donated state: outputs alias arguments, so they are only counted once.
    total = fields["argument"] + fields["output"] - fields["alias"] + fields["temp"]
    return {"params_bytes": base["params_bytes_per_device"],
            "opt_state_bytes": base["opt_state_bytes_per_device"],
            **{f"{k}_bytes": v for k, v in fields.items()},
            "total_bytes": total, "hbm_bytes": capacity, "hbm_usable_bytes": usable,
            "fits": None if usable is None else total <= usable}


def tpu_report(lowered, mesh, model_flops_per_step: float, base: dict) -> dict:
    """Compile ``lowered`` with the TPU compiler and analyse it (see the module docstring).

    Args:
      lowered: ``jax.jit(train_step).lower(...)`` on a mesh of TPU (topology) devices.
      mesh: that mesh.
      model_flops_per_step: the model's training FLOPs of one global batch (no recompute).
      base: the dry run's report so far (``params_bytes_per_device``,
        ``opt_state_bytes_per_device``, ...); it is copied, not changed.

    Returns:
      ``base`` plus ``compile_seconds``, ``device_kind``, ``memory``, ``counts`` and
      ``roofline`` (absent when the program does not fit: the compiler stops at the
      out-of-memory error; ``memory`` then holds its sizes and ``oom_message``).
    """
    devices = list(mesh.devices.flat)
    kind = devices[0].device_kind
    spec = metrics.tpu_spec(kind)
    peak = metrics.peak_flops_per_device(kind)
    if spec is None or peak is None:
        raise ValueError(f"no TPU figures for device kind {kind!r} in protlm.metrics")
    report = dict(base, platform="tpu", device_kind=kind, peak_flops_per_device=peak)
    t0 = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # pylint: disable=broad-except
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        message = str(e).split("\n")[0]
        sizes = parse_oom(message)
        report["compile_seconds"] = time.perf_counter() - t0
        report["memory"] = {"params_bytes": base["params_bytes_per_device"],
                            "opt_state_bytes": base["opt_state_bytes_per_device"],
                            "total_bytes": sizes.get("required_bytes"),
                            "hbm_bytes": spec.hbm_bytes,
                            "hbm_usable_bytes": sizes.get("available_bytes",
                                                          spec.hbm_usable_bytes),
                            "fits": False, "oom_message": message}
        return report
    report["compile_seconds"] = time.perf_counter() - t0
    report["memory"] = _memory(compiled, base, spec.hbm_bytes, spec.hbm_usable_bytes)
    module = hlo.parse_module(compiled.as_text())
    step = counts_lib.count_step(module, len(devices))
    model_flops = model_flops_per_step / len(devices)
    xla_cost = compiled.cost_analysis()
    xla_cost = xla_cost[0] if isinstance(xla_cost, (list, tuple)) else (xla_cost or {})
    report["counts"] = {
        "model_flops": model_flops, "matmul_flops": step.matmul_flops,
        "recompute_ratio": step.matmul_flops / model_flops if model_flops else 0.0,
        "hbm_bytes": step.hbm_bytes, "collective_bytes": step.collective_bytes(),
        # XLA's own counts, for reference: loop bodies once, elementwise FLOPs included.
        "xla_cost_analysis_flops": float(xla_cost.get("flops", 0.0)),
        "xla_cost_analysis_bytes": float(xla_cost.get("bytes accessed", 0.0)),
        "unknown_loops": list(step.unknown_loops),
    }
    if step.unknown_loops:
        log.warning("trip count unknown for %s: counted once", step.unknown_loops)
    report["roofline"] = roofline.bound(step, model_flops, peak, devices, spec)
    return report


def gpu_report(lowered, mesh, model_flops_per_step: float, base: dict) -> dict:
    """Compile ``lowered`` with XLA:GPU; ``base`` plus ``compile_seconds``, ``device_kind``,
    ``memory`` (as ``tpu_report``'s, against ``gpu_memory``) and ``model_flops`` per device."""
    devices = list(mesh.devices.flat)
    kind = devices[0].device_kind
    report = dict(base, platform="gpu", device_kind=kind,
                  peak_flops_per_device=metrics.peak_flops_per_device(kind))
    t0 = time.perf_counter()
    compiled = lowered.compile()
    report["compile_seconds"] = time.perf_counter() - t0
    report["memory"] = _memory(compiled, base, *gpu_memory(devices[0]))
    report["counts"] = {"model_flops": model_flops_per_step / len(devices)}
    return report


def _gib(x) -> str:
    return "?" if x is None else f"{x / GiB:.2f} GiB"


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def format_report(report: dict) -> str:
    """Human-readable lines of an accelerator dry-run report, ending with the verdict line."""
    mem = report["memory"]
    batch = next(iter(report["batch_shapes"].values()), [0])[0]
    where = (f"GPU dry run: {report.get('topology') or 'the attached GPUs'}"
             if report.get("platform") == "gpu" else
             f"TPU dry run: {report.get('topology', '?')} x{report.get('num_slices', 1)} slice(s)")
    lines = [f"{where}, "
             f"{report['devices']} x {report['device_kind']}, mesh {report['mesh']}, rules "
             f"{report.get('rules', '?')}, remat {report['remat_policy']}, accum_steps "
             f"{report['accum_steps']}, batch {batch}, {report['num_params'] / 1e9:.3f} B "
             f"params, compiled in {report['compile_seconds']:.0f} s",
             f"per device: params {_gib(mem['params_bytes'])}, optimizer state "
             f"{_gib(mem['opt_state_bytes'])}, XLA temp {_gib(mem.get('temp_bytes'))}, "
             f"total {_gib(mem['total_bytes'])} of {_gib(mem['hbm_bytes'])} HBM "
             f"({_gib(mem['hbm_usable_bytes'])} usable by XLA)"]
    if report.get("platform") == "gpu":
        lines.append(f"per device per step: model {report['counts']['model_flops'] / 1e12:.2f} "
                     "TFLOP (no roofline bound for GPUs)")
    if "roofline" in report:
        c, r = report["counts"], report["roofline"]
        coll = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in c["collective_bytes"].items() if v)
        lines += [
            f"per device per step: model {c['model_flops'] / 1e12:.2f} TFLOP, compiled matmuls "
            f"{c['matmul_flops'] / 1e12:.2f} TFLOP (x{c['recompute_ratio']:.2f}: remat recompute"
            f" + masked attention), HBM {c['hbm_bytes'] / GiB:.1f} GiB, collectives: "
            f"{coll or 'none'}",
            f"roofline (a bound from the compiler's program, not a measurement): compute "
            f"{_time(r['compute_seconds'])}, HBM {_time(r['hbm_seconds'])}, ICI "
            f"{_time(r['ici_seconds'])}, DCN {_time(r['dcn_seconds'])} -> MFU <= "
            f"{r['mfu_bound']:.1%} (no overlap: {r['mfu_bound_no_overlap']:.1%})"]
        for t in r["top_collectives"][:3]:
            if t["seconds"] > 0:
                lines.append(f"  {t['kind']} over {t['group_size']} ({t['network']}): "
                             f"{t['bytes'] / 2**20:.0f} MiB, {_time(t['seconds'])}  "
                             f"{t['op_name'][-90:]}")
    if mem["fits"] is None:
        lines.append(f"NO VERDICT: the memory of a {report['device_kind']} is unknown")
    elif mem["fits"]:
        lines.append(f"FITS: {_gib(mem['total_bytes'])} of {_gib(mem['hbm_usable_bytes'])} "
                     "usable HBM per device")
    else:
        why = mem.get("oom_message") or (f"needs {_gib(mem['total_bytes'])} per device, XLA "
                                         f"may use {_gib(mem['hbm_usable_bytes'])}")
        lines.append(f"DOES NOT FIT: {why}")
    return "\n".join(lines)
