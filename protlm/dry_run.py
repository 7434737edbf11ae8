"""Dry run: lower and compile the full-size train step for a mesh without allocating weights.

`python -m protlm.train --dry_run` reports per-device memory of the params and optimizer state
(from their shardings) and XLA's memory analysis of the compiled step. On a mesh of TPU devices
(`--topology`, `protlm.aot.topology`) the TPU compiler runs instead and the report adds the
HBM verdict and the roofline bound (`protlm.aot.report`); on GPU devices (attached, or a
`--topology=h100:N` host compiled by XLA:GPU without the GPUs) it adds the memory verdict.
"""
from __future__ import annotations

import logging
import time
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from protlm import partitioning, train_state, train_step
from protlm.aot import report as aot_report

log = logging.getLogger(__name__)


def bytes_per_device(abstract_tree) -> int:
    """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(abstract_tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * jnp.dtype(leaf.dtype).itemsize
    return total


def dry_run(model, tx, schedule, batch_shapes: Mapping, mesh, rules, flops_per_step: float,
            accum_steps: int = 1, prng_impl: str = "threefry2x32") -> dict:
    """Lower and compile the train step for abstract inputs; no weights are allocated.

    `flops_per_step` is the model's FLOPs for the whole batch (the trainer's throughput basis:
    the family's count, or a fine-tuning wrapper's own), the numerator of the TPU MFU bound.

    Returns:
      A report: parameter count, per-device bytes of params and optimizer state (from
      their shardings) and XLA's per-device memory analysis of the compiled step; for TPU
      meshes the fields of `protlm.aot.report.tpu_report` instead of the latter, for GPU
      meshes those of `protlm.aot.report.gpu_report`.
    """
    abstract, shardings = train_state.state_shardings(model, tx, batch_shapes, mesh, rules)
    bsh = train_step.batch_sharding(mesh)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh)
                      for k, v in batch_shapes.items()}
    key = jax.eval_shape(lambda: jax.random.key(0, impl=prng_impl))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=partitioning.replicated(mesh))
    fn = train_step.compile_train_step(model, tx, schedule, shardings, mesh, rules, accum_steps)
    t0 = time.perf_counter()
    with partitioning.activate(mesh, rules):
        lowered = fn.lower(abstract, abstract_batch, key)
    t1 = time.perf_counter()
    report = {
        "mesh": dict(mesh.shape), "devices": int(mesh.size),
        "num_params": int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(abstract.params))),
        "params_bytes_per_device": bytes_per_device(abstract.params),
        "opt_state_bytes_per_device": bytes_per_device(abstract.opt_state),
        "lower_seconds": t1 - t0, "accum_steps": accum_steps,
        "batch_shapes": {k: list(v.shape) for k, v in batch_shapes.items()},
        "remat_policy": getattr(model.config, "remat_policy", None),
        "scan_layers": getattr(model.config, "scan_layers", None),
    }
    if aot_report.is_tpu_mesh(mesh):   # the TPU compiler: HBM verdict and roofline bound
        return aot_report.tpu_report(lowered, mesh, flops_per_step, report)
    if aot_report.is_gpu_mesh(mesh):   # XLA:GPU: memory against the GPU allocator's share
        return aot_report.gpu_report(lowered, mesh, flops_per_step, report)
    compiled = lowered.compile()
    report["compile_seconds"] = time.perf_counter() - t1
    mem = compiled.memory_analysis()
    if mem is not None:
        for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                     "alias_size_in_bytes", "generated_code_size_in_bytes"):
            if hasattr(mem, name):
                report["compiled_" + name] = int(getattr(mem, name))
    gib = 2 ** 30
    log.info("dry run on mesh %s: %.3g B params; per device: params %.3f GiB, optimizer state "
             "%.3f GiB, XLA temp %.3f GiB; lower %.1fs, compile %.1fs", report["mesh"],
             report["num_params"] / 1e9, report["params_bytes_per_device"] / gib,
             report["opt_state_bytes_per_device"] / gib,
             report.get("compiled_temp_size_in_bytes", 0) / gib, t1 - t0,
             report["compile_seconds"])
    return report
